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

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("bronze.raw_lines", ("night", "source"), RAW_LINES_SCHEMA),
        TableSpec("silver.events", ("night", "source"), EVENTS_SCHEMA),
        TableSpec("silver.templates", ("night", "source"), TEMPLATES_SCHEMA),
        TableSpec("silver.miner_state", ("night", "source"), MINER_STATE_SCHEMA),
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
