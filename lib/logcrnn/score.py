"""Nightly scoring: gold.windows of one night -> gold.anomalies, through an iterator UDF.

The model travels to the executors as bytes in a broadcast (config, weights and template
table: :meth:`CRNN.to_bytes`), so no executor reads a driver-local path; each Python worker
loads it once (``torch.load(..., weights_only=True)``) and every Arrow batch of windows
yields one batch of results (``mapInPandas``).  A model that reads each event's own template
vector (``event_vectors``) also gets, in the same broadcast, the vector of every template of
the night (:func:`logcrnn.features.vectors_by_id` with the statistics the windows were built
with), so a template unseen in training reads as what its tokens mean.  The numeric core,
:func:`score_frame`, is a pure function of a pandas frame, tested without Spark.  GPU when
the executor has one.

A row of gold.anomalies: the window (id, kind, key, bounds), its score and ``is_anomaly`` at
the model's calibrated threshold, the model version, the templates that drove the score (the
attention weights summed per template, top :data:`TOP_TEMPLATES`, with their text) and where
the window's first and last raw lines are (file and line number).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from logcrnn.config import Config, load_source
from logcrnn.errors import DataError
from logcrnn.features import vectors_by_id
from logcrnn.lake import Lake
from logcrnn.model.data import TemplateVectors, event_vectors
from logcrnn.windows import load_stats

log = logging.getLogger(__name__)

WINDOWS = "gold.windows"
TEMPLATES = "silver.templates"
ANOMALIES = "gold.anomalies"
TOP_TEMPLATES = 3

#: Columns of gold.windows the UDF reads.
INPUT_COLUMNS = ("window_id", "kind", "key", "start_ts", "end_ts", "length", "template_ids",
                 "sequence", "semantic", "features_std", "label", "first_file", "first_line",
                 "last_file", "last_line")  # fmt: skip
OUTPUT_DDL = (
    "window_id string, kind string, key string, start_ts timestamp, end_ts timestamp, "
    "score double, is_anomaly boolean, top_templates array<struct<template_id: string, "
    "template: string, weight: double>>, label int, first_file string, first_line long, "
    "last_file string, last_line long, events int, unseen_events int"
)
#: Columns of the UDF's output that gold.anomalies does not keep: the events the model read
#: (each window's first ``seq_len``) and those of templates it was not trained on (the
#: unknown id, or an index outside its vocabulary), summed into the night's report.
COUNT_COLUMNS = ("events", "unseen_events")


@dataclass(frozen=True)
class Scorer:
    """What the executors need: the model as bytes and how to read the windows."""

    model_blob: bytes
    version: str
    threshold: float
    feature_index: tuple[int, ...]
    texts: Mapping[str, str]
    batch_size: int = 1024
    #: every template's semantic vector (:func:`logcrnn.features.vectors_by_id`) for a model
    #: that reads its events' own vectors (``event_vectors``); None otherwise
    vectors: TemplateVectors | None = None


_LOADED: dict[str, Any] = {}


def _model(scorer: Scorer) -> tuple[Any, Any]:
    """The worker's model (loaded once per Python worker and model version) and device."""
    import torch

    from logcrnn.model.crnn import CRNN

    key = scorer.version
    if key not in _LOADED:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _LOADED.clear()
        _LOADED[key] = (CRNN.from_bytes(scorer.model_blob, device=device), device)
    return _LOADED[key]  # type: ignore[no-any-return]


def _fixed_width(pdf: pd.DataFrame, column: str, width: int, dtype: Any) -> np.ndarray:
    """(n, width) array of a list column whose every row must hold ``width`` values."""
    values = pdf[column].tolist()
    bad = [i for i, v in enumerate(values) if v is None or len(v) != width]
    if bad:
        got = values[bad[0]]
        raise DataError(
            f"window {pdf['window_id'].iloc[bad[0]]}: {column} of length "
            f"{0 if got is None else len(got)}, the model takes {width}: the windows were "
            "built with other statistics than the model's"
        )
    return np.asarray(np.stack(values), dtype=dtype)


