"""Training: the artifact (round trip, corruption, atomicity), the checks that refuse a run
before any worker starts, worker failures, and Horovod / TorchDistributor runs on local Spark.

The windows come from the real pipeline (ingest, mine, windows, select-features, windows) on
the bundled BGL 2k sample, cut into count windows of 20 lines.  BGL rather than the bundled
HDFS 20k prefix: that prefix is 3 minutes of a 39-hour log, so its blocks are cut short and
their labels cannot be predicted from what it holds (a random forest on counts and features
scores F1 0.0 on it), which would make any F1 comparison empty.  The sample's lines are dealt
to three nights by line number (0-1 mod 5, 2-3 mod 5, 4 mod 5): nights 1-2 train, night 3
tests, all from the same months of BGL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from logcrnn import ingest, mining, selection, windows
from logcrnn.cli import main
from logcrnn.config import Config
from logcrnn.errors import DataError, LogcrnnError, UsageError
from logcrnn.features import feature_names
from logcrnn.lake import Lake
from logcrnn.model import artifact, metrics
from logcrnn.model.crnn import CRNN, CRNNConfig
from logcrnn.model.data import WindowArrays, from_records
from logcrnn.model.fitting import predict_torch
from logcrnn.train import engines, job
from logcrnn.train.worker import (
    FAIL_RANK_ENV,
    arrays_from_columns,
    fixed_batches,
    in_validation,
    params_digest,
)

REPO = Path(__file__).resolve().parents[1]
BGL_2K = REPO / "data" / "sample" / "loghub_2k" / "BGL" / "BGL_2k.log.gz"
N1, N2, N3 = "2005-06-03", "2005-06-04", "2005-06-05"
SOURCE = "bglc"
#: sources whose windows the checks below forge from bglc's
CLONES = ("bglone", "bglraw", "bglnan", "bglfew")


# --------------------------------------------------------------------------------------------
# the artifact (no Spark)


def _tiny(tmp: Path, version: str = "v1", seed: int = 0) -> tuple[Path, CRNN, np.ndarray]:
    torch.manual_seed(seed)
    config = CRNNConfig(vocab_size=5, seq_len=6, n_features=2, sem_dim=3, embed_dim=4,
                        channels=4, kernels=(2, 3), hidden=8)  # fmt: skip
    vectors = np.random.default_rng(seed).normal(size=(5, 3)).astype(np.float32)
    vectors[:2] = 0
    model = CRNN(config, vectors)
    meta = artifact.ArtifactMeta(
        version=version,
        source="bglc",
        config=config,
        vocabulary={"t1": 2, "t2": 3, "t3": 4},
        templates={"t1": "a <*>", "t2": "b", "t3": "c <*> d"},
        feature_names=("n_events", "error_ratio"),
        feature_index=(0, 5),
        stats_night="2005-06-04",
        feature_mean=(10.0, 0.1),
        feature_std=(2.0, 0.2),
        threshold=0.4,
        metrics={"valid": {"f1": 0.5}},
        data_versions={"gold.windows": 3},
    )
    return artifact.save_artifact(tmp, meta, model.state_dict(), vectors), model, vectors


def _batch(n: int = 7) -> WindowArrays:
    rng = np.random.default_rng(3)
    return WindowArrays(
        sequence=rng.integers(0, 5, size=(n, 6)),
        length=rng.integers(1, 9, size=n),
        counts=np.zeros((n, 5), np.float32),
        semantic=np.zeros((n, 3), np.float32),
        features=rng.normal(size=(n, 2)).astype(np.float32),
        label=rng.integers(0, 2, size=n),
        start_us=np.arange(n),
        window_id=np.array([f"w{i}" for i in range(n)], dtype=object),
    )


def test_artifact_round_trip_gives_the_same_scores(tmp_path: Path) -> None:
    path, model, vectors = _tiny(tmp_path)
    assert artifact.current_version(tmp_path) == "v1" and path == tmp_path / "v1"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.json", "template_vectors.npy", "weights.pt"]  # fmt: skip
    loaded = artifact.load_artifact(tmp_path)  # the models folder: follows CURRENT
    assert loaded.version == "v1" and loaded.source == "bglc" and loaded.threshold == 0.4
    assert loaded.feature_index == (0, 5) and str(loaded.stats_night) == "2005-06-04"
    assert loaded.meta.vocabulary == {"t1": 2, "t2": 3, "t3": 4}
    assert loaded.meta.data_versions == {"gold.windows": 3} and loaded.meta.created_at
    assert np.array_equal(loaded.template_vectors, vectors) and not loaded.model.training
    data = _batch()
    expected = predict_torch(model, data)
    assert np.array_equal(predict_torch(loaded.model, data), expected)
    assert artifact.current_artifact(str(tmp_path.parent), tmp_path.name, str(tmp_path.parent))


def _rewrite_checksum(folder: Path, name: str) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))


class _Trap:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "damage, names",
    [
        ("truncated weights", "weights.pt"),
        ("garbage json", "model.json"),
        ("pickle in weights", "weights.pt"),
        ("pickle in vectors", "template_vectors.npy"),
        ("foreign weights", "weights.pt"),
        ("foreign description", "model.json"),
        ("newer format", "model.json"),
        ("missing vectors", "template_vectors.npy"),
    ],
)
def test_corrupt_or_foreign_artifact_is_a_data_error_naming_the_file(
    tmp_path: Path, damage: str, names: str
) -> None:
    folder, _, _ = _tiny(tmp_path)
    target = folder / names
    marker = tmp_path / "code-ran"
    if damage == "truncated weights":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "garbage json":
        target.write_text('{"format": "logcrnn-crnn", "version": ')
    elif damage == "pickle in weights":
        torch.save({"embedding.weight": _Trap(marker)}, target)
        _rewrite_checksum(folder, names)
    elif damage == "pickle in vectors":
        np.save(target, np.array([_Trap(marker)], dtype=object), allow_pickle=True)
        _rewrite_checksum(folder, names)
    elif damage == "foreign weights":  # a plain state_dict of another network
        torch.save(torch.nn.Linear(3, 1).state_dict(), target)
        _rewrite_checksum(folder, names)
    elif damage == "foreign description":
        target.write_text(json.dumps({"format": "mlflow-pyfunc", "flavors": {}}))
    elif damage == "newer format":
        meta = json.loads(target.read_text())
        target.write_text(json.dumps({**meta, "format_version": 99}))
    else:
        target.unlink()
    with pytest.raises(DataError) as err:
        artifact.load_artifact(folder)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_missing_artifact_and_bad_pointer_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        artifact.load_artifact(tmp_path / "nothing")
    with pytest.raises(DataError, match="no current model for bglc"):
        artifact.current_artifact(str(tmp_path), "bglc")
    _tiny(tmp_path)
    (tmp_path / "CURRENT").write_text("../../etc\n")
    with pytest.raises(DataError, match="does not name a model version"):
        artifact.load_artifact(tmp_path)
    (tmp_path / "CURRENT").write_text("v9\n")
    with pytest.raises(DataError, match="v9: no model artifact here"):
        artifact.load_artifact(tmp_path)


def test_failed_save_leaves_no_version_and_current_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny(tmp_path, "v1")
    real_write = artifact._write

    def failing(path: Path, data: bytes) -> None:
        if path.name == "model.json":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(artifact, "_write", failing)
    with pytest.raises(OSError, match="disk full"):
        _tiny(tmp_path, "v2", seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "v1"]
    assert artifact.load_artifact(tmp_path).version == "v1"
    monkeypatch.setattr(artifact, "_write", real_write)
    _tiny(tmp_path, "v2", seed=1)
    assert artifact.current_version(tmp_path) == "v2"
    with pytest.raises(UsageError, match="already exists"):
        _tiny(tmp_path, "v2", seed=1)


# --------------------------------------------------------------------------------------------
# pure pieces of the worker and the engine seam


def test_fixed_batches_give_every_rank_the_same_number_of_steps() -> None:
    data = _batch(5)
    batches = list(fixed_batches(data, batch_size=4, steps=3, seed=0))
    assert [len(b["label"]) for b in batches] == [4, 4, 4]
    seen = np.concatenate([b["start_us"] for b in batches])
    assert set(seen[:5].tolist()) == set(range(5))  # one full pass before any repeat


def test_petastorm_columns_to_arrays_unknown_label_and_feature_pick() -> None:
    cols = {
        "window_id": np.array(["a", "b"]),
        "length": np.array([3, 1], np.int32),
        "sequence": np.array([[2, 3, 0], [1, 0, 0]], np.int32),
        "counts": np.array([[0, 0, 1, 1], [0, 1, 0, 0]], np.int32),
        "semantic": np.ones((2, 2)),
        "features_std": np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]),
        "label": np.array([1.0, np.nan]),
        "start_ts": np.array(["2005-06-03T00:00:01", "NaT"], dtype="datetime64[us]"),
    }
    arrays = arrays_from_columns(cols, [2, 0], vocab_size=4, seq_len=3)
    assert arrays.label.tolist() == [1, -1]
    assert arrays.features.tolist() == [[2.0, 0.0], [5.0, 3.0]]
    assert arrays.start_us.tolist() == [1_117_756_801_000_000, 1]
    with pytest.raises(DataError, match="windows built without feature statistics"):
        arrays_from_columns({**cols, "sequence": np.zeros((2, 0))}, [0], 4, 3)


def test_engine_reports_the_failing_worker_not_the_peers_it_stopped() -> None:
    peer = {"ok": False, "rank": 0, "type": "HorovodInternalError",
            "message": "Horovod has been shut down. This was caused by an exception"}  # fmt: skip
    cause = {"ok": False, "rank": 1, "type": "DataError", "message": "shard 1 is empty"}
    with pytest.raises(DataError, match=r"^training worker 1: shard 1 is empty$"):
        engines._unwrap([peer, cause])
    other = {"ok": False, "rank": 1, "type": "ValueError", "message": "boom"}
    with pytest.raises(LogcrnnError, match="training worker 1 failed: ValueError: boom"):
        engines._unwrap([peer, other])
    with pytest.raises(UsageError, match="local engine runs one worker"):
        engines.run_workers(print, (), 2, "local")
    with pytest.raises(UsageError, match="unknown training engine"):
        engines.run_workers(print, (), 1, "mpi")


def test_mlflow_logging_when_configured_and_silent_skip_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: Config
) -> None:
    calls: dict[str, Any] = {}
    run = SimpleNamespace(info=SimpleNamespace(run_id="r1"))
    fake = SimpleNamespace(  # what ``import mlflow`` finds in sys.modules
        set_tracking_uri=lambda uri: calls.update(uri=uri),
        set_experiment=lambda name: calls.update(experiment=name),
        start_run=lambda run_name: contextlib.nullcontext(run),
        log_params=lambda d: calls.update(params=d),
        log_metrics=lambda d: calls.update(metrics=d),
        set_tags=lambda d: calls.update(tags=d),
        log_artifacts=lambda p, artifact_path: calls.update(artifacts=(p, artifact_path)),
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fields: dict[str, Any] = {f.name: None for f in dataclasses.fields(job.TrainReport)}
    report = job.TrainReport(**{**fields, "source": "bglc", "version": "v1", "valid_f1": 0.9,
                                "data_versions": {"gold.windows": 4}})  # fmt: skip
    assert job.log_to_mlflow(cfg.train, report, tmp_path) is None and not calls
    with_uri = dataclasses.replace(cfg.train, mlflow_uri="file:///tmp/mlruns")
    assert job.log_to_mlflow(with_uri, report, tmp_path) == "r1"
    assert calls["uri"] == "file:///tmp/mlruns" and calls["experiment"] == "logcrnn-bglc"
    assert calls["metrics"]["valid_f1"] == 0.9 and calls["params"]["fit.epochs"] == 15
    assert calls["tags"] == {"logcrnn.version": "v1", "data.gold.windows": 4}
    assert calls["artifacts"] == (str(tmp_path), "model")


# --------------------------------------------------------------------------------------------
# the training job on real windows


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


@pytest.fixture(scope="module")
def bgl(spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("train")
    folder = tmp / "sources"
    folder.mkdir()
    base = yaml.safe_load((Path(cfg.sources_dir) / "bgl.yaml").read_text())
    for name in (SOURCE, *CLONES):
        spec = {**base, "name": name, "windows": {"kind": "count", "by": "source", "size": 20,
                                                   "step": 5}}  # fmt: skip
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    # a larger validation slice: 30% of ~320 windows (the default 10% is ~30)
    train = dataclasses.replace(cfg.train, valid_share=0.3)
    conf = dataclasses.replace(cfg, sources_dir=str(folder), train=train)
    lake = Lake(spark, str(tmp / "lake"))
    lines = _lines(BGL_2K)
    for night, residues in ((N1, (0, 1)), (N2, (2, 3)), (N3, (4,))):
        path = tmp / f"{night}.log"
        path.write_text("\n".join(x for i, x in enumerate(lines) if i % 5 in residues) + "\n")
        ingest.run(spark, conf, SOURCE, [str(path)], night, lake=lake)
        mining.mine_night(spark, conf, lake, SOURCE, night)
    for night in (N1, N2, N3):
        windows.build_windows(spark, conf, lake, SOURCE, night)
    selection.select_features(spark, conf, lake, SOURCE, N1, N2)
    for night in (N1, N2, N3):
        windows.build_windows(spark, conf, lake, SOURCE, night)
    return SimpleNamespace(conf=conf, lake=lake, tmp=tmp)


def _rows(lake: Lake, source: str, *nights: str) -> list[dict[str, Any]]:
    """The windows in window-id order, as the training job reads its validation slice: the
    same batches give bit-identical scores (another batching can move a score by one ulp,
    and the calibrated threshold is one of the validation scores)."""
    df = lake.read("gold.windows", source=source).where(F.col("night").isin(*nights))
    return sorted((r.asDict() for r in df.collect()), key=lambda r: str(r["window_id"]))


def _test_f1(art: artifact.ModelArtifact, lake: Lake) -> dict[str, Any]:
    cfg = art.meta.config
    test = from_records(_rows(lake, SOURCE, N3), art.feature_index, cfg.vocab_size, cfg.seq_len)
    return metrics.evaluate_scores(test.label, predict_torch(art.model, test), art.threshold)


def test_train_cli_local_calibrates_saves_and_reloads(
    bgl: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sources = f"sources_dir={bgl.conf.sources_dir}"
    code = main(["train", "--source", SOURCE, "--from", N1, "--to", N2, "--engine", "local",
                 "--np", "1", "--lake", bgl.lake.root, "--set", sources,
                 "--set", "train.valid_share=0.3", "--set", "train.threshold_shrink=0.5",
                 "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = Path(bgl.lake.root) / "models" / SOURCE
    assert report["path"] == str(folder / report["version"]) and not (folder / ".runs").exists()
    art = artifact.load_artifact(artifact.current_artifact(bgl.lake.root, SOURCE))
    assert art.version == report["version"] and art.threshold == report["threshold"]
    assert (
        list(art.feature_names) == report["features"] == selection.chosen_features(bgl.lake, SOURCE)
    )
    assert art.meta.data_versions["gold.windows"] == bgl.lake.version("gold.windows")
    assert report["windows"] == report["labelled_windows"] == len(_rows(bgl.lake, SOURCE, N1, N2))
    # the validation slice is the same by window-id hash in Spark (job) and Python (worker)
    cfg = art.meta.config
    data = from_records(_rows(bgl.lake, SOURCE, N1, N2), art.feature_index, cfg.vocab_size,
                        cfg.seq_len)  # fmt: skip
    valid = data.take(in_validation(data.window_id, art.meta.training["valid_cut"]))
    assert len(valid) == report["valid_windows"] == art.meta.metrics["valid"]["n"]
    assert report["train_windows"] + report["valid_windows"] == report["labelled_windows"]
    # the reloaded model scores the validation slice exactly as the calibration did
    m = metrics.evaluate_scores(valid.label, predict_torch(art.model, valid), art.threshold)
    assert m == art.meta.metrics["valid"] and round(m["f1"], 4) == report["valid_f1"]
    # the threshold: half-way (train.threshold_shrink=0.5) from the best-F1 one to 0.5
    scores = predict_torch(art.model, valid)
    best = metrics.best_f1_threshold(valid.label, scores)
    assert art.meta.metrics["valid_best_f1_threshold"] == best
    assert art.threshold == pytest.approx(metrics.shrunk_threshold(best, 0.5))
    assert metrics.evaluate_scores(valid.label, scores, best)["f1"] > 0.8
    assert report["valid_f1"] > 0.7 and _test_f1(art, bgl.lake)["roc_auc"] > 0.8
    # the job's validation windows carry each event's own template vector (by id, as
    # scoring reads them), the same as the model's table by index for learned templates
    first, last = date.fromisoformat(N1), date.fromisoformat(N2)
    prep = job.prepare(bgl.conf, bgl.lake, SOURCE, first, last)
    events, seq = prep.valid.event_vectors, prep.valid.sequence
    assert events is not None and events.shape == (*seq.shape, prep.vectors.shape[1])
    known = seq > 1
    assert known.sum() > 100 and np.allclose(events[known], prep.vectors[seq][known])
    assert not events[seq == 0].any()


def test_a_model_trained_without_promotion_waits_for_models_use(
    bgl: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    before = "20240101T000000Z-old"
    _tiny(folder, before)  # the current model
    sources = f"sources_dir={bgl.conf.sources_dir}"
    common = ["--lake", bgl.lake.root, "--set", sources, "--json"]
    capsys.readouterr()
    assert main(["train", "--source", SOURCE, "--from", N1, "--to", N2, "--engine", "local",
                 "--np", "1", "--no-promote", "--set", "train.valid_share=0.3",
                 "--out", str(folder), *common]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["promoted"] is False and artifact.current_version(folder) == before
    common += ["--dir", str(folder)]
    assert main(["models", "--source", SOURCE, *common]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["versions"]
    assert listed[0]["version"] == report["version"] and not listed[0]["current"]
    assert listed[0]["valid_f1"] == pytest.approx(report["valid_f1"], abs=1e-4)
    assert [v["version"] for v in listed if v["current"]] == [before]
    assert main(["models", "--source", SOURCE, "--use", report["version"], *common]) == 0
    assert artifact.current_version(folder) == report["version"]
    assert artifact.load_artifact(folder).version == report["version"]


def test_models_lists_rolls_back_and_prunes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = ["20250101T000000Z-a", "20250102T000000Z-b", "20250103T000000Z-c"]
    for i, version in enumerate(versions):
        _tiny(tmp_path, version, seed=i)
    broken = tmp_path / "20250104T000000Z-broken"
    broken.mkdir()
    (broken / "model.json").write_text("{")
    listed = artifact.describe_versions(tmp_path)
    # newest first; the unreadable one listed with its reason, not hidden
    assert [v.version for v in listed if not v.error] == versions[::-1]
    assert [v.version for v in listed if v.error] == [broken.name]
    assert [v.version for v in listed if v.current] == [versions[-1]]
    assert {v.valid_f1 for v in listed if not v.error} == {0.5}
    # one version alone (what `logcrnn status` shows of the current model) reads the same
    for name in (versions[-1], versions[0], broken.name):
        assert [artifact.describe_version(tmp_path, name)] == [
            v for v in listed if v.version == name
        ]

    # roll back to the oldest: loaded in full first
    artifact.use_version(tmp_path, versions[0])
    assert artifact.load_artifact(tmp_path).version == versions[0]
    weights = tmp_path / versions[1] / artifact.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DataError, match="weights.pt"):
        artifact.use_version(tmp_path, versions[1])
    with pytest.raises(UsageError, match="no model version nope"):
        artifact.use_version(tmp_path, "nope")
    assert artifact.current_version(tmp_path) == versions[0]

    # keep the newest one and the current one, whatever its age; the unreadable one has no
    # creation time, so it counts as the oldest
    assert artifact.prune_versions(tmp_path, 1, dry_run=True) == [versions[1], broken.name]
    assert len(artifact.list_versions(tmp_path)) == 4
    capsys.readouterr()
    root = ["--source", "bgl", "--dir", str(tmp_path), "--json"]
    assert main(["models", *root, "--keep", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["deleted"] == [versions[1], broken.name]
    assert artifact.list_versions(tmp_path) == [versions[0], versions[2]]
    assert artifact.current_version(tmp_path) == versions[0]
    for bad in (["--keep", "0"], ["--use", "nope"], ["--dry-run"]):
        assert main(["models", *root, *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_lake_upkeep_prunes_every_sources_model_versions(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    for source, n in (("bgl", 3), ("hdfs", 1)):
        for i in range(n):
            _tiny(lake / "models" / source, f"2025010{i + 1}T000000Z-{source}", seed=i)
    artifact.use_version(lake / "models" / "bgl", "20250101T000000Z-bgl")  # a roll-back
    cmd = ["maintain", "--date", "2025-01-09", "--lake", str(lake), "--json",
           "--set", "retention.model_versions=1"]  # fmt: skip
    capsys.readouterr()
    assert main([*cmd, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert dry["models"] == {"bgl": ["20250102T000000Z-bgl"], "hdfs": []}
    assert len(artifact.list_versions(lake / "models" / "bgl")) == 3
    assert main(cmd) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"] == dry["models"]
    # the newest and the current one stay
    assert artifact.list_versions(lake / "models" / "bgl") == [
        "20250101T000000Z-bgl", "20250103T000000Z-bgl"
    ]  # fmt: skip
    assert artifact.load_artifact(lake / "models" / "bgl").version == "20250101T000000Z-bgl"
    assert artifact.list_versions(lake / "models" / "hdfs") == ["20250101T000000Z-hdfs"]


def _forge(lake: Lake, dst: str, nights: tuple[str, ...], change: Any) -> None:
    """``dst``: bglc's windows of ``nights`` through ``change``, with bglc's statistics."""
    for night in nights:
        lake.write(change(lake.read("gold.windows", night, SOURCE)), "gold.windows", night, dst)
    for table in ("gold.feature_stats", "gold.feature_scores"):
        lake.write(lake.read(table, N2, SOURCE), table, N2, dst)


@pytest.fixture(scope="module")
def forged(bgl: Any) -> Any:
    lake = bgl.lake
    names = list(feature_names(bgl.conf.features.scales))
    first = names.index(selection.chosen_features(lake, SOURCE)[0])
    _forge(lake, "bglone", (N1,), lambda df: df.withColumn("label", F.lit(0)))
    _forge(lake, "bglraw", (N1,), lambda df: df.withColumn("sequence", F.array().cast(
        "array<int>")).withColumn("stats_night", F.lit(None).cast("date")))  # fmt: skip

    def poison(df: DataFrame) -> DataFrame:
        nan = F.lit(float("nan"))
        bad = F.transform("features_std", lambda x, i: F.when(i == first, nan).otherwise(x))
        return df.withColumn("features_std", F.when(F.col("label") == 1, bad).otherwise(
            F.col("features_std")))  # fmt: skip

    _forge(lake, "bglnan", (N1, N2), poison)
    few = lambda df: df.where(F.col("window_id") < "4")  # noqa: E731 (about a quarter)
    _forge(lake, "bglfew", (N1,), few)
    return bgl


@pytest.mark.parametrize(
    "source, message",
    [
        ("bglone", r"all \d+ labelled windows are normal; training needs both classes"),
        ("bglraw", r"built without feature statistics \(empty sequence\): run logcrnn "
                   r"select-features --source bglraw --from 2005-06-03"),
        ("bglnan", r"NaN or infinite values \(\w+ in \d+ labelled windows\)"),
        ("bglfew", r"too few windows for a validation split: \d+ labelled"),
    ],
)  # fmt: skip
def test_bad_training_data_is_refused_before_any_worker_starts(
    forged: Any, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    def no_workers(*args: Any) -> Any:
        raise AssertionError("workers started")

    monkeypatch.setattr(engines, "run_workers", no_workers)
    with pytest.raises(DataError, match=message) as err:
        job.train(forged.lake.spark, forged.conf, forged.lake, source, N1,
                  N2 if source == "bglnan" else N1, np=1, engine="local")  # fmt: skip
    assert "\n" not in str(err.value)
    assert not (Path(forged.lake.root) / "models" / source).exists()


def _models(lake: Lake) -> tuple[str | None, list[str]]:
    folder = Path(lake.root) / "models" / SOURCE
    return artifact.current_version(folder), artifact.list_versions(folder)


def test_worker_crash_fails_the_run_and_keeps_the_current_model(
    bgl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _models(bgl.lake)
    assert before[0] is not None  # trained by the CLI test
    monkeypatch.setenv(FAIL_RANK_ENV, "0")
    with pytest.raises(LogcrnnError, match="injected failure on rank 0"):
        job.train(bgl.lake.spark, bgl.conf, bgl.lake, SOURCE, N1, N2, np=1, engine="local")
    assert _models(bgl.lake) == before


# --------------------------------------------------------------------------------------------
# distributed runs (Horovod on local Spark, TorchDistributor)


@pytest.fixture(scope="module")
def horovod_runs(bgl: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    out = tmp_path_factory.mktemp("hvd")
    runs = {}
    for n in (1, 2):
        report = job.train(bgl.lake.spark, bgl.conf, bgl.lake, SOURCE, N1, N2, np=n,
                           engine="horovod", out=out / f"np{n}")  # fmt: skip
        runs[n] = (report, artifact.load_artifact(report.path))
    yield runs


@pytest.mark.slow
def test_horovod_two_workers_hold_identical_weights(horovod_runs: Any) -> None:
    report, art = horovod_runs[2]
    assert [r["rank"] for r in report.ranks] == [0, 1]
    assert len({r["params_sha256"] for r in report.ranks}) == 1
    # each rank read its own Petastorm shard (one row group each): together all of them
    shards = [r["train_windows"] for r in report.ranks]
    assert min(shards) > 0 and sum(shards) == report.train_windows
    state = {k: v.detach() for k, v in art.model.state_dict().items()}
    assert params_digest(state) == report.ranks[0]["params_sha256"]


@pytest.mark.slow
def test_horovod_one_and_two_workers_reach_similar_test_f1(bgl: Any, horovod_runs: Any) -> None:
    one, two = (_test_f1(horovod_runs[n][1], bgl.lake) for n in (1, 2))
    assert one["n"] == two["n"] > 50 and one["n_anomalous"] > 10
    assert one["roc_auc"] > 0.8 and two["roc_auc"] > 0.8
    assert one["f1"] > 0.5 and two["f1"] > 0.5
    assert abs(one["f1"] - two["f1"]) <= 0.15


@pytest.mark.slow
def test_horovod_worker_crash_fails_with_its_message_and_keeps_current(
    bgl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _models(bgl.lake)
    monkeypatch.setenv(FAIL_RANK_ENV, "1")
    with pytest.raises(LogcrnnError, match=r"training worker 1 failed: RuntimeError: injected "
                                           r"failure on rank 1"):  # fmt: skip
        job.train(bgl.lake.spark, bgl.conf, bgl.lake, SOURCE, N1, N2, np=2, engine="horovod")
    assert _models(bgl.lake) == before
    assert not (Path(bgl.lake.root) / "models" / SOURCE / ".runs").exists()


@pytest.mark.slow
def test_torch_distributor_stands_in_for_horovod(bgl: Any, tmp_path: Path) -> None:
    report = job.train(bgl.lake.spark, bgl.conf, bgl.lake, SOURCE, N1, N2, np=2,
                       engine="torch_distributor", out=tmp_path)  # fmt: skip
    assert [r["rank"] for r in report.ranks] == [0, 1]
    assert len({r["params_sha256"] for r in report.ranks}) == 1
    assert artifact.load_artifact(tmp_path).version == report.version


@pytest.mark.slow
def test_torch_distributor_worker_crash_fails_with_its_message(
    bgl: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(FAIL_RANK_ENV, "1")
    with pytest.raises(LogcrnnError, match="training worker 1 failed: RuntimeError: injected"):
        job.train(bgl.lake.spark, bgl.conf, bgl.lake, SOURCE, N1, N2, np=2,
                  engine="torch_distributor", out=tmp_path)  # fmt: skip
    assert artifact.list_versions(tmp_path) == [] and artifact.current_version(tmp_path) is None
