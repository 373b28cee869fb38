"""Notebooks run top to bottom on a lake the demo wrote (they read, they define no job logic).

The demo pipeline (ingest, mine, windows, train, score) runs once for the module and every
notebook reads its lake; ``logcrnn evaluate`` runs once for the model report.  Each notebook
executes in its own kernel (and, for those that read tables, its own Spark driver).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from logcrnn import demo, evaluate
from logcrnn.config import Config
from logcrnn.lake import Lake
from logcrnn.model.artifact import current_artifact, read_meta

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
CONF = str(REPO / "conf" / "local.yaml")
BGL_2K = SAMPLE / "loghub_2k" / "BGL" / "BGL_2k.log.gz"
#: the night the demo scores (it trains on the night before)
NIGHT = "2008-11-09"


@pytest.fixture(scope="module")
def demo_result(
    spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The demo's result and lake (bronze to gold.anomalies, and the BGL model), built once.

    ``demo.run`` opens its session with ``spark_session``, which gets the suite's session
    and leaves it running because it was active before.
    """
    root = str(tmp_path_factory.mktemp("demo") / "lake")
    conf = dataclasses.replace(cfg, lake=dataclasses.replace(cfg.lake, root=root))
    result = demo.run(conf, SAMPLE, NIGHT)
    assert not spark.sparkContext._jsc.sc().isStopped()  # the suite's session lives on
    return result


@pytest.fixture(scope="module")
def demo_lake(demo_result: dict[str, Any]) -> str:
    return str(demo_result["lake"])


@pytest.mark.slow
def test_demo_summary_lists_each_flagged_line_once(
    spark: SparkSession, demo_result: dict[str, Any]
) -> None:
    top = demo_result["top_anomalies"]
    anomalies = Lake(spark, demo_result["lake"]).read("gold.anomalies", NIGHT).where("is_anomaly")
    assert top and len(top) <= min(demo.TOP, anomalies.count())
    firsts = [(a["source"], a["first_file"], a["first_line"]) for a in top]
    assert len(set(firsts)) == len(firsts)  # overlapping windows folded into one row
    assert [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)
    a = top[0]
    flagged = anomalies.where(
        (F.col("first_file") == a["first_file"]) & (F.col("first_line") == a["first_line"])
    )
    assert a["windows"] == flagged.count() and a["score"] == flagged.agg(F.max("score")).first()[0]
    text = demo.format_summary(demo_result)
    assert f"{Path(a['first_file']).name}:{a['first_line']}" in text
    assert [r["source"] for r in demo_result["sources"]] == list(demo.DEMO_INPUTS)


@pytest.fixture(scope="module")
def eval_dir(
    spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, evaluate.EvalReport]:
    """``logcrnn evaluate --source bgl --window sliding:20:5 --protocol chrono --models lr,pca
    --out DIR`` on the bundled BGL 2k, in process."""
    out = tmp_path_factory.mktemp("evaluate") / "report"
    spec = evaluate.EvalSpec(
        source="bgl",
        log=BGL_2K,
        protocol="chrono",
        window="sliding:20:5",
        models=("lr", "pca"),
        out=out,
    )
    return out, evaluate.run(spark, cfg, spec)


def _run(name: str, cwd: Path, **params: Any) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` with its parameters cell replaced by ``params``."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "".join(f"{key} = {value!r}\n" for key, value in params.items())
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, errors
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in _outputs(nb)
    )


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


@pytest.mark.slow
def test_explore_bronze_notebook_runs(spark: SparkSession, demo_lake: str, tmp_path: Path) -> None:
    nb = _run("01_explore_bronze.ipynb", tmp_path, LAKE=demo_lake, NIGHT=NIGHT, CONF=CONF)
    per_source = (
        Lake(spark, demo_lake)
        .read("bronze.raw_lines", NIGHT)
        .groupBy("source")
        .agg(F.count(F.lit(1)).alias("lines"), F.sum(F.col("parse_ok").cast("int")).alias("ok"))
        .collect()
    )
    assert {r.source for r in per_source} == {"hdfs", "bgl"}
    text = _text(nb)
    for r in per_source:  # the per-source table shows every line of the night
        assert re.search(rf"\b{r.source}\s+{r.lines}\s+{r.ok}\s", text), r


@pytest.mark.slow
def test_review_anomalies_notebook_shows_the_night(
    spark: SparkSession, demo_lake: str, tmp_path: Path
) -> None:
    nb = _run(
        "02_review_anomalies.ipynb", tmp_path, LAKE=demo_lake, NIGHT=NIGHT, SOURCE="bgl", CONF=CONF
    )
    lake = Lake(spark, demo_lake)
    scored = lake.read("gold.anomalies", NIGHT, "bgl")
    flagged = scored.where("is_anomaly")
    total, anomalous = scored.count(), flagged.count()
    assert 0 < anomalous < total
    top = flagged.orderBy(F.desc("score"), "window_id").first()
    first_line = (
        lake.read("bronze.raw_lines", NIGHT, "bgl")
        .where((F.col("file") == top.first_file) & (F.col("line_no") == top.first_line))
        .first()
    )
    text = _text(nb)
    assert f"bgl {NIGHT}: {anomalous} anomalous windows of {total} scored" in text
    assert f"window {top.window_id} " in text
    assert top.top_templates[0].template in text
    assert f"{top.first_line:>7}  {first_line.line}" in text  # the top anomaly's raw lines
    assert _images(nb) == 3  # timeline, keys and nodes, templates


@pytest.mark.slow
def test_model_report_notebook_shows_the_current_model_and_evaluation(
    demo_lake: str, eval_dir: tuple[Path, evaluate.EvalReport], tmp_path: Path
) -> None:
    out, report = eval_dir
    nb = _run(
        "03_model_report.ipynb", tmp_path, LAKE=demo_lake, SOURCE="bgl", CONF=CONF,
        EVAL_DIR=str(out),
    )  # fmt: skip
    meta = read_meta(current_artifact(demo_lake, "bgl"))
    text = _text(nb)
    assert f"bgl: model {meta.version}, threshold {meta.threshold:.4f}" in text
    for feature in meta.feature_names:
        assert feature in text
    for table, version in meta.data_versions.items():
        assert re.search(rf"{re.escape(table)}\s+{version}\b", text)
    assert f"test {report.test} windows ({report.test_anomalies} anomalous)" in text
    plain = [str(o.get("data", {}).get("text/plain", "")) for o in _outputs(nb)]
    table = next(t for t in plain if "roc_auc" in t and "train_s" in t)
    rows = table.split("\n\n")[0]  # a wide frame's repr wraps: its first block names the rows
    ranked = [r.model for r in sorted(report.results, key=lambda r: -r.f1)]
    assert re.findall(r"^\d+\s+(\w+)\s", rows, re.M) == ranked  # best F1 first
    assert _images(nb) == 3  # the loss curves, ROC, PR


@pytest.mark.slow
def test_model_report_notebook_skips_the_evaluation_without_eval_dir(
    demo_lake: str, tmp_path: Path
) -> None:
    nb = _run(
        "03_model_report.ipynb", tmp_path, LAKE=demo_lake, SOURCE="bgl", CONF=CONF, EVAL_DIR=None
    )
    text = _text(nb)
    assert f"model {current_artifact(demo_lake, 'bgl').name}," in text
    assert "EVAL_DIR is None: no evaluation report" in text
    assert _images(nb) == 1  # the loss curves only