def batches_by_length(length: np.ndarray, seq_len: int, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of ``length``'s windows in batches of at most ``batch_size``, the windows
    ordered by their length up to ``seq_len`` (stable): the CRNN computes a batch's first
    max(length) positions only, and a window's outputs do not depend on its batch."""
    order = np.argsort(np.minimum(length, seq_len), kind="stable")
    for lo in range(0, len(order), batch_size):
        yield order[lo : lo + batch_size]


def score_frame(pdf: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """Windows (:data:`INPUT_COLUMNS`) -> results (:data:`OUTPUT_DDL`), one row per window."""
    import torch

    model, device = _model(scorer)
    cfg = model.config
    n = len(pdf)
    if n == 0:
        return pd.DataFrame({c.split(" ")[0]: [] for c in _output_names()})
    sequence = _fixed_width(pdf, "sequence", cfg.seq_len, np.int64)
    sequence = np.where(sequence >= cfg.vocab_size, 1, sequence)  # unseen -> unknown
    length = pdf["length"].to_numpy(dtype=np.int64)
    read = np.arange(cfg.seq_len)[None, :] < np.minimum(length, cfg.seq_len)[:, None]
    pick = list(scorer.feature_index)
    feats = np.zeros((n, len(pick)), dtype=np.float32)
    if pick:
        std = np.stack(pdf["features_std"].tolist())
        feats = std[:, pick].astype(np.float32)
    semantic = None
    if cfg.head_semantic and cfg.sem_dim:
        semantic = _fixed_width(pdf, "semantic", cfg.sem_dim, np.float32)
    events = None
    if cfg.event_vectors and cfg.sem_dim and scorer.vectors is not None:
        events = event_vectors(pdf["template_ids"].tolist(), cfg.seq_len, scorer.vectors,
                               cfg.sem_dim)  # fmt: skip
    scores = np.empty(n, dtype=np.float64)
    attention = np.empty((n, cfg.seq_len), dtype=np.float64)
    with torch.no_grad():
        for rows in batches_by_length(length, cfg.seq_len, scorer.batch_size):
            out = model(
                torch.from_numpy(sequence[rows]).to(device),
                torch.from_numpy(length[rows]).to(device),
                torch.from_numpy(feats[rows]).to(device),
                None if semantic is None else torch.from_numpy(semantic[rows]).to(device),
                None if events is None else torch.from_numpy(events[rows]).to(device),
            )
            scores[rows] = torch.sigmoid(out.logit).double().cpu().numpy()
            attention[rows] = out.attention.double().cpu().numpy()
    tops = [
        top_templates(ids, att, scorer.texts)
        for ids, att in zip(pdf["template_ids"].tolist(), attention, strict=True)
    ]
    return pd.DataFrame(
        {
            "window_id": pdf["window_id"],
            "kind": pdf["kind"],
            "key": pdf["key"],
            "start_ts": pdf["start_ts"],
            "end_ts": pdf["end_ts"],
            "score": scores,
            "is_anomaly": scores >= scorer.threshold,
            "top_templates": tops,
            "label": pdf["label"],
            "first_file": pdf["first_file"],
            "first_line": pdf["first_line"],
            "last_file": pdf["last_file"],
            "last_line": pdf["last_line"],
            "events": read.sum(axis=1).astype(np.int32),
            "unseen_events": ((sequence == 1) & read).sum(axis=1).astype(np.int32),
        }
    )


def _output_names() -> list[str]:
    names, depth, cur = [], 0, ""
    for ch in OUTPUT_DDL:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            names.append(cur.strip())
            cur = ""
        else:
            cur += ch
    names.append(cur.strip())
    return names


def top_templates(
    template_ids: Sequence[str] | None, attention: np.ndarray, texts: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The templates with the most attention in one window (weights summed per template).

    ``template_ids``: the window's first ``seq_len`` template ids in order; ``attention``:
    (seq_len,) weights of those positions (zero on padding).
    """
    if template_ids is None or len(template_ids) == 0:  # Arrow hands arrays over as numpy
        return []
    weight: dict[str, float] = {}
    for tid, a in zip(template_ids, attention[: len(template_ids)], strict=False):
        weight[tid] = weight.get(tid, 0.0) + float(a)
    best = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TEMPLATES]
    return [
        {"template_id": t, "template": texts.get(t, ""), "weight": round(w, 6)} for t, w in best
    ]


def score_windows(spark: SparkSession, windows: DataFrame, scorer: Scorer) -> DataFrame:
    """Windows (at least :data:`INPUT_COLUMNS`) -> results (:data:`OUTPUT_DDL`), lazily.

    The scorer is broadcast once; each Arrow batch goes through :func:`score_frame` in an
    iterator UDF (``mapInPandas``).
    """
    bscorer = spark.sparkContext.broadcast(scorer)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        local = bscorer.value
        for pdf in batches:
            yield score_frame(pdf, local)

    return windows.select(*INPUT_COLUMNS).mapInPandas(predict, OUTPUT_DDL)  # type: ignore[arg-type]


@dataclass
class ScoreReport:
    source: str
    night: str
    windows: int
    anomalies: int
    model_version: str
    model_path: str
    threshold: float
    seconds: float
    version: int | None = None
    #: events the model read, and those of them whose template it was not trained on
    #: (:data:`COUNT_COLUMNS`)
    events: int = 0
    unseen_events: int = 0

    @property
    def unseen_share(self) -> float:
        return self.unseen_events / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unseen_share": round(self.unseen_share, 6)}


def score_night(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    source: str,
    night: date | str,
    model: str | Path | None = None,
) -> ScoreReport:
    """Score night ``night`` of ``source`` with the current (or given) model artifact."""
    from logcrnn.model.artifact import current_artifact, load_artifact

    started = time.perf_counter()
    load_source(cfg, source)
    night = date.fromisoformat(str(night))
    path = (
        Path(model)
        if model is not None
        else current_artifact(lake.root, source, cfg.train.models_dir)
    )
    art = load_artifact(path)
    if art.source != source:
        raise DataError(f"{path}: the model was trained for source {art.source}, not {source}")
    windows = lake.read(WINDOWS, night, source) if lake.exists(WINDOWS) else None
    if windows is not None:
        stats_nights = {r.stats_night for r in windows.select("stats_night").distinct().collect()}
        foreign = {s for s in stats_nights if s != art.stats_night}
        if foreign:
            raise DataError(
                f"gold.windows {source} {night} was built with the statistics of "
                f"{', '.join(sorted(str(s) for s in foreign))}, the model {art.version} with "
                f"those of {art.stats_night}: rebuild the windows with --stats "
                f"{art.stats_night} (a model trained on other features or vocabulary "
                "cannot score them)"
            )
    templates = lake.read(TEMPLATES, night, source).collect() if lake.exists(TEMPLATES) else []
    texts = {r.template_id: r.template or "" for r in templates}
    vectors = None
    cfg_model = art.model.config
    if cfg_model.event_vectors and cfg_model.sem_dim and templates:
        # each event reads its own template's vector, those unseen in training included
        stats = load_stats(lake, source, art.stats_night)
        if stats is not None:
            vectors = TemplateVectors.of(vectors_by_id(templates, stats))
    scorer = Scorer(
        model_blob=art.model.to_bytes(),
        version=art.version,
        threshold=float(art.threshold),
        feature_index=tuple(art.feature_index),
        texts=texts,
        vectors=vectors,
    )
    scored_at = datetime.now(UTC)
    # the counts are summed as the rows are written (gold.anomalies drops their columns)
    counted = Observation()
    if windows is None:
        rows = spark.createDataFrame([], OUTPUT_DDL)
    else:
        rows = score_windows(spark, windows, scorer)
    rows = rows.observe(counted, *(F.sum(c).alias(c) for c in COUNT_COLUMNS))
    out = rows.select(
        F.lit(night).alias("night"),
        F.lit(source).alias("source"),
        "*",
        F.lit(art.version).alias("model_version"),
        F.lit(float(art.threshold)).alias("threshold"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
    version = lake.write(out, ANOMALIES, night, source)
    events, unseen = (int(counted.get.get(c) or 0) for c in COUNT_COLUMNS)
    counts = (
        lake.read(ANOMALIES, night, source)
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("is_anomaly").cast("int")).alias("a"))
        .first()
    )
    n = int(counts.n) if counts else 0
    if n == 0:
        log.warning("%s %s: no windows to score; wrote an empty partition", source, night)
    report = ScoreReport(
        source=source,
        night=str(night),
        windows=n,
        anomalies=int(counts.a or 0) if counts else 0,
        model_version=art.version,
        model_path=str(path),
        threshold=float(art.threshold),
        seconds=round(time.perf_counter() - started, 2),
        version=version,
        events=events,
        unseen_events=unseen,
    )
    if report.unseen_share > cfg.score.unseen_warn:
        log.warning(
            "%s %s: %.1f%% of the %d events scored have templates the model %s was not "
            "trained on (score.unseen_warn %.1f%%): its scores may be out of date; train a "
            "model on recent nights",
            source, night, 100 * report.unseen_share, events, art.version,
            100 * cfg.score.unseen_warn,
        )  # fmt: skip
    return report
