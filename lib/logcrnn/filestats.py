"""Per-file column statistics read from Parquet footers, for Delta add actions.

A Delta add action may carry the file's row count and, per column, its least and greatest
value and its null count.  Readers use them to skip files (a query for one hour of
``bronze.raw_lines``, whose files follow the input files, opens only the files whose
timestamps overlap it: delta-spark's data skipping, delta-rs, DuckDB, Polars); without them
every file of a partition is read.
Spark's Parquet writer already computes these figures for each row group and keeps them in
the file's footer, so the lake reads them there (a few hundred bytes per file, through
Spark's own Parquet library and file system, whatever the URI) rather than scanning data.

What goes into the Delta log is only what is certainly true of every row:

* null counts of the columns at the top level of the schema, and bounds of those of
  numbers, dates, timestamps (UTC) and strings; nested, boolean, binary and decimal columns
  get no bounds, partition columns no figures;
* no bounds for a floating-point column holding a NaN or an infinity (Spark sorts NaN above
  every number, so ``score > 0.9`` must not skip it; parquet-mr records NaN as the greatest
  value and then reports no bounds for the column chunk);
* a bound only when every row group of the file has one (parquet-mr leaves out the bounds
  of a column chunk whose values exceed 4 KB, such as a 1 MB log line);
* a timestamp's bounds widened to whole milliseconds (the Delta log's precision), the
  least rounded down, the greatest up;
* a string's least value cut to its first :data:`STRING_PREFIX` characters when longer
  (a prefix sorts before the string); a longer greatest value is left out, as no short
  string is certain to sort after it in every reader's ordering.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql.types import (
    ArrayType,
    ByteType,
    DataType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructType,
    TimestampType,
)

#: Characters of a long string kept as its file's least value (Delta's own writers keep 32).
STRING_PREFIX = 32

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FileStats:
    """Exact figures of one Parquet file per top-level column: null counts, and bounds of
    those of a kind in :data:`_PLAIN` (``int``, ``float``, ``str``, ``date``, ``datetime``
    in UTC).

    A column is missing from ``low``/``high`` when some row group has no bound for it or
    all its values are null, and from ``nulls`` when some row group has no null count.
    """

    rows: int
    nulls: dict[str, int] = field(default_factory=dict)
    low: dict[str, Any] = field(default_factory=dict)
    high: dict[str, Any] = field(default_factory=dict)

    def delta_json(self, skip: Collection[str] = ()) -> str:
        """The add action's ``stats`` string (columns in ``skip``, the partition columns,
        left out)."""
        stats: dict[str, Any] = {"numRecords": self.rows}
        low = {k: _json_value(v, upper=False) for k, v in self.low.items() if k not in skip}
        high = {k: _json_value(v, upper=True) for k, v in self.high.items() if k not in skip}
        low = {k: v for k, v in low.items() if v is not None}
        high = {k: v for k, v in high.items() if v is not None}
        nulls = {k: v for k, v in self.nulls.items() if k not in skip}
        if low:
            stats["minValues"] = low
        if high:
            stats["maxValues"] = high
        if nulls:
            stats["nullCount"] = nulls
        return json.dumps(stats, separators=(",", ":"))

    @classmethod
    def from_add_action(cls, row: dict[str, Any]) -> FileStats | None:
        """The figures of a row of ``DeltaTable.get_add_actions(flatten=False)`` (an earlier
        version's file committed again), None when it had no row count."""
        if row.get("num_records") is None:
            return None

        def present(part: str) -> dict[str, Any]:
            return {k: v for k, v in (row.get(part) or {}).items() if v is not None}

        return cls(int(row["num_records"]), present("null_count"), present("min"), present("max"))


def _json_value(value: Any, upper: bool) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        sub_ms = value.microsecond % 1000
        value -= timedelta(microseconds=sub_ms)
        if upper and sub_ms:
            value += timedelta(milliseconds=1)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        if len(value) <= STRING_PREFIX:
            return value
        return None if upper else value[:STRING_PREFIX]
    return value


#: The physical type each bounded kind is written as, and how its plain encoding reads.
_PLAIN: dict[type, tuple[str, str | None]] = {
    ByteType: ("INT32", "<i"),
    ShortType: ("INT32", "<i"),
    IntegerType: ("INT32", "<i"),
    DateType: ("INT32", "<i"),  # days since the epoch
    LongType: ("INT64", "<q"),
    TimestampType: ("INT64", "<q"),  # microseconds since the epoch, UTC (when MICROS)
    FloatType: ("FLOAT", "<f"),
    DoubleType: ("DOUBLE", "<d"),
    StringType: ("BINARY", None),  # UTF-8
}


@dataclass(frozen=True)
class Chunk:
    """What a footer says of one column chunk (bounds in their plain encoding)."""

    name: str  # the column's path, parts joined by dots
    physical: str  # INT32, INT64, FLOAT, DOUBLE, BINARY, ...
    logical: str  # the logical type annotation as parquet-mr prints it, "" when none
    values: int
    nulls: int | None
    low: bytes | None
    high: bytes | None


def _decode(kind: DataType, chunk: Chunk, raw: bytes) -> Any:
    """A bound of ``chunk`` as the Python value of ``kind`` (ValueError when it cannot be
    read as one)."""
    physical, layout = _PLAIN[type(kind)]
    if chunk.physical != physical:
        raise ValueError(f"{chunk.name} is {chunk.physical}, not {physical}")
    if layout is None:
        return raw.decode("utf-8")
    (value,) = struct.unpack(layout, raw)
    if isinstance(kind, TimestampType):
        if "MICROS" not in chunk.logical:  # milliseconds or nanoseconds: another scale
            raise ValueError(f"{chunk.name} is {chunk.logical}, not microseconds")
        return _EPOCH + timedelta(microseconds=value)
    if isinstance(kind, DateType):
        return date(1970, 1, 1) + timedelta(days=value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} has no place in a JSON bound")
    return value


def summarise(row_groups: Iterable[tuple[int, Sequence[Chunk]]], schema: StructType) -> FileStats:
    """:class:`FileStats` of a file written with ``schema`` from its row groups' sizes and
    column chunks."""
    kinds = {
        f.name: f.dataType
        for f in schema.fields
        if not isinstance(f.dataType, (ArrayType, MapType, StructType))
    }
    rows = 0
    nulls: dict[str, int] = {}
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    no_nulls: set[str] = set()
    no_bounds: set[str] = set()
    for count, chunks in row_groups:
        rows += count
        seen: set[str] = set()
        for chunk in chunks:
            kind = kinds.get(chunk.name)
            if kind is None:
                continue
            seen.add(chunk.name)
            if chunk.nulls is None:
                no_nulls.add(chunk.name)
            else:
                nulls[chunk.name] = nulls.get(chunk.name, 0) + chunk.nulls
            if type(kind) not in _PLAIN:
                continue
            if chunk.low is None or chunk.high is None:
                # all values null (nothing to bound) or bounds left out: only the null
                # count tells which
                if chunk.nulls != chunk.values:
                    no_bounds.add(chunk.name)
                continue
            try:
                least, greatest = _decode(kind, chunk, chunk.low), _decode(kind, chunk, chunk.high)
            except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
                no_bounds.add(chunk.name)
                continue
            if chunk.name not in low or least < low[chunk.name]:
                low[chunk.name] = least
            if chunk.name not in high or greatest > high[chunk.name]:
                high[chunk.name] = greatest
        # a column without a chunk in some row group is not described by this footer
        no_nulls |= kinds.keys() - seen
        no_bounds |= kinds.keys() - seen
    return FileStats(
        rows=rows,
        nulls={k: v for k, v in nulls.items() if k not in no_nulls},
        low={k: v for k, v in low.items() if k not in no_bounds},
        high={k: v for k, v in high.items() if k not in no_bounds},
    )


def parse_footer_text(text: str) -> list[tuple[int, list[Chunk]]]:
    """The row groups of ``logcrnn.jvm.FooterStats.read``'s text."""
    groups: list[tuple[int, list[Chunk]]] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "rows" and len(parts) == 2:
            groups.append((int(parts[1]), []))
            continue
        name, physical, logical, values, nulls, least, greatest = parts
        groups[-1][1].append(
            Chunk(
                name,
                physical,
                logical,
                int(values),
                None if nulls == "-" else int(nulls),
                None if least == "-" else base64.b64decode(least),
                None if greatest == "-" else base64.b64decode(greatest),
            )
        )
    return groups


def footer_row_groups(footer: Any) -> list[tuple[int, list[Chunk]]]:
    """The row groups of a parquet-mr ``ParquetMetadata`` read through py4j, call by call
    (some ten calls per column chunk: the path when the project's jar is missing)."""
    groups = []
    for block in footer.getBlocks():
        chunks = []
        for column in block.getColumns():
            stats = column.getStatistics()
            primitive = column.getPrimitiveType()
            logical = primitive.getLogicalTypeAnnotation()
            bounded = bool(stats.hasNonNullValue())
            chunks.append(
                Chunk(
                    column.getPath().toDotString(),
                    str(primitive.getPrimitiveTypeName().name()),
                    "" if logical is None else str(logical.toString()),
                    int(column.getValueCount()),
                    int(stats.getNumNulls()) if stats.isNumNullsSet() else None,
                    bytes(stats.getMinBytes()) if bounded else None,
                    bytes(stats.getMaxBytes()) if bounded else None,
                )
            )
        groups.append((int(block.getRowCount()), chunks))
    return groups
