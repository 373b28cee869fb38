"""Benchmarks ``bench score`` and ``bench nightly`` at small sizes: what they measure is what
they claim (the same windows on both sides, every row scored, every stage of the night)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from logcrnn import bench, score
from logcrnn.cli import main
from logcrnn.config import Config, load_config
from logcrnn.model.crnn import CRNN

REPO = Path(__file__).resolve().parents[1]
HDFS = REPO / "data" / "sample" / "hdfs"


def test_synthetic_windows_are_shaped_like_gold_windows() -> None:
    ids = list(bench.score_vocabulary("hdfs", 5))
    table = bench.synth_windows(400, seq_len=8, n_features=3, template_ids=ids, seed=1)
    assert table.column_names == list(score.INPUT_COLUMNS) and table.num_rows == 400
    pdf = table.to_pandas()
    lengths = pdf["length"].to_numpy()
    assert lengths.min() >= 2 and 15 <= np.median(lengths) <= 23 and (lengths > 8).any()
    for row in pdf.itertuples():
        kept = min(row.length, 8)
        seq = np.asarray(row.sequence)
        assert len(seq) == 8 and (seq[kept:] == 0).all() and (seq[:kept] >= 2).all()
        # the sequence holds the vocabulary indices of the window's template ids, in order
        assert [ids[i - 2] for i in seq[:kept]] == list(row.template_ids)
        assert len(row.features_std) == 3 and len(row.semantic) == 16
    assert pdf["window_id"].is_unique and pdf["label"].isna().all()
    again = bench.synth_windows(400, seq_len=8, n_features=3, template_ids=ids, seed=1)
    assert again.equals(table)


def test_plain_inference_scores_what_the_scoring_udf_scores(cfg: Config, tmp_path: Path) -> None:
    texts = bench.score_vocabulary("hdfs", 6)
    table = bench.synth_windows(300, cfg.features.seq_len, 26, list(texts), seed=2)
    pq.write_table(table, tmp_path / "part-0.parquet")
    # a vocabulary two templates short: their windows must score as "unknown" on both sides
    model = bench.bench_model(cfg, vocab_size=len(texts), seed=3)
    pick = (0, 3, 5, 7, 11, 13, 17, 19, 20, 21, 22, 25)
    scorer = score.Scorer(model.to_bytes(), "v-plain", 0.5, pick, texts, batch_size=64)
    expected = score.score_frame(table.to_pandas(), scorer)["score"].to_numpy()
    seq, length, feats, sem = bench.plain_arrays(tmp_path, model.config.vocab_size, pick)
    assert seq.shape == (300, cfg.features.seq_len) and feats.shape == (300, 12)
    assert sem.shape == (300, cfg.features.word2vec_size)
    got = bench.plain_scores(CRNN.from_bytes(scorer.model_blob), seq, length, feats, sem, 100)
    assert got == pytest.approx(expected, abs=1e-6)


def test_the_config_handed_to_child_processes_reads_back_equal(cfg: Config, tmp_path: Path) -> None:
    path = bench.write_config(cfg, tmp_path / "c.yaml")
    back = load_config(path)
    assert dataclasses.replace(back, path=cfg.path) == cfg


@pytest.mark.slow
def test_bench_score_scores_every_window_on_both_paths(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["bench", "score", "--windows", "3000", "--files", "3", "--workdir", str(tmp_path),
            "--lake", str(tmp_path / "lake"), "--threads", "2,1", "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result["windows"] == 3000 and result["rows_scored"] == [3000]
    assert [p["threads"] for p in result["plain"]] == [1, 2]
    assert all(p["windows_per_s"] > 0 and len(p["seconds"]) == 1 for p in result["plain"])
    assert result["udf_windows_per_s"] > 0 and result["ratio_udf_to_plain"] > 0
    # the same windows through the same model: the score sums agree
    assert result["score_sum_udf"] == pytest.approx(result["score_sum_plain"], rel=1e-6)
    assert 0 < result["broadcast_bytes"] < 2_000_000
    # the synthetic windows stay in the workdir for the next run
    assert len(list(tmp_path.glob("score-windows-*/part-*.parquet"))) == 3
    assert "windows/s" in bench.format_score(result)


@pytest.mark.slow
def test_bench_nightly_runs_every_stage_and_scores_every_window(
    cfg: Config, tmp_path: Path
) -> None:
    result = bench.bench_nightly(
        cfg,
        source="hdfs",
        sample=HDFS / "HDFS_20000.log.gz",
        labels=HDFS / "HDFS_20000.anomaly_label.csv",
        lines=30_000,
        files=2,
        repeat=1,
        workdir=tmp_path,
        train_lines=40_000,
        epochs=1,
    )
    stages = [(s["stage"], s["night"]) for s in result["stages"]]
    night = bench.NIGHTLY_NIGHT
    assert stages == [("ingest", night), ("mine", night), ("windows", night), ("score", night)]
    assert all(s["seconds"] > 0 for s in result["stages"])
    assert result["stages"][0]["detail"].startswith("30,000 lines")
    assert result["windows_rows"] > 1000
    assert result["anomalies_rows"] == result["windows_rows"]
    assert result["night_seconds"] >= sum(s["seconds"] for s in result["stages"])
    assert result["total_seconds"] == pytest.approx(
        result["session_seconds"] + result["night_seconds"], abs=0.11
    )
    mem = result["memory_mb"]
    assert mem["driver_getrusage_self"] > 50 and mem["jvm_peak_rss"] > 100
    assert mem["samples"] > 0
    assert 0 < mem["python_workers_peak_pss"] <= mem["python_workers_peak_rss"]
    assert mem["python_workers_at_peak"] >= 1
    assert mem["all_processes_peak"] >= mem["jvm_peak_rss"] * 0.5
    assert result["model"]["version"] and result["model"]["prepare_seconds"] > 0
    # the scratch lakes are gone; the trained model's lake is kept for the next run
    assert not list(tmp_path.glob("nightly-lake-*"))
    assert list(tmp_path.glob("nightly-model-*/_READY"))
    assert "gold.anomalies" in bench.format_nightly(result)

    # --model: the model of that lake, installed with its statistics into a fresh one
    prepared = next(tmp_path.glob("nightly-model-*/lake"))
    home = dataclasses.replace(cfg, lake=dataclasses.replace(cfg.lake, root=str(prepared)))
    given = bench.bench_nightly(
        home,
        source="hdfs",
        sample=HDFS / "HDFS_20000.log.gz",
        labels=None,
        lines=30_000,
        files=2,
        repeat=1,
        workdir=tmp_path,
        model=prepared / "models" / "hdfs",
    )
    assert given["model"]["version"] == result["model"]["version"]
    assert given["anomalies_rows"] == given["windows_rows"] == result["windows_rows"]
    assert not list(tmp_path.glob("nightly-model-given-*"))
