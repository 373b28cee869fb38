"""Windows over silver.events: session, time and count windows -> gold.windows.

The kind is chosen per source (``windows:`` in its source file, :class:`WindowsSpec`):

* **session** windows: one per session key; an event whose line names several keys (two HDFS
  block ids) is in each of their sequences.  Events naming no key go to the source's
  ``fallback`` (time or count) windows of their node or source, never nowhere.
* **time** windows of ``size_s`` seconds every ``step_s`` seconds on a grid anchored at the
  epoch, per node or per source; only windows holding events exist.
* **count** windows of ``size`` events every ``step`` events (the seed's overlapping ``W_j``,
  Eq. 5) over a night's stream of a node or source, in event order.

**Midnight rule.**  A window belongs to the night of its first event.  The job for night D
reads nights D-n .. D+n (``features.neighbour_nights``, default 1): of the events of the
neighbour nights only those of session keys seen in night D (session windows) or within one
window size of night D's time range (time windows) are kept, windows are built over all of
them, and only windows whose first event lies in night D are written.  So a session running
from 23:50 on night D into night D+1 is one whole window of night D; night D+1's job sees
it too and drops it.  A window is whole when it spans at most n+1 nights; a night whose
next night is not mined yet may hold sessions that are still running: run (or re-run, it is
idempotent) the windows of night D after mining night D+1.  Count windows are cut within
one night (a stream starts at the night's first event), so every event is in the same
windows whichever night's job looks at it.

**Order.**  Events are ordered by timestamp, then night, file (by name) and line number.
A window with any event lacking a timestamp is put in line order (night, file, line) and
marked ``line_order``; its time-based features are 0.  Events without a timestamp cannot be
placed on a time grid: in time windows they form count windows of their node or source.

**Labels.**  Session windows take the label of their key from a label file (``BlockId,Label``
with Normal/Anomaly) when one is given; otherwise, and for every other window, a window is
anomalous if any of its lines carries a label other than the source's normal value.  A label
file with malformed rows, ids that are not session keys, conflicting duplicates or bad values
is a :class:`DataError`; exact duplicate rows, keys no window of the night has and session
windows without a label are counted in the report and logged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.accumulators import Accumulator, AccumulatorParam
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from logcrnn.config import Config, SourceSpec, WindowsSpec, load_source
from logcrnn.errors import DataError, UsageError
from logcrnn.features import (
    EVENT_FIELDS,
    LABEL_CONFLICT,
    OUTPUT_DDL,
    WINDOW_HASH,
    WINDOW_KEY,
    FeatureContext,
    FeatureStats,
    build_context,
    feature_names,
    partition_features,
)
from logcrnn.lake import Lake
from logcrnn.timing import Phases

log = logging.getLogger(__name__)

EVENTS = "silver.events"
COUNTS = "silver.event_counts"
TEMPLATES = "silver.templates"
WINDOWS = "gold.windows"
STATS = "gold.feature_stats"

ERROR_LEVELS = ("ERROR", "FATAL", "SEVERE", "FAILURE", "CRITICAL", "CRIT", "EMERG", "ALERT")
WARN_LEVELS = ("WARN", "WARNING")
#: line numbers take the low 40 bits of an event's order key, the file's rank the rest
LINE_BITS = 40

#: The grouping columns of assigned events; ``untimed`` separates the line-ordered stream of
#: events without timestamps from the timed one in time/count windows.
GROUP = WINDOW_KEY


# --------------------------------------------------------------------------------------------
# events -> one row per (window, event)


@dataclass(frozen=True)
class FileIndex:
    """What the job needs to plan, per night read: its input files and event counts.

    ``ranks``: every file name's rank in name order (the line order across files);
    per night: ``events``, ``unkeyed`` (no session key), ``untimed`` (no timestamp).
    """

    ranks: dict[str, int]
    events: dict[date, int]
    unkeyed: dict[date, int]
    untimed: dict[date, int]

    @classmethod
    def of(cls, nights: dict[date, tuple[set[str], int, int, int]]) -> FileIndex:
        """From ``night -> (files, events, unkeyed, untimed)``."""
        names = sorted({f for files, *_ in nights.values() for f in files})
        return cls(
            {f: i for i, f in enumerate(names)},
            {n: v[1] for n, v in nights.items()},
            {n: v[2] for n, v in nights.items()},
            {n: v[3] for n, v in nights.items()},
        )


def event_count_columns() -> list[Column]:
    """What silver.event_counts holds, as aggregates over silver.events rows (``files``: the
    sorted input file names, as JSON)."""
    return [
        F.count(F.lit(1)).alias("events"),
        F.sum((F.size("session_keys") == 0).cast("long")).alias("unkeyed"),
        F.sum(F.col("ts").isNull().cast("long")).alias("untimed"),
        F.to_json(F.array_sort(F.collect_set("file"))).alias("files"),
    ]


def scan_index(events: DataFrame) -> dict[date, tuple[set[str], int, int, int]]:
    """:func:`event_count_columns` per night of ``events``: one row per night reaches the
    driver."""
    rows = events.groupBy("night").agg(*event_count_columns()).collect()
    return {
        r.night: (set(json.loads(r.files)), int(r.events), int(r.unkeyed or 0),
                  int(r.untimed or 0))
        for r in rows
    }  # fmt: skip


def file_index(lake: Lake, source: str, nights: list[date]) -> FileIndex:
    """The :class:`FileIndex` of ``nights`` of ``source``.

    From ``silver.event_counts``, which the mining job writes with the events; a night with
    events but no row there (events written by other means) is counted with one scan.
    """
    found: dict[date, tuple[set[str], int, int, int]] = {}
    if lake.exists(COUNTS):
        rows = (
            lake.read(COUNTS, source=source)
            .where(F.col("night").isin(*nights))
            .select("night", "files", "events", "unkeyed", "untimed")
            .collect()
        )
        found = {r.night: (set(r.files), r.events, r.unkeyed, r.untimed) for r in rows}
    missing = [n for n in nights if n not in found and lake.file_uris(EVENTS, source, [n])]
    if missing:
        events = lake.read(EVENTS, missing[0], source)
        for other in missing[1:]:
            events = events.unionByName(lake.read(EVENTS, other, source))
        found.update(scan_index(events))
    return FileIndex.of(found)


#: Up to this many files, ranks are looked up in a literal map (a short linear scan per row);
#: more take a broadcast join.
LITERAL_FILES = 16


def prepare_events(events: DataFrame, ranks: dict[str, int], normal_label: str | None) -> DataFrame:
    """Rows shaped like silver.events -> ``night, source, node, session_keys, ts_us, e``.

    ``e`` is the compact struct the features are computed from (see
    :func:`logcrnn.features.window_features`); ``ts_us`` is the timestamp in microseconds.
    ``ranks`` gives every file's rank (:class:`FileIndex`).
    """
    level = F.upper(F.trim(F.col("level")))
    lvl = (
        F.when(level.isin(*ERROR_LEVELS), 2).when(level.isin(*WARN_LEVELS), 1).otherwise(0)
    ).cast("tinyint")
    if normal_label is None:
        bad = F.lit(None).cast("boolean")
    else:
        bad = F.when(F.col("label").isNull(), F.lit(None).cast("boolean")).otherwise(
            F.trim(F.col("label")) != F.lit(normal_label)
        )
    if len(ranks) <= LITERAL_FILES:
        lookup = F.create_map(*[F.lit(x) for kv in sorted(ranks.items()) for x in kv])
        ranked = events.withColumn("file_rank", lookup[F.col("file")].cast("long"))
    else:
        table = events.sparkSession.createDataFrame(
            sorted(ranks.items()), "file string, file_rank long"
        )
        ranked = events.join(F.broadcast(table), "file")
    seq = F.shiftleft(F.col("file_rank"), LINE_BITS) + F.col("line_no")
    ts_us = F.unix_micros("ts")
    return ranked.select(
        "night",
        "source",
        "node",
        "session_keys",
        ts_us.alias("ts_us"),
        F.struct(
            ts_us.alias("ts"),
            F.unix_date("night").alias("night"),
            seq.alias("seq"),
            F.col("template_id").alias("tid"),
            lvl.alias("lvl"),
            F.size("parameters").cast("int").alias("np"),
            bad.alias("bad"),
        ).alias("e"),
    )


def group_key(rows: DataFrame, by: str) -> Column:
    """The node (falling back to the source when a line has none) or the source."""
    if by == "node":
        return F.coalesce(F.col("node"), F.col("source"))
    return F.col("source")


def session_windows(rows: DataFrame) -> DataFrame:
    """One window per session key: ``GROUP`` columns + ``e`` (keyed rows only)."""
    return rows.where(F.size("session_keys") > 0).select(
        F.lit("session").alias("kind"),
        F.explode(F.array_distinct("session_keys")).alias("key"),
        F.lit(0).cast("long").alias("grid_start"),
        F.lit(False).alias("untimed"),
        "e",
    )


def time_windows(rows: DataFrame, size_s: int, step_s: int, by: str) -> DataFrame:
    """Every timed event in each of the ``size_s / step_s`` grid windows that contain it."""
    per = size_s // step_s
    base = F.floor(F.col("ts_us") / F.lit(1_000_000 * step_s)).cast("long") * step_s
    starts = F.sequence(base - F.lit((per - 1) * step_s), base, F.lit(step_s).cast("long"))
    return rows.where(F.col("ts_us").isNotNull()).select(
        F.lit("time").alias("kind"),
        group_key(rows, by).alias("key"),
        F.explode(starts).alias("grid_start"),
        F.lit(False).alias("untimed"),
        "e",
    )


def count_windows(
    rows: DataFrame, size: int, step: int, by: str, untimed_only: bool = False
) -> DataFrame:
    """Every event in each count window (``size`` events every ``step``) that contains it.

    The events of a key form two streams, the timed ones in time order and the untimed ones
    in line order; positions count from 0 within each, and a window starts at every
    ``step``-th position.  With ``untimed_only`` only the untimed stream is cut.
    """
    keyed = rows.select(
        group_key(rows, by).alias("key"), F.col("ts_us").isNull().alias("untimed"), "e"
    )
    if untimed_only:
        keyed = keyed.where("untimed")
    order = Window.partitionBy("key", "untimed").orderBy(
        F.col("e.ts"), F.col("e.night"), F.col("e.seq")
    )
    pos = F.row_number().over(order).cast("long") - 1
    positioned = keyed.withColumn("pos", pos)
    first = F.greatest(F.lit(0).cast("long"), F.ceil((F.col("pos") - (size - 1)) / step))
    last = F.floor(F.col("pos") / step)
    return positioned.select(
        F.lit("count").alias("kind"),
        "key",
        F.explode(F.sequence(first.cast("long"), last.cast("long"))).alias("j"),
        "untimed",
        "e",
    ).select("kind", "key", (F.col("j") * step).alias("grid_start"), "untimed", "e")


def assign_windows(
    night_rows: DataFrame,
    neighbour_rows: DataFrame | None,
    spec: WindowsSpec,
    unkeyed: bool = True,
    untimed: bool = True,
) -> DataFrame:
    """Night D's rows (and its neighbours') -> ``kind, key, grid_start, untimed, e`` rows.

    ``neighbour_rows`` are the prepared events of the nights around D, already limited to
    what can share a window with night D (see :func:`neighbour_filter`).  ``unkeyed`` /
    ``untimed`` False say the rows hold no event without a session key / timestamp, which
    spares a session source its fallback pass and a time source its line-order pass.
    """
    both = night_rows if neighbour_rows is None else night_rows.unionByName(neighbour_rows)
    parts: list[DataFrame] = []
    if spec.kind == "session":
        parts.append(session_windows(both))
        unkeyed_night = night_rows.where(F.size("session_keys") == 0)
        unkeyed_both = both.where(F.size("session_keys") == 0)
        kind = spec.fallback if unkeyed else None
    else:
        unkeyed_night, unkeyed_both, kind = night_rows, both, spec.kind
    if kind == "time":
        parts.append(time_windows(unkeyed_both, spec.size_s, spec.step_s, spec.by))
        if untimed:
            parts.append(
                count_windows(unkeyed_night, spec.size, spec.step, spec.by, untimed_only=True)
            )
    elif kind == "count":
        parts.append(count_windows(unkeyed_night, spec.size, spec.step, spec.by))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def neighbour_filter(night_rows: DataFrame, neighbours: DataFrame, spec: WindowsSpec) -> DataFrame:
    """The neighbour nights' rows that can share a window with night D's events.

    Session sources: rows of session keys night D has (a semi-join on the key), plus, for
    time fallback windows, unkeyed rows near night D's time range.  Time windows: rows within
    one window size of night D's first and last timestamp.  Count windows need none.
    """
    parts: list[DataFrame] = []
    if spec.kind == "session":
        keys = night_rows.select(F.explode(F.array_distinct("session_keys")).alias("k")).distinct()
        keyed = neighbours.where(F.size("session_keys") > 0)
        hit = keyed.select("*", F.explode(F.array_distinct("session_keys")).alias("k")).join(
            keys, "k", "left_semi"
        )
        # a neighbour row naming two keys of night D must enter once
        parts.append(hit.drop("k").dropDuplicates(["e"]))
        if spec.fallback == "time":
            parts.append(
                _near(night_rows, neighbours.where(F.size("session_keys") == 0), spec.size_s)
            )
    elif spec.kind == "time":
        parts.append(_near(night_rows, neighbours, spec.size_s))
    if not parts:
        return neighbours.limit(0)
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def _near(night_rows: DataFrame, rows: DataFrame, size_s: int) -> DataFrame:
    bounds = night_rows.agg(F.min("ts_us").alias("lo"), F.max("ts_us").alias("hi")).first()
    if bounds is None or bounds.lo is None:
        return rows.limit(0)
    margin = size_s * 1_000_000
    return rows.where(F.col("ts_us").between(F.lit(bounds.lo - margin), F.lit(bounds.hi + margin)))


def line_refs(spark: SparkSession, ranks: dict[str, int]) -> list[Column]:
    """``first_file, first_line, last_file, last_line`` from ``first_seq`` / ``last_seq``.

    The file names come from a literal array indexed by rank (one entry per input file of
    the nights read: small, and no join of the wide window rows).
    """
    names = [name for name, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    files = F.array(*[F.lit(n) for n in names]) if names else F.array().cast("array<string>")
    mask = (1 << LINE_BITS) - 1
    out = []
    for end in ("first", "last"):
        seq = F.col(f"{end}_seq")
        rank = F.shiftright(seq, LINE_BITS).cast("int")
        out.append(F.element_at(files, rank + 1).alias(f"{end}_file"))
        out.append((seq.bitwiseAND(F.lit(mask))).alias(f"{end}_line"))
    return out


def window_events(
    assigned: DataFrame, labels: DataFrame | None = None, partitions: int | None = None
) -> DataFrame:
    """Assigned rows -> one flat row per (window, event), each window's rows in one partition.

    Columns: ``GROUP``, the event fields (``EVENT_FIELDS``, from ``e``), ``file_label`` and
    ``wh``, a 64-bit hash of ``GROUP``.  The rows are hash-partitioned by ``wh`` into
    ``partitions`` partitions (Spark's default when None), in no particular order: the
    feature step groups each partition by ``wh`` in numpy
    (:func:`logcrnn.features.group_windows`), which costs a fraction of Spark's sort of the
    rows.  Flat rows of primitive columns shuffle in Spark's binary format and reach Python
    as flat Arrow columns, where a ``collect_list`` of structs would build, serialise and
    convert one nested list per window.

    ``labels`` (``key, file_label``) ride in the same shuffle as rows without an event (and
    with a ``file_label``, which event rows lack), so session windows get their file label
    without a second join of the wide window rows.
    """
    rows = assigned.select(
        *GROUP,
        *[F.col("e")[name].alias(name) for name in EVENT_FIELDS],
        F.lit(None).cast("int").alias("file_label"),
    )
    if labels is not None:
        types = {f.name: f.dataType for f in rows.schema.fields}
        label_rows = labels.select(
            F.lit("session").alias("kind"),
            "key",
            F.lit(0).cast("long").alias("grid_start"),
            F.lit(False).alias("untimed"),
            *[F.lit(None).cast(types[name]).alias(name) for name in EVENT_FIELDS],
            F.col("file_label").cast("int").alias("file_label"),
        )
        rows = rows.unionByName(label_rows)
    rows = rows.withColumn(WINDOW_HASH, F.xxhash64(*GROUP))
    if partitions is None:
        return rows.repartition(WINDOW_HASH)
    return rows.repartition(partitions, WINDOW_HASH)


#: Rows of :func:`window_events` per partition the windows job aims at: the feature step
#: holds one partition in memory (about 100 bytes a row in Arrow, twice while sorting).
PARTITION_ROWS = 1_000_000


def window_partitions(
    spark: SparkSession, spec: WindowsSpec, events: int, unkeyed: int
) -> int | None:
    """Partitions for the window rows of ``events`` (``unkeyed`` of them without a session
    key), at most about :data:`PARTITION_ROWS` each: None (Spark's shuffle partitions, which
    adaptive execution may coalesce) when those are enough, else the number needed.  An
    event is in ``size / step`` time or count windows; a label file adds at most a row per
    session, which the estimate leaves out."""

    def per_event(kind: str) -> int:
        if kind == "time":
            return -(-spec.size_s // spec.step_s)
        return -(-spec.size // spec.step) if kind == "count" else 1

    if spec.kind == "session":
        rows = (events - unkeyed) + unkeyed * per_event(spec.fallback)
    else:
        rows = events * per_event(spec.kind)
    floor = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
    needed = -(-rows // PARTITION_ROWS)
    return None if needed <= floor else needed


#: Per partition id: (label rows, distinct label keys, anomaly label rows) the feature
#: step saw.
Tallies = dict[int, tuple[int, int, int]]


def window_rows(
    rows: DataFrame, ctx: FeatureContext, tallies: Accumulator[Tallies] | None = None
) -> DataFrame:
    """:func:`window_events` rows -> features (``OUTPUT_DDL`` columns) on the executors, in
    Arrow: one row per window holding at least one event.  ``tallies`` (an accumulator of
    :class:`_ByPartition`) gets each partition's :data:`Tallies`."""
    if tallies is None:
        return rows.mapInArrow(partition_features(ctx), OUTPUT_DDL)

    def done(tally: dict[str, int]) -> None:
        from pyspark import TaskContext

        task = TaskContext.get()
        part = task.partitionId() if task else 0
        tallies.add({part: (tally["label_rows"], tally["label_keys"], tally["label_anomalies"])})

    return rows.mapInArrow(partition_features(ctx, done), OUTPUT_DDL)


def window_id(source: str) -> Column:
    """A stable id: source, kind, key, grid start, line order (and night for count windows)."""
    night_part = F.when(F.col("kind") == "count", F.col("night").cast("string")).otherwise("")
    text = F.concat_ws(
        "\x1f",
        F.lit(source),
        F.col("kind"),
        F.col("key"),
        F.col("grid_start").cast("string"),
        F.col("line_order").cast("string"),
        night_part,
    )
    return F.substring(F.sha1(text), 1, 16)


# --------------------------------------------------------------------------------------------
# labels


@dataclass
class LabelReport:
    """What a label file held (rows counted, not collected)."""

    path: str
    rows: int
    anomalies: int
    duplicate_rows: int


#: What a label-file row that is not valid raises in the job that reads it (the windows job
#: then runs :func:`check_label_rows` to name the file's bad rows).
LABEL_ROW_ERROR = "a label file row that is not valid"


def session_labels(spark: SparkSession, path: str | Path, key_regex: str | None) -> DataFrame:
    """The ``key, file_label`` rows of a ``BlockId,Label`` file, read by the executors.

    The header and the presence of data rows are checked here (a :class:`DataError`); the
    rows themselves in the job that reads them, with no pass of their own: a row without
    exactly two fields, with an empty id, a label other than Normal/Anomaly (any case) or
    an id that is not a session key fails that job (:data:`LABEL_ROW_ERROR`), and the
    windows job then names them with :func:`check_label_rows`.  Duplicate ids are checked
    in the shuffle that brings each key's label rows to its window: an id labelled both ways
    fails the job (:func:`label_conflicts` names them), exact duplicates are counted.
    """
    rows = _label_rows(spark, path)
    label = F.when(
        ~_bad_shape() & ~_bad_value() & ~_bad_key(key_regex),
        (F.col("value") == "anomaly").cast("int"),
    ).otherwise(F.raise_error(F.lit(f"{LABEL_ROW_ERROR} in {path}")))
    return rows.select("key", label.alias("file_label"))


def _bad_shape() -> Column:
    return (F.col("fields") != 2) | (F.col("key") == "")


def _bad_value() -> Column:
    return ~F.coalesce(F.col("value").isin("normal", "anomaly"), F.lit(False))


def _bad_key(key_regex: str | None) -> Column:
    return ~F.col("key").rlike(f"^(?:{key_regex})$") if key_regex else F.lit(False)


def check_label_rows(spark: SparkSession, path: str | Path, key_regex: str | None) -> None:
    """Raise :class:`DataError` naming the label file, how many rows are not valid and up to
    three of them (see :func:`session_labels`); one pass over the file on the executors,
    only counts and the examples reach the driver."""
    rows = _label_rows(spark, path)
    bad_shape, bad_value, bad_key = _bad_shape(), _bad_value(), _bad_key(key_regex)
    checks = rows.agg(
        F.sum(bad_shape.cast("int")).alias("shape"),
        F.sum((~bad_shape & bad_value).cast("int")).alias("value"),
        F.sum((~bad_shape & ~bad_value & bad_key).cast("int")).alias("key"),
    ).first()
    assert checks is not None

    def fail(what: str, cond: Column, count: int) -> None:
        examples = rows.where(cond).select("line").limit(3).collect()
        shown = "; ".join(repr(r.line) for r in examples)
        raise DataError(f"{path}: {count} rows with {what}, e.g. {shown}")

    if checks.shape:
        fail("other than two fields or an empty id", bad_shape, checks.shape)
    if checks.value:
        fail("a label other than Normal/Anomaly", bad_value, checks.value)
    if checks.key:
        fail("an id that is not a session key", bad_key, checks.key)


def _label_rows(spark: SparkSession, path: str | Path) -> DataFrame:
    """``line, fields, key, value`` per data row of a label file (header checked here)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"label file not found: {path}")
    with p.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
        fields = [f.strip().strip('"') for f in header.strip().lstrip("\ufeff").split(",")]
        if len(fields) != 2 or fields[1].lower() != "label" or not fields[0]:
            raise DataError(
                f"{path}: expected a header of two columns like BlockId,Label, "
                f"got {header.strip()!r}"
            )
        if not any(line.strip() for line in fh):
            raise DataError(f"{path}: no label rows")
    text = F.regexp_replace(F.col("value"), r"\r$", "")
    lines = (
        spark.read.text(str(p.resolve()))
        .select(text.alias("line"))
        .where((F.col("line") != header.rstrip("\r\n")) & (F.trim("line") != ""))
    )
    parts = F.split(F.regexp_replace("line", '"', ""), ",")
    return lines.select(
        "line",
        F.size(parts).alias("fields"),
        F.trim(parts.getItem(0)).alias("key"),
        F.lower(F.trim(parts.getItem(1))).alias("value"),
    )


def label_conflicts(spark: SparkSession, path: str | Path) -> DataError | None:
    """The error for ids of the label file labelled both Normal and Anomaly (their count and
    up to three of them), or None: a grouping of the file by id, run when the windows job
    found a conflict, to name them all."""
    per_key = (
        _label_rows(spark, path)
        .groupBy("key")
        .agg(F.min("value").alias("lo"), F.max("value").alias("hi"))
        .where(F.col("lo") != F.col("hi"))
    )
    count = per_key.count()
    if not count:
        return None
    examples = per_key.select("key").orderBy("key").limit(3).collect()
    return DataError(
        f"{path}: {count} ids labelled both Normal and Anomaly, e.g. "
        + ", ".join(r.key for r in examples)
    )


def _caused_by(exc: BaseException, text: str) -> bool:
    """Whether ``text`` is in the message of ``exc`` or of an exception that caused it (a
    Python error on an executor reaches the driver inside Spark's and the lake's)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if text in str(cur):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class _ByPartition(AccumulatorParam[Tallies]):
    """Per-partition tallies, merged by partition id: a partition computed twice (a retried
    task, a lost shuffle file) is counted once."""

    def zero(self, value: Tallies) -> Tallies:
        return {}

    def addInPlace(self, a: Tallies, b: Tallies) -> Tallies:
        a.update(b)
        return a


# --------------------------------------------------------------------------------------------
# the nightly job


@dataclass
class WindowsReport:
    """What one night's windows job did (printed by ``logcrnn windows``)."""

    source: str
    night: str
    events: int
    unkeyed_events: int
    neighbour_nights: list[str]
    windows: dict[str, int]
    line_order_windows: int
    labelled_windows: int
    anomalous_windows: int
    unlabelled_session_windows: int
    label_file: dict[str, Any] | None
    labels_not_in_night: int | None
    stats_night: str | None
    seconds: float
    version: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_stats(lake: Lake, source: str, stats_night: date | str | None) -> FeatureStats | None:
    """The fitted statistics of ``stats_night``, else the latest for the source, else None."""
    if not lake.exists(STATS):
        if stats_night is not None:
            raise UsageError(f"{STATS} does not exist: run logcrnn select-features first")
        return None
    if stats_night is None:
        latest = lake.read(STATS, source=source).agg(F.max("night").alias("n")).first()
        if latest is None or latest.n is None:
            return None
        stats_night = latest.n
    night = date.fromisoformat(str(stats_night))
    rows = lake.read(STATS, night, source).collect()
    if not rows:
        raise UsageError(f"{STATS} has no statistics for {source} on {night}")
    return FeatureStats.from_rows(night, rows)


def build_windows(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    source: str,
    night: date | str,
    labels: str | Path | None = None,
    stats_night: date | str | None = None,
    use_stats: bool = True,
    stats: FeatureStats | None = None,
) -> WindowsReport:
    """Build night ``night``'s windows of ``source`` from silver.events into gold.windows.

    The vocabulary-dependent columns use ``stats`` when given (``logcrnn evaluate`` fits
    them on its training split), else the statistics of ``stats_night`` or the newest ones
    in gold.feature_stats (unless ``use_stats`` is False).
    """
    started = time.perf_counter()
    spec = load_source(cfg, source)
    night = date.fromisoformat(str(night))
    phase = Phases(f"{source} {night}", log)
    if not lake.exists(EVENTS):
        raise DataError(f"{EVENTS} does not exist yet: run logcrnn mine first")
    if stats is None and use_stats:
        stats = load_stats(lake, source, stats_night)
    names = feature_names(cfg.features.scales)
    if stats is not None and stats.names != names:
        raise DataError(
            f"{STATS} of {stats.night} was fitted for other features ({len(stats.names)}); "
            "run logcrnn select-features again"
        )
    templates = lake.read(TEMPLATES, night, source).collect() if lake.exists(TEMPLATES) else []
    ctx = build_context(
        templates,
        cfg.features.seq_len,
        cfg.features.scales,
        night,
        stats,
        nearest=cfg.features.nearest_template,
    )

    events = lake.read(EVENTS, night, source)
    span = cfg.features.neighbour_nights if spec.windows.kind != "count" else 0
    others = [night + timedelta(days=d) for d in range(-span, span + 1) if d]
    index = file_index(lake, source, [night, *others])
    if not index.events.get(night):
        # a night without data is not an error: its partition is emptied and said so
        from logcrnn.schemas import WINDOWS_SCHEMA

        log.warning("%s %s: no events in %s; gold.windows gets an empty partition",
                    source, night, EVENTS)  # fmt: skip
        empty = spark.createDataFrame([], WINDOWS_SCHEMA)
        version = lake.write(empty, WINDOWS, night, source)
        return WindowsReport(
            source=source, night=str(night), events=0, unkeyed_events=0, neighbour_nights=[],
            windows={}, line_order_windows=0, labelled_windows=0, anomalous_windows=0,
            unlabelled_session_windows=0, label_file=None, labels_not_in_night=None,
            stats_night=str(stats.night) if stats else None,
            seconds=round(time.perf_counter() - started, 2), version=version,
        )  # fmt: skip
    present = sorted(n for n in index.events if n != night)
    phase(f"statistics, templates, file index ({len(present)} neighbour nights)")
    normal = spec.label.normal if spec.label else None
    night_rows = prepare_events(events, index.ranks, normal)
    neighbour_rows = None
    if present:
        rows = lake.read(EVENTS, present[0], source)
        for other in present[1:]:
            rows = rows.unionByName(lake.read(EVENTS, other, source))
        neighbour_rows = neighbour_filter(
            night_rows, prepare_events(rows, index.ranks, normal), spec.windows
        )
    unkeyed = any(index.unkeyed.get(n) for n in (night, *present))
    untimed = bool(index.untimed.get(night))

    label_report = None
    file_labels = None
    if labels is not None:
        if spec.windows.kind != "session":
            raise UsageError(f"--labels needs session windows; {source} has {spec.windows.kind}")
        key_regex = "|".join(k.regex for k in spec.session_keys) or None
        file_labels = session_labels(spark, labels, key_regex)
    tallies = spark.sparkContext.accumulator({}, _ByPartition())
    assigned = assign_windows(night_rows, neighbour_rows, spec.windows, unkeyed, untimed)
    nights_read = (night, *present)
    partitions = window_partitions(
        spark,
        spec.windows,
        sum(index.events.get(n, 0) for n in nights_read),
        sum(index.unkeyed.get(n, 0) for n in nights_read),
    )
    built = window_rows(window_events(assigned, file_labels, partitions), ctx, tallies)
    if labels is not None:
        is_session = F.col("kind") == "session"
        label = F.when(is_session, F.col("file_label")).otherwise(F.col("line_label"))
        label_source = F.when(is_session & F.col("file_label").isNotNull(), "file").when(
            ~is_session & F.col("line_label").isNotNull(), "lines"
        )
    else:
        label = F.col("line_label")
        label_source = F.when(F.col("line_label").isNotNull(), "lines")
    built = built.withColumn("night", F.lit(night)).withColumn("window_id", window_id(source))
    out = built.select(
        F.lit(night).alias("night"),
        F.lit(source).alias("source"),
        "window_id", "kind", "key", "grid_start", "start_ts", "end_ts", "line_order", "length",
        "template_ids", "sequence", "counts", "semantic", "features", "features_std",
        label.cast("int").alias("label"),
        label_source.alias("label_source"),
        F.lit(stats.night if stats else None).cast("date").alias("stats_night"),
        *line_refs(spark, index.ranks),
    )  # fmt: skip
    try:
        version = lake.write(out, WINDOWS, night, source)
    except Exception as exc:
        if labels is not None and _caused_by(exc, LABEL_ROW_ERROR):
            check_label_rows(spark, labels, key_regex)  # raises, naming the rows
        if labels is not None and _caused_by(exc, LABEL_CONFLICT):
            conflict = label_conflicts(spark, labels)
            if conflict is not None:
                raise conflict from None
        raise
    phase("windows built and written")
    if labels is not None:
        # every label row went through the feature step, which counted them
        n_rows, n_keys, n_anomalies = (sum(t[i] for t in tallies.value.values()) for i in range(3))
        label_report = LabelReport(str(labels), n_rows, n_anomalies, n_rows - n_keys)
        if label_report.duplicate_rows:
            log.warning("%s: %d duplicate label rows (same id, same label) ignored", labels,
                        label_report.duplicate_rows)  # fmt: skip
    report = _report(lake, spec, night, index, present, label_report)
    phase("report")
    report.stats_night = str(stats.night) if stats else None
    report.version = version
    report.seconds = round(time.perf_counter() - started, 2)
    log.info("%s %s: %s", source, night, report.windows)
    return report


def _report(
    lake: Lake,
    spec: SourceSpec,
    night: date,
    index: FileIndex,
    present: list[date],
    label_report: LabelReport | None,
) -> WindowsReport:
    written = lake.read(WINDOWS, night, spec.name)
    per_kind = (
        written.groupBy("kind")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.col("line_order").cast("int")).alias("line_order"),
            F.count("label").alias("labelled"),
            F.sum("label").alias("anomalous"),
            F.sum(F.col("label").isNull().cast("int")).alias("unlabelled"),
            F.sum((F.col("label_source") == "file").cast("int")).alias("from_file"),
        )
        .collect()
    )
    by_kind = {r.kind: int(r.n) for r in per_kind}

    def total(what: str, kind: str | None = None) -> int:
        return sum(int(r[what] or 0) for r in per_kind if kind is None or r.kind == kind)

    not_in_night = None
    if label_report is not None:
        distinct_keys = label_report.rows - label_report.duplicate_rows
        not_in_night = distinct_keys - total("from_file")
    unlabelled = total("unlabelled", "session")
    if label_report is not None and unlabelled:
        log.warning("%s %s: %d session windows have no label in %s", spec.name, night,
                    unlabelled, label_report.path)  # fmt: skip
    return WindowsReport(
        source=spec.name,
        night=str(night),
        events=index.events.get(night, 0),
        unkeyed_events=index.unkeyed.get(night, 0) if spec.windows.kind == "session" else 0,
        neighbour_nights=[str(n) for n in present],
        windows=by_kind,
        line_order_windows=total("line_order"),
        labelled_windows=total("labelled"),
        anomalous_windows=total("anomalous"),
        unlabelled_session_windows=unlabelled if label_report is not None else 0,
        label_file=asdict(label_report) if label_report else None,
        labels_not_in_night=not_in_night,
        stats_night=None,
        seconds=0.0,
        version=-1,
    )
