"""``logcrnn train``: check the training windows, run the workers, calibrate, save the model.

``train(spark, cfg, lake, source, A, B)`` trains the CRNN on the labelled ``gold.windows`` of
nights A..B:

1. **Checks, before any worker starts** (each a one-line :class:`DataError`): the period has
   labelled windows of both classes; the windows were built with fitted statistics (one
   ``gold.feature_stats`` night, non-empty sequences); no chosen feature or semantic vector
   is NaN or infinite; the validation slice is large enough and holds both classes, and so
   does the rest.
2. **Inputs**: the statistics the windows were built with (:func:`windows.load_stats`), the
   chosen features of that night (:func:`selection.chosen_features`; all features when none
   were scored), the template table (:func:`data.template_table` over silver.templates'
   texts).  The validation windows carry each event's own template vector, as scoring gives
   them (the templates of the last night mined up to B); training reads them from the table.
   The validation slice is the labelled windows whose id hashes (CRC-32) below a cut
   (``train.valid_share``, at most ``train.valid_max`` windows): deterministic, the same
   on every rank and on every re-run.  The driver reads it once (it is small) and ships it to
   the workers; the training windows are read by the workers themselves (Petastorm over the
   table's Parquet files at its current Delta version).
3. **Workers** through the engine seam (:func:`engines.run_workers`): Horovod on Spark by
   default, TorchDistributor or one local process.  Class weights come from the global
   training class counts, the steps per epoch from the global training window count.
4. **Calibration**: rank 0's weights score the validation slice; the threshold is the one
   with the best F1 there.
5. **Artifact**: saved atomically under ``<models_dir>/<source>/<version>`` and made
   ``CURRENT`` (:mod:`logcrnn.model.artifact`); logged to MLflow when it is installed and a
   tracking URI is configured.  A failed run leaves ``CURRENT`` as it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from logcrnn import selection, windows
from logcrnn.config import Config, TrainSettings, load_source
from logcrnn.errors import DataError, LogcrnnError, UsageError
from logcrnn.features import FeatureStats, feature_names, vectors_by_id
from logcrnn.lake import Lake
from logcrnn.model import artifact, metrics
from logcrnn.model.crnn import CRNN, CRNNConfig, crnn_score
from logcrnn.model.data import WindowArrays, from_records, template_table
from logcrnn.model.fitting import FitSettings, predict_torch
from logcrnn.train import engines
from logcrnn.train.worker import BUCKETS, COLUMNS, train_worker

log = logging.getLogger(__name__)

WINDOWS = "gold.windows"
STATS = "gold.feature_stats"
SCORES = "gold.feature_scores"
TEMPLATES = "silver.templates"


@dataclass
class TrainReport:
    """What ``logcrnn train`` did (``--json`` prints :meth:`as_dict`)."""

    source: str
    train_from: str
    train_to: str
    engine: str
    np: int
    windows: int
    labelled_windows: int
    anomalous_windows: int
    train_windows: int
    valid_windows: int
    valid_anomalous: int
    features: list[str]
    stats_night: str
    epochs_run: int
    best_epoch: int
    threshold: float
    valid_f1: float
    valid_precision: float
    valid_recall: float
    valid_roc_auc: float | None
    windows_per_s: float
    train_seconds: float
    seconds: float
    version: str
    path: str
    data_versions: dict[str, int] = field(default_factory=dict)
    ranks: list[dict[str, Any]] = field(default_factory=list)
    mlflow_run: str | None = None
    #: whether the model was made current (``--no-promote``: False)
    promoted: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _period(lake: Lake, source: str, first: date, last: date) -> DataFrame:
    df = lake.read(WINDOWS, source=source)
    return df.where(F.col("night").between(F.lit(first), F.lit(last)))


def _bucket() -> Any:
    """Spark's twin of :func:`logcrnn.train.worker.id_hash` ``% BUCKETS``."""
    return F.pmod(F.crc32(F.col("window_id").cast("binary")), F.lit(BUCKETS))


def _bad_number(col: Any) -> Any:
    return F.isnan(col) | (F.abs(col) == F.lit(float("inf")))


