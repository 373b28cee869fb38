"""Table names, partitioning and column schemas, declared once.

Every table is partitioned by the night it belongs to (``night``, a date) and, where a night is
written per source, by ``source`` too.  A write names a value for every partition column and
replaces exactly that partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from logcrnn.errors import LakeError, UsageError


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its name (``layer.name``), partition columns and declared schema."""

    name: str
    partition_by: tuple[str, ...]
    schema: StructType | None = None
    #: Parquet columns written without a dictionary: values seldom repeated, for which the
    #: writer would look every value up in a dictionary it then drops (docs/BENCHMARKS.md)
    plain_columns: tuple[str, ...] = ()

    @property
    def parquet_options(self) -> dict[str, str]:
        """Writer options for the table's Parquet files (Spark passes them to parquet-mr)."""
        return {f"parquet.enable.dictionary#{c}": "false" for c in self.plain_columns}

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[1]


RAW_LINES_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("file", StringType(), False),
        StructField("line_no", LongType(), False),
        # The line as text.  For a line that is not valid UTF-8, invalid bytes are replaced
        # by U+FFFD here and the exact bytes are kept in raw_bytes.
        StructField("line", StringType(), False),
        StructField("raw_bytes", BinaryType(), True),
        StructField("parse_ok", BooleanType(), False),
        StructField("parse_error", StringType(), True),
        StructField("ts", TimestampType(), True),
        StructField("level", StringType(), True),
        StructField("component", StringType(), True),
        StructField("node", StringType(), True),
        StructField("content", StringType(), True),
        StructField("label", StringType(), True),
        StructField("session_keys", ArrayType(StringType(), False), False),
        StructField("fields", MapType(StringType(), StringType(), True), True),
        StructField("ingested_at", TimestampType(), False),
    ]
)

EVENTS_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("file", StringType(), False),
        StructField("line_no", LongType(), False),
        StructField("ts", TimestampType(), True),
        StructField("level", StringType(), True),
        StructField("component", StringType(), True),
        StructField("node", StringType(), True),
        StructField("session_keys", ArrayType(StringType(), False), False),
        StructField("template_id", StringType(), False),
        # The values the source's mask rules replaced, in text order, then the tokens Drain3
        # generalised to <*> (in token order).
        StructField("parameters", ArrayType(StringType(), False), False),
        StructField("label", StringType(), True),
        # False when bronze could not parse the line: its template comes from the raw text.
        StructField("parse_ok", BooleanType(), False),
        StructField("parse_error", StringType(), True),
    ]
)

TEMPLATES_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("template_id", StringType(), False),
        StructField("template", StringType(), True),
        # The id this one resolves to: itself while live, the newer id once Drain3 generalised
        # or merged its template.
        StructField("current_id", StringType(), False),
        StructField("count", LongType(), False),  # lines of this night
        StructField("total_count", LongType(), False),  # lines of all nights mined so far
        StructField("first_seen", DateType(), False),
        StructField("last_seen", DateType(), True),
    ]
)

MINER_STATE_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("state", BinaryType(), False),
        StructField("templates", IntegerType(), False),
        StructField("logcrnn_version", StringType(), False),
        StructField("created_at", TimestampType(), False),
    ]
)

#: One row per mined night and source: what the windows job needs to plan a night without
#: scanning silver.events (observed while mining writes them, so they always agree).
EVENT_COUNTS_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("files", ArrayType(StringType(), False), False),  # input files, sorted
        StructField("events", LongType(), False),
        StructField("unkeyed", LongType(), False),  # events without a session key
        StructField("untimed", LongType(), False),  # events without a timestamp
    ]
)

WINDOWS_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        # sha1 of source, kind, key, grid_start (and night for count windows), 16 hex chars
        StructField("window_id", StringType(), False),
        StructField("kind", StringType(), False),  # session | time | count
        # the session key (e.g. a block id), or the node / source a time or count window cuts
        StructField("key", StringType(), False),
        # time windows: the grid start (epoch seconds); count windows: the index of the first
        # event in the night's stream of that key; session windows: 0
        StructField("grid_start", LongType(), False),
        StructField("start_ts", TimestampType(), True),  # first and last event; null when
        StructField("end_ts", TimestampType(), True),  # the window is in line order
        # True when some event had no timestamp: the events are then in line order
        # (night, file, line number) and every time-based feature is 0
        StructField("line_order", BooleanType(), False),
        StructField("length", IntegerType(), False),  # events in the window (true length)
        # the first seq_len template ids in event order (not padded)
        StructField("template_ids", ArrayType(StringType(), False), False),
        # the same as vocabulary indices, padded with 0 to seq_len (1 = not in the training
        # vocabulary); counts: events per vocabulary index; semantic: mean template vector
        # (Eq. 1-2); features_std: Eq. 3.  These four are empty until gold.feature_stats exists.
        StructField("sequence", ArrayType(IntegerType(), False), False),
        StructField("counts", ArrayType(IntegerType(), False), False),
        StructField("semantic", ArrayType(DoubleType(), False), False),
        StructField("features", ArrayType(DoubleType(), False), False),  # raw, FEATURE_NAMES
        StructField("features_std", ArrayType(DoubleType(), False), False),
        StructField("label", IntegerType(), True),  # 1 anomaly, 0 normal, null unknown
        StructField("label_source", StringType(), True),  # file | lines | null
        StructField("stats_night", DateType(), True),  # the gold.feature_stats partition used
        # where the window's first and last event are: input file and 1-based line number
        StructField("first_file", StringType(), True),
        StructField("first_line", LongType(), True),
        StructField("last_file", StringType(), True),
        StructField("last_line", LongType(), True),
    ]
)

