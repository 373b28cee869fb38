"""Fitting on a training period, and distributed feature selection.

``logcrnn select-features --source S --from A --to B`` reads the windows and events of the
training nights A..B only and writes, together (one all-or-nothing job):

* ``gold.feature_stats`` (partition night=B): the numeric features' mean and standard
  deviation (Eq. 3), the template vocabulary (templates seen in training, by count), and the
  template tokens' Spark MLlib Word2Vec vectors with their IDF weights (Eq. 1-2; the IDF is
  MLlib's over the vocabulary's templates as documents);
* ``gold.feature_scores`` (partition night=B): per numeric feature its mutual information with
  the label (nats, over quantile bins, counted with Spark aggregations), its MLlib random
  forest importance, both ranks, the combined score ``0.6 * mi_rank + 0.4 * rf_rank`` and
  whether it is among the ``top_k`` chosen.  Deterministic under ``features.seed``.

The windows job then applies the newest statistics; training and scoring read the chosen
features from ``gold.feature_scores``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from logcrnn.config import Config, FeatureSettings, load_source
from logcrnn.errors import DataError, UsageError
from logcrnn.features import FeatureStats, feature_names, tokenize
from logcrnn.lake import Lake
from logcrnn.mining import write_all

log = logging.getLogger(__name__)

EVENTS = "silver.events"
TEMPLATES = "silver.templates"
WINDOWS = "gold.windows"
STATS = "gold.feature_stats"
SCORES = "gold.feature_scores"

MI_WEIGHT = 0.6
RF_WEIGHT = 0.4
#: The random forest's input is hash-partitioned into this many sorted partitions, so that its
#: bootstrap samples (seeded per partition) are the same on every run and cluster.
RF_PARTITIONS = 4
#: Scores are compared to this many decimals when ranked (see :func:`_ranks`).
TIE_DECIMALS = 9


# --------------------------------------------------------------------------------------------
# fitting the statistics


def fit_vocabulary(events: DataFrame, templates: Sequence[Any]) -> dict[str, int]:
    """Training count per current template id (generalised ids resolve through ``templates``)."""
    current = {r.template_id: r.current_id for r in templates}

    def resolve(tid: str) -> str:
        seen = set()
        while current.get(tid, tid) != tid and tid not in seen:
            seen.add(tid)
            tid = current[tid]
        return tid

    counts: dict[str, int] = defaultdict(int)
    for r in events.groupBy("template_id").agg(F.count(F.lit(1)).alias("n")).collect():
        counts[resolve(r.template_id)] += int(r.n)
    return dict(counts)


def fit_token_vectors(
    spark: SparkSession, texts: Sequence[str], settings: FeatureSettings
) -> dict[str, tuple[np.ndarray, float]]:
    """Word2Vec vectors and IDF weights of the tokens of ``texts`` (Spark MLlib, seeded)."""
    from pyspark.ml.feature import IDF, CountVectorizer, Word2Vec

    docs = [(i, tokenize(t)) for i, t in enumerate(texts)]
    docs = [d for d in docs if d[1]]
    if not docs:
        return {}
    df = spark.createDataFrame(docs, "doc int, tokens array<string>").repartition(1)
    w2v = Word2Vec(
        vectorSize=settings.word2vec_size,
        minCount=1,
        windowSize=5,
        maxIter=settings.word2vec_iterations,
        numPartitions=1,
        seed=settings.seed,
        inputCol="tokens",
        outputCol="v",
    ).fit(df)
    vectors = {r.word: r.vector.toArray() for r in w2v.getVectors().collect()}
    cv = CountVectorizer(inputCol="tokens", outputCol="tf", minDF=1.0).fit(df)
    idf = IDF(inputCol="tf", outputCol="tfidf", minDocFreq=0).fit(cv.transform(df))
    weights = dict(zip(cv.vocabulary, idf.idf.toArray(), strict=True))
    return {w: (np.asarray(v, dtype=np.float64), float(weights[w])) for w, v in vectors.items()}


def feature_moments(windows: DataFrame) -> dict[int, tuple[float, float]]:
    """Mean and population standard deviation of each position of the ``features`` arrays,
    ``{position: (mean, std)}``, the same on every run over the same files.

    Spark's own ``mean`` / ``stddev_pop`` merge the tasks' partial results in the order the
    tasks finish, so with several input files the last bits changed from run to run (and a
    feature's rank with them, where two selection scores were that close).  Here each
    partition's moments are computed within its one task, collected (one row per partition
    and feature), and merged on the driver in partition order (Chan et al.'s pairwise
    update).
    """
    rows = (
        windows.select(F.spark_partition_id().alias("p"), F.posexplode("features").alias("i", "x"))
        .groupBy("p", "i")
        .agg(F.count("x").alias("n"), F.mean("x").alias("mean"), F.var_pop("x").alias("var"))
        .collect()
    )
    merged: dict[int, tuple[int, float, float]] = {}  # i -> (n, mean, population variance)
    for r in sorted(rows, key=lambda r: (r.i, r.p)):
        if not r.n:
            continue
        n_b, mean_b, var_b = int(r.n), float(r.mean), float(r["var"])
        if r.i not in merged:
            merged[r.i] = (n_b, mean_b, var_b)
            continue
        n_a, mean_a, var_a = merged[r.i]
        n = n_a + n_b
        delta = mean_b - mean_a
        var = (n_a * var_a + n_b * var_b + delta * delta * n_a * n_b / n) / n
        merged[r.i] = (n, mean_a + delta * n_b / n, var)
    # one partition: exactly Spark's mean and stddev_pop (sqrt of var_pop)
    return {i: (m, math.sqrt(max(var, 0.0))) for i, (_, m, var) in merged.items()}


def fit_stats(
    spark: SparkSession,
    windows: DataFrame,
    events: DataFrame,
    templates: Sequence[Any],
    names: Sequence[str],
    settings: FeatureSettings,
    train_from: date,
    train_to: date,
) -> FeatureStats:
    """Fit everything the windows job applies, from training-period data only.

    ``windows``: gold.windows rows of the training nights (their raw ``features``);
    ``events``: silver.events rows of the same nights; ``templates``: silver.templates of the
    last training night (texts and ``current_id`` of every template known by then).
    """
    n_feat = len(names)
    moments = feature_moments(windows)
    if len(moments) != n_feat:
        raise DataError(
            f"the training windows ({train_from}..{train_to}) hold {len(moments)} features, "
            f"expected {n_feat}: are there windows in that period, built with this config?"
        )
    mean = np.zeros(n_feat)
    std = np.ones(n_feat)
    for i, (m, sd) in moments.items():
        mean[i] = m
        std[i] = sd if sd > 0 else 1.0
    counts = fit_vocabulary(events, templates)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab = {tid: i + 2 for i, (tid, _) in enumerate(ordered)}
    text = {r.template_id: r.template or "" for r in templates}
    tokens = fit_token_vectors(spark, [text.get(t, "") for t, _ in ordered], settings)
    return FeatureStats(
        night=train_to,
        train_from=train_from,
        train_to=train_to,
        names=tuple(names),
        mean=mean,
        std=std,
        vocab=vocab,
        vocab_counts=counts,
        tokens=tokens,
    )


# --------------------------------------------------------------------------------------------
# scoring the features


def mutual_information(labelled: DataFrame, n_features: int, bins: int) -> list[float]:
    """MI (nats) of each feature with the label over its quantile bins, in Spark.

    Cut points are ``bins - 1`` approximate quantiles per feature (repeated cuts merge, so a
    feature that is mostly one value gets fewer bins); only ``features x bins x 2`` counts
    reach the driver.
    """
    pairs = labelled.select("label", F.posexplode("features").alias("i", "x"))
    probs = [j / bins for j in range(1, bins)]
    cuts = pairs.groupBy("i").agg(
        F.array_distinct(F.percentile_approx("x", probs, 10000)).alias("cuts")
    )
    binned = pairs.join(F.broadcast(cuts), "i").select(
        "i",
        "label",
        F.aggregate(
            "cuts", F.lit(0), lambda acc, c: acc + F.when(F.col("x") > c, 1).otherwise(0)
        ).alias("bin"),
    )
    table: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
    for r in binned.groupBy("i", "bin", "label").agg(F.count(F.lit(1)).alias("n")).collect():
        table[r.i][(r.bin, r.label)] = int(r.n)
    return [_mi(table.get(i, {})) for i in range(n_features)]


def _mi(joint: dict[tuple[int, int], int]) -> float:
    total = sum(joint.values())
    if not total:
        return 0.0
    pb: dict[int, int] = defaultdict(int)
    py: dict[int, int] = defaultdict(int)
    for (b, y), n in joint.items():
        pb[b] += n
        py[y] += n
    mi = 0.0
    for (b, y), n in joint.items():
        mi += n / total * math.log(n * total / (pb[b] * py[y]))
    return max(mi, 0.0)


def rf_importance(labelled: DataFrame, settings: FeatureSettings) -> list[float]:
    """Spark MLlib random-forest feature importances (seeded, deterministic input order)."""
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.functions import array_to_vector

    data = (
        labelled.select(
            "window_id",
            array_to_vector(F.col("features")).alias("fv"),
            F.col("label").cast("double").alias("y"),
        )
        .repartition(RF_PARTITIONS, "window_id")
        .sortWithinPartitions("window_id")
    )
    model = RandomForestClassifier(
        featuresCol="fv",
        labelCol="y",
        numTrees=settings.rf_trees,
        maxDepth=settings.rf_depth,
        seed=settings.seed,
    ).fit(data)
    return [float(v) for v in model.featureImportances.toArray()]


def _ranks(values: Sequence[float]) -> list[int]:
    """1 for the largest value; ties broken by feature position.

    Values equal to :data:`TIE_DECIMALS` decimals are ties: the fitted statistics are sums
    whose last bits depend on the order Spark added rows in, and a difference of 1e-16
    between two features of equal score must not reorder the chosen features (and with
    them every model's input) when only the table's row order changed.
    """
    rounded = [round(float(v), TIE_DECIMALS) for v in values]
    order = sorted(range(len(values)), key=lambda i: (-rounded[i], i))
    ranks = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def combine(
    names: Sequence[str], mi: Sequence[float], rf: Sequence[float], top_k: int
) -> list[dict[str, Any]]:
    """Per feature: both scores and ranks, the combined score, final rank and ``chosen``."""
    mi_rank, rf_rank = _ranks(mi), _ranks(rf)
    score = [MI_WEIGHT * m + RF_WEIGHT * r for m, r in zip(mi_rank, rf_rank, strict=True)]
    order = sorted(range(len(names)), key=lambda i: (score[i], mi_rank[i], i))
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [
        {
            "feature": names[i],
            "idx": i,
            "mutual_information": float(mi[i]),
            "rf_importance": float(rf[i]),
            "mi_rank": mi_rank[i],
            "rf_rank": rf_rank[i],
            "score": float(score[i]),
            "rank": rank[i],
            "chosen": rank[i] <= top_k,
        }
        for i in range(len(names))
    ]


# --------------------------------------------------------------------------------------------
# the job


@dataclass
class SelectionReport:
    """What ``logcrnn select-features`` did."""

    source: str
    train_from: str
    train_to: str
    windows: int
    labelled_windows: int
    anomalous_windows: int
    vocabulary: int
    tokens: int
    scored: bool
    chosen: list[str]
    seconds: float
    versions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nights(lake: Lake, table: str, source: str, first: date, last: date) -> DataFrame:
    df = lake.read(table, source=source)
    return df.where(F.col("night").between(F.lit(first), F.lit(last)))


def select_features(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    source: str,
    train_from: date | str,
    train_to: date | str,
) -> SelectionReport:
    """Fit the statistics and score the features on the nights ``train_from``..``train_to``."""
    started = time.perf_counter()
    load_source(cfg, source)
    first, last = date.fromisoformat(str(train_from)), date.fromisoformat(str(train_to))
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    for table in (WINDOWS, EVENTS, TEMPLATES):
        if not lake.exists(table):
            raise DataError(f"{table} does not exist yet: run logcrnn mine and windows first")
    settings = cfg.features
    names = feature_names(settings.scales)
    windows = _nights(lake, WINDOWS, source, first, last).persist()
    try:
        counts = windows.agg(
            F.count(F.lit(1)).alias("n"), F.count("label").alias("l"), F.sum("label").alias("a")
        ).first()
        assert counts is not None
        n, labelled_n, anomalous = int(counts.n), int(counts.l), int(counts.a or 0)
        if not n:
            raise DataError(f"gold.windows has no {source} windows in {first}..{last}")
        templates = lake.read(TEMPLATES, last, source).collect()
        if not templates:
            raise DataError(f"silver.templates has no {source} templates on {last}")
        events = _nights(lake, EVENTS, source, first, last)
        stats = fit_stats(spark, windows, events, templates, names, settings, first, last)
        writes = [(STATS, spark.createDataFrame(stats.to_rows(), STATS_DDL))]
        scored = 0 < anomalous < labelled_n
        chosen: list[str] = []
        if scored:
            labelled = windows.where(F.col("label").isNotNull())
            mi = mutual_information(labelled, len(names), settings.mi_bins)
            rf = rf_importance(labelled, settings)
            rows = combine(names, mi, rf, settings.top_k)
            chosen = [r["feature"] for r in sorted(rows, key=lambda r: r["rank"]) if r["chosen"]]
            extra = {"train_from": first, "train_to": last, "windows": labelled_n,
                     "seed": settings.seed}  # fmt: skip
            scores = spark.createDataFrame([{**r, **extra} for r in rows], SCORES_DDL)
            writes.append((SCORES, scores))
        else:
            log.warning(
                "%s %s..%s: %d labelled windows, %d anomalous: both classes are needed to "
                "score features; only the statistics are fitted",
                source, first, last, labelled_n, anomalous,
            )  # fmt: skip
        versions = write_all(lake, last, source, writes)
    finally:
        windows.unpersist()
    return SelectionReport(
        source=source,
        train_from=str(first),
        train_to=str(last),
        windows=n,
        labelled_windows=labelled_n,
        anomalous_windows=anomalous,
        vocabulary=len(stats.vocab),
        tokens=len(stats.tokens),
        scored=scored,
        chosen=chosen,
        seconds=round(time.perf_counter() - started, 2),
        versions=versions,
    )


def chosen_features(lake: Lake, source: str, night: date | str | None = None) -> list[str]:
    """The chosen feature names (best first) of ``night``'s scores, else the newest ones."""
    scores = lake.read(SCORES, source=source)
    if night is None:
        latest = scores.agg(F.max("night").alias("n")).first()
        if latest is None or latest.n is None:
            raise DataError(f"{SCORES} has no scores for {source}: run select-features")
        night = latest.n
    rows = scores.where((F.col("night") == F.lit(night)) & F.col("chosen")).orderBy("rank")
    return [r.feature for r in rows.select("feature").collect()]


STATS_DDL = (
    "kind string, name string, idx int, mean double, std double, count long, idf double, "
    "vector array<double>, train_from date, train_to date"
)
SCORES_DDL = (
    "feature string, idx int, mutual_information double, rf_importance double, mi_rank int, "
    "rf_rank int, score double, rank int, chosen boolean, train_from date, train_to date, "
    "windows long, seed int"
)