def _inputs(
    lake: Lake, source: str, stats_night: date
) -> tuple[FeatureStats, list[str], list[int], dict[str, str]]:
    """Statistics, chosen features (names, indices in features_std) and template texts."""
    stats = windows.load_stats(lake, source, stats_night)
    if stats is None:  # pragma: no cover - load_stats raises for a named night
        raise DataError(f"{STATS} has no statistics for {source} on {stats_night}")
    chosen = selection.chosen_features(lake, source, stats.night) if lake.exists(SCORES) else []
    if not chosen:
        log.warning("%s: no features scored on %s; the model takes all %d features",
                    source, stats.night, len(stats.names))  # fmt: skip
        chosen = list(stats.names)
    unknown = [n for n in chosen if n not in stats.names]
    if unknown:
        raise DataError(f"{SCORES} of {stats.night} names features the statistics lack: {unknown}")
    texts: dict[str, str] = {}
    if lake.exists(TEMPLATES):
        rows = (
            lake.read(TEMPLATES, source=source)
            .where(F.col("night") <= F.lit(stats.night))
            .select("night", "template_id", "template")
            .collect()
        )
        for r in sorted(rows, key=lambda r: r.night):
            texts[r.template_id] = r.template or ""
    return stats, chosen, [stats.names.index(n) for n in chosen], texts


@dataclass(frozen=True)
class _Period:
    """One aggregation over the period's windows."""

    windows: int
    labelled: int
    anomalous: int
    stats_night: date
    bad_features: tuple[int, ...]  # labelled windows with a NaN/inf value, per feature
    bad_semantic: int


def _check_period(df: DataFrame, source: str, first: date, last: date, n_features: int) -> _Period:
    """Counts, and the checks that need no statistics (empty, one class, no statistics)."""
    labelled = F.col("label").isNotNull()
    bad = [
        F.sum((labelled & _bad_number(F.col("features_std")[i])).cast("long")).alias(f"bad{i}")
        for i in range(n_features)
    ]
    row = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.count("label").alias("labelled"),
        F.sum(F.when(labelled, F.col("label"))).alias("anomalous"),
        F.sum((F.size("sequence") == 0).cast("long")).alias("no_stats"),
        F.collect_set("stats_night").alias("stats_nights"),
        F.sum((labelled & F.exists("semantic", _bad_number)).cast("long")).alias("bad_sem"),
        *bad,
    ).first()
    assert row is not None
    n, n_lab, n_anom = int(row.n), int(row.labelled), int(row.anomalous or 0)
    period = f"{source} {first}..{last}"
    if n == 0:
        raise DataError(f"gold.windows has no {period} windows: run logcrnn windows first")
    if n_lab == 0:
        raise DataError(f"gold.windows has {n} {period} windows but none is labelled")
    if n_anom in (0, n_lab):
        kind = "normal" if n_anom == 0 else "anomalous"
        raise DataError(
            f"gold.windows {period}: all {n_lab} labelled windows are {kind}; training needs "
            "both classes"
        )
    if int(row.no_stats or 0) or not row.stats_nights:
        raise DataError(
            f"gold.windows {period}: {int(row.no_stats or n)} windows were built without "
            f"feature statistics (empty sequence): run logcrnn select-features --source "
            f"{source} --from {first} --to {last}, then logcrnn windows again for these nights"
        )
    nights = sorted(row.stats_nights)
    if len(nights) != 1:
        raise DataError(
            f"gold.windows {period}: windows built with different feature statistics "
            f"({', '.join(map(str, nights))}): rebuild them with one (logcrnn windows)"
        )
    return _Period(
        windows=n,
        labelled=n_lab,
        anomalous=n_anom,
        stats_night=nights[0],
        bad_features=tuple(int(row[f"bad{i}"] or 0) for i in range(n_features)),
        bad_semantic=int(row.bad_sem or 0),
    )


def _check_numbers(p: _Period, names: list[str], index: list[int], what: str) -> None:
    bad = {names[k]: p.bad_features[i] for k, i in enumerate(index) if p.bad_features[i]}
    if bad or p.bad_semantic:
        parts = [f"{name} in {count}" for name, count in bad.items()]
        if p.bad_semantic:
            parts.append(f"semantic vectors in {p.bad_semantic}")
        raise DataError(
            f"gold.windows {what}: NaN or infinite values ({', '.join(parts)} labelled "
            "windows); fix the input or the feature statistics before training"
        )


def _valid_cut(settings: TrainSettings, labelled: int) -> int:
    share = min(settings.valid_share, settings.valid_max / labelled)
    return max(1, math.floor(BUCKETS * share))


def _validation(
    df: DataFrame,
    cut: int,
    feature_index: list[int],
    vocab_size: int,
    seq_len: int,
    vectors: dict[str, np.ndarray] | None,
) -> WindowArrays:
    cols = [c for c in COLUMNS if c != "start_ts"] + ["start_ts"]
    if vectors is not None:
        cols.append("template_ids")
    rows = df.where(F.col("label").isNotNull() & (_bucket() < cut)).select(*cols)
    records = sorted((r.asDict() for r in rows.collect()), key=lambda r: r["window_id"])
    return from_records(records, feature_index, vocab_size, seq_len, vectors)