FEATURE_STATS_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),  # the last night of the training period
        StructField("source", StringType(), False),
        # feature: a numeric feature (mean, std); template: a vocabulary entry (idx, count);
        # token: a template token (Word2Vec vector, idf)
        StructField("kind", StringType(), False),
        StructField("name", StringType(), False),
        StructField("idx", IntegerType(), False),
        StructField("mean", DoubleType(), True),
        StructField("std", DoubleType(), True),
        StructField("count", LongType(), True),
        StructField("idf", DoubleType(), True),
        StructField("vector", ArrayType(DoubleType(), False), True),
        StructField("train_from", DateType(), False),
        StructField("train_to", DateType(), False),
    ]
)

FEATURE_SCORES_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),  # the last night of the training period
        StructField("source", StringType(), False),
        StructField("feature", StringType(), False),
        StructField("idx", IntegerType(), False),  # position in gold.windows.features
        StructField("mutual_information", DoubleType(), False),  # nats
        StructField("rf_importance", DoubleType(), False),
        StructField("mi_rank", IntegerType(), False),  # 1 = most informative
        StructField("rf_rank", IntegerType(), False),
        StructField("score", DoubleType(), False),  # 0.6 mi_rank + 0.4 rf_rank, lower is better
        StructField("rank", IntegerType(), False),
        StructField("chosen", BooleanType(), False),  # rank <= top_k
        StructField("train_from", DateType(), False),
        StructField("train_to", DateType(), False),
        StructField("windows", LongType(), False),  # labelled training windows used
        StructField("seed", IntegerType(), False),
    ]
)

ANOMALIES_SCHEMA = StructType(
    [
        StructField("night", DateType(), False),
        StructField("source", StringType(), False),
        StructField("window_id", StringType(), False),  # gold.windows.window_id
        StructField("kind", StringType(), False),
        StructField("key", StringType(), False),  # session key, node or source
        StructField("start_ts", TimestampType(), True),
        StructField("end_ts", TimestampType(), True),
        StructField("score", DoubleType(), False),  # P(anomalous) from the model, 0..1
        StructField("is_anomaly", BooleanType(), False),  # score >= the calibrated threshold
        # the templates with the most attention in the window, best first
        StructField(
            "top_templates",
            ArrayType(
                StructType(
                    [
                        StructField("template_id", StringType(), False),
                        StructField("template", StringType(), False),
                        StructField("weight", DoubleType(), False),
                    ]
                ),
                False,
            ),
            False,
        ),
        StructField("label", IntegerType(), True),  # the window's label when known
        StructField("first_file", StringType(), True),  # where the first / last raw line is
        StructField("first_line", LongType(), True),
        StructField("last_file", StringType(), True),
        StructField("last_line", LongType(), True),
        StructField("model_version", StringType(), False),
        StructField("threshold", DoubleType(), False),
        StructField("scored_at", TimestampType(), False),
    ]
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("bronze.raw_lines", ("night", "source"), RAW_LINES_SCHEMA),
        TableSpec(
            "silver.events",
            ("night", "source"),
            EVENTS_SCHEMA,
            plain_columns=("parameters.list.element",),
        ),
        TableSpec("silver.templates", ("night", "source"), TEMPLATES_SCHEMA),
        TableSpec("silver.miner_state", ("night", "source"), MINER_STATE_SCHEMA),
        TableSpec("silver.event_counts", ("night", "source"), EVENT_COUNTS_SCHEMA),
        TableSpec("gold.windows", ("night", "source"), WINDOWS_SCHEMA),
        TableSpec("gold.feature_stats", ("night", "source"), FEATURE_STATS_SCHEMA),
        TableSpec("gold.feature_scores", ("night", "source"), FEATURE_SCORES_SCHEMA),
        TableSpec("gold.anomalies", ("night", "source"), ANOMALIES_SCHEMA),
    )
}


def table_spec(name: str) -> TableSpec:
    """The spec of a known table; tests and tools may also use ``scratch.<name>`` tables,
    which are partitioned by ``night`` and take their schema from the first write."""
    if name in TABLES:
        return TABLES[name]
    layer, _, short = name.partition(".")
    if layer == "scratch" and short.isidentifier():
        return TableSpec(name, ("night",))
    raise UsageError(f"unknown table {name!r} (known: {', '.join(sorted(TABLES))})")


def check_schema(actual: StructType, expected: StructType, where: str) -> None:
    """Raise :class:`LakeError` unless ``actual`` has exactly the expected columns and types.

    Nullability is not compared: Spark loosens it freely across transformations.
    """
    got = [(f.name, f.dataType.simpleString()) for f in actual.fields]
    want = [(f.name, f.dataType.simpleString()) for f in expected.fields]
    if got != want:
        missing = [n for n, _ in want if n not in dict(got)]
        extra = [n for n, _ in got if n not in dict(want)]
        changed = [
            f"{n}: {t} (expected {dict(want)[n]})"
            for n, t in got
            if n in dict(want) and dict(want)[n] != t
        ]
        detail = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {extra}" if extra else "",
                f"types {changed}" if changed else "",
                "column order differs" if not (missing or extra or changed) else "",
            )
            if part
        )
        raise LakeError(f"{where}: schema mismatch: {detail}")