def _fit_settings(settings: TrainSettings) -> FitSettings:
    return FitSettings(**settings.fit_settings())


@dataclass(frozen=True)
class TrainingData:
    """Everything checked and gathered on the driver before the workers start."""

    counts: _Period
    stats: FeatureStats
    chosen: list[str]
    index: list[int]
    texts: dict[str, str]
    cut: int
    valid: WindowArrays
    train_windows: int
    train_anomalous: int
    vectors: np.ndarray
    config: CRNNConfig
    versions: dict[str, int]
    files: list[str]


def prepare(cfg: Config, lake: Lake, source: str, first: date, last: date) -> TrainingData:
    """The checks (each a one-line :class:`DataError`) and the inputs of a training run."""
    if not lake.exists(WINDOWS):
        raise DataError(f"{WINDOWS} does not exist yet: run logcrnn windows first")
    settings = cfg.train
    period = _period(lake, source, first, last)
    counts = _check_period(period, source, first, last, len(feature_names(cfg.features.scales)))
    stats, chosen, index, texts = _inputs(lake, source, counts.stats_night)
    newest = lake.read(STATS, source=source).agg(F.max("night").alias("n")).first()
    if newest is not None and newest.n is not None and newest.n > stats.night:
        log.warning("%s: the windows were built with the statistics of %s, the newest are of "
                    "%s; the model uses those of %s (rebuild the windows with --stats %s to "
                    "train on the newest)", source, stats.night, newest.n, stats.night,
                    newest.n)  # fmt: skip
    _check_numbers(counts, chosen, index, f"{source} {first}..{last}")
    seq_len = cfg.features.seq_len
    cut = _valid_cut(settings, counts.labelled)
    by_id = None
    if settings.crnn.event_vectors and lake.exists(TEMPLATES):
        # the validation windows' events read their own template vectors, as scoring does,
        # from the templates of the period's last mined night (each night's rows hold every
        # template known by then); with none, the table by index, as in training
        mined = lake.read(TEMPLATES, source=source).where(F.col("night") <= F.lit(last))
        newest = mined.agg(F.max("night").alias("n")).first()
        if newest is not None and newest.n is not None:
            by_id = vectors_by_id(lake.read(TEMPLATES, newest.n, source).collect(), stats)
    valid = _validation(period, cut, index, stats.counts_size, seq_len, by_id)
    valid.check("the validation windows")
    v_anom = int((valid.label == 1).sum())
    t_lab, t_anom = counts.labelled - len(valid), counts.anomalous - v_anom
    if len(valid) < settings.min_valid or v_anom in (0, len(valid)) or t_anom in (0, t_lab):
        raise DataError(
            f"too few windows for a validation split: {counts.labelled} labelled "
            f"({counts.anomalous} anomalous) give {len(valid)} validation windows ({v_anom} "
            f"anomalous) and {t_lab} training ({t_anom} anomalous); both parts need both "
            f"classes and the validation slice at least {settings.min_valid} windows "
            "(train.min_valid)"
        )
    vectors = template_table(
        stats.vocab, texts, lambda t: stats.template_vector(t, stats.vector_size)
    )
    config = CRNNConfig.from_dict(
        {
            **asdict(settings.crnn),
            "vocab_size": stats.counts_size,
            "seq_len": seq_len,
            "n_features": len(index),
            "sem_dim": int(vectors.shape[1]),
        }
    )
    versions = {t: lake.version(t) for t in (WINDOWS, STATS, SCORES, TEMPLATES) if lake.exists(t)}
    nights = [date.fromordinal(d) for d in range(first.toordinal(), last.toordinal() + 1)]
    files = lake.file_uris(WINDOWS, source, nights, version=versions[WINDOWS])
    return TrainingData(
        counts=counts,
        stats=stats,
        chosen=chosen,
        index=index,
        texts=texts,
        cut=cut,
        valid=valid,
        train_windows=t_lab,
        train_anomalous=t_anom,
        vectors=vectors,
        config=config,
        versions=versions,
        files=files,
    )


def worker_spec(
    data: TrainingData, settings: TrainSettings, n_workers: int, checkpoint: Path | None
) -> dict[str, Any]:
    """The plain dict every worker receives (see :func:`logcrnn.train.worker.train_worker`).

    Class weights ``n / (2 n_c)`` come from the global training counts and the steps per
    epoch from the global training windows, so every rank agrees on both.
    """
    fit = _fit_settings(settings)
    n, n_anom = data.train_windows, data.train_anomalous
    return {
        "files": data.files,
        "feature_index": data.index,
        "vocab_size": data.stats.counts_size,
        "seq_len": data.config.seq_len,
        "valid_cut": data.cut,
        "valid": data.valid,
        "crnn": data.config.to_dict(),
        "template_vectors": data.vectors,
        "class_weights": (n / (2.0 * (n - n_anom)), n / (2.0 * n_anom)),
        "steps_per_epoch": max(1, math.ceil(n / (n_workers * fit.batch_size))),
        "fit": asdict(fit),
        "threads": settings.threads,
        "checkpoint": None if checkpoint is None else str(checkpoint),
    }


def _run(spec: dict[str, Any], n_workers: int, engine: str, run_dir: Path) -> list[dict[str, Any]]:
    """The workers' results; on failure a checkpoint is kept for inspection, else the run
    folder is removed."""
    try:
        results = engines.run_workers(train_worker, (spec,), n_workers, engine)
    except BaseException:
        if (run_dir / "checkpoint.pt").exists():
            log.warning("training failed; rank 0's last checkpoint is kept in %s", run_dir)
        else:
            _remove_run(run_dir)
        raise
    if len({r["params_sha256"] for r in results}) != 1:
        raise LogcrnnError(f"the {len(results)} training workers ended with different weights")
    return sorted(results, key=lambda r: r["rank"])


def train(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    source: str,
    train_from: date | str,
    train_to: date | str,
    np: int | None = None,
    engine: str | None = None,
    out: str | Path | None = None,
    promote: bool = True,
) -> TrainReport:
    """Train the CRNN on ``source``'s labelled windows of nights ``train_from``..``train_to``.

    ``np`` / ``engine`` override ``train.np`` / ``train.engine``; ``out`` replaces the
    models folder ``<models_dir>/<source>`` (the folder holding the versions and ``CURRENT``).
    ``promote`` False saves the model without pointing ``CURRENT`` at it (``logcrnn models
    --use`` does that later, once it has been reviewed).
    ``spark`` is the session the Horovod and TorchDistributor engines run on.
    """
    started = time.perf_counter()
    load_source(cfg, source)
    settings = cfg.train
    n_workers = settings.np if np is None else int(np)
    engine = engine or settings.engine
    if engine not in engines.ENGINES:
        raise UsageError(f"--engine: expected one of {', '.join(engines.ENGINES)}, got {engine!r}")
    if n_workers < 1 or (engine == "local" and n_workers != 1):
        need = "exactly 1" if engine == "local" else "at least 1"
        raise UsageError(f"--np {n_workers}: the {engine} engine needs {need}")
    first, last = date.fromisoformat(str(train_from)), date.fromisoformat(str(train_to))
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    folder = Path(out) if out else artifact.models_folder(lake.root, source, settings.models_dir)

    data = prepare(cfg, lake, source, first, last)
    run_dir = folder / ".runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = worker_spec(data, settings, n_workers, run_dir / "checkpoint.pt")
    log.info("%s %s..%s: %d training windows (%d anomalous) in %d files, %d validation; "
             "%d %s worker(s), %d steps per epoch", source, first, last, data.train_windows,
             data.train_anomalous, len(data.files), len(data.valid), n_workers, engine,
             spec["steps_per_epoch"])  # fmt: skip
    train_started = time.perf_counter()
    results = _run(spec, n_workers, engine, run_dir)
    train_seconds = time.perf_counter() - train_started
    rank0 = results[0]

    # calibration: rank 0's weights score the validation slice
    state = {k: torch.from_numpy(v) for k, v in rank0["state"].items()}
    model = CRNN(data.config, data.vectors)
    model.load_state_dict(state)
    scores = predict_torch(model, data.valid, batch_size=256, score_fn=crnn_score,
                           device=torch.device("cpu"))  # fmt: skip
    best_f1 = metrics.best_f1_threshold(data.valid.label, scores)
    threshold = metrics.shrunk_threshold(best_f1, settings.threshold_shrink)
    valid_m = metrics.evaluate_scores(data.valid.label, scores, threshold)
    fit = rank0["fit"]

    version = artifact.new_version(state)
    meta = artifact.ArtifactMeta(
        version=version,
        source=source,
        config=data.config,
        vocabulary=dict(data.stats.vocab),
        templates={tid: data.texts.get(tid, "") for tid in data.stats.vocab},
        feature_names=tuple(data.chosen),
        feature_index=tuple(data.index),
        stats_night=str(data.stats.night),
        feature_mean=tuple(float(data.stats.mean[i]) for i in data.index),
        feature_std=tuple(float(data.stats.std[i]) for i in data.index),
        threshold=float(threshold),
        metrics={
            "valid": valid_m,
            "valid_best_f1_threshold": best_f1,
            **{k: fit[k] for k in ("best_epoch", "epochs_run", "history", "windows_per_s")},
        },
        data_versions=data.versions,
        training={
            "train_from": str(first),
            "train_to": str(last),
            "engine": engine,
            "np": n_workers,
            "windows": data.counts.windows,
            "train_windows": data.train_windows,
            "train_anomalous": data.train_anomalous,
            "valid_windows": len(data.valid),
            "valid_cut": data.cut,
            "buckets": BUCKETS,
            **{k: spec[k] for k in ("class_weights", "steps_per_epoch", "fit")},
        },
    )
    path = artifact.save_artifact(folder, meta, state, data.vectors, make_current=promote)
    _remove_run(run_dir)
    auc = valid_m["roc_auc"]
    report = TrainReport(
        source=source,
        train_from=str(first),
        train_to=str(last),
        engine=engine,
        np=n_workers,
        windows=data.counts.windows,
        labelled_windows=data.counts.labelled,
        anomalous_windows=data.counts.anomalous,
        train_windows=data.train_windows,
        valid_windows=len(data.valid),
        valid_anomalous=int(valid_m["n_anomalous"]),
        features=data.chosen,
        stats_night=str(data.stats.night),
        epochs_run=int(fit["epochs_run"]),
        best_epoch=int(fit["best_epoch"]),
        threshold=float(threshold),
        valid_f1=round(float(valid_m["f1"]), 4),
        valid_precision=round(float(valid_m["precision"]), 4),
        valid_recall=round(float(valid_m["recall"]), 4),
        valid_roc_auc=None if auc is None else round(float(auc), 4),
        windows_per_s=round(float(fit["windows_per_s"]), 1),
        train_seconds=round(train_seconds, 2),
        seconds=0.0,
        version=version,
        path=str(path),
        data_versions=data.versions,
        promoted=promote,
        ranks=[
            {k: r[k] for k in ("rank", "train_windows", "threads", "device", "params_sha256")}
            for r in results
        ],  # fmt: skip
    )
    report.mlflow_run = log_to_mlflow(settings, report, path)
    report.seconds = round(time.perf_counter() - started, 2)
    log.info("%s: model %s, threshold %.4f, validation F1 %.3f -> %s", source, version,
             threshold, report.valid_f1, path)  # fmt: skip
    return report


def _remove_run(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # .runs itself, unless other runs are in it
        run_dir.parent.rmdir()


def log_to_mlflow(settings: TrainSettings, report: TrainReport, path: Path) -> str | None:
    """Log the run's parameters, metrics and artifact to MLflow; the run id, or None when
    MLflow is not installed or no tracking URI is configured (``train.mlflow_uri`` or
    ``MLFLOW_TRACKING_URI``).  An MLflow failure is logged, never fatal: the model is saved."""
    uri = settings.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return None
    try:
        import mlflow
    except ImportError:
        log.debug("MLflow is not installed: %s not used", uri)
        return None
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(f"logcrnn-{report.source}")
        with mlflow.start_run(run_name=report.version) as run:
            mlflow.log_params(
                {
                    "source": report.source,
                    "train_from": report.train_from,
                    "train_to": report.train_to,
                    "engine": report.engine,
                    "np": report.np,
                    **{f"fit.{k}": v for k, v in asdict(_fit_settings(settings)).items()},
                    **{f"crnn.{k}": v for k, v in asdict(settings.crnn).items()},
                }
            )
            mlflow.log_metrics(
                {
                    "valid_f1": report.valid_f1,
                    "valid_precision": report.valid_precision,
                    "valid_recall": report.valid_recall,
                    "threshold": report.threshold,
                    "windows_per_s": report.windows_per_s,
                    **({"valid_roc_auc": report.valid_roc_auc} if report.valid_roc_auc else {}),
                }
            )
            tags = {f"data.{k}": v for k, v in report.data_versions.items()}
            mlflow.set_tags({"logcrnn.version": report.version, **tags})
            mlflow.log_artifacts(str(path), artifact_path="model")
            return str(run.info.run_id)
    except Exception as exc:  # tracking is a convenience; the artifact is the record
        log.warning("MLflow logging to %s failed: %s", uri, exc)
        return None
