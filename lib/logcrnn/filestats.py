"""Per-file column statistics read from Parquet footers, for Delta add actions.

A Delta add action may carry the file's row count and, per column, its least and greatest
value and its null count.  Readers use them to skip files (a query for one hour of
``gold.anomalies`` opens only the files whose timestamps overlap it: delta-spark's data
skipping, delta-rs, DuckDB, Polars); without them every file of a partition is read.
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

import json
import math
from collections.abc import Collection
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
_BOUNDED = (
    *(ByteType, ShortType, IntegerType, LongType, FloatType, DoubleType),
    *(DateType, TimestampType, StringType),
)


@dataclass(frozen=True)
class FileStats:
    """Exact figures of one Parquet file per top-level column: null counts, and bounds of
    those of a kind in :data:`_BOUNDED` (``int``, ``float``, ``str``, ``date``, ``datetime``
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


def _python_value(kind: DataType, value: Any) -> Any:
    """A parquet-mr statistics value (through py4j) as the Python value of ``kind``."""
    if isinstance(kind, StringType):
        return bytes(value.getBytes()).decode("utf-8")
    if isinstance(kind, TimestampType):  # INT64 microseconds since the epoch, UTC
        return _EPOCH + timedelta(microseconds=int(value))
    if isinstance(kind, DateType):  # INT32 days since the epoch
        return date(1970, 1, 1) + timedelta(days=int(value))
    if isinstance(kind, (FloatType, DoubleType)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{number} has no place in a JSON bound")
        return number
    return int(value)


def read_footer_stats(footer: Any, schema: StructType) -> FileStats:
    """:class:`FileStats` from a parquet-mr ``ParquetMetadata`` (a py4j object) of a file
    written with ``schema``."""
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
    for block in footer.getBlocks():
        rows += int(block.getRowCount())
        seen: set[str] = set()
        for chunk in block.getColumns():
            name = chunk.getPath().toDotString()
            kind = kinds.get(name)
            if kind is None:
                continue
            seen.add(name)
            stats = chunk.getStatistics()
            counted = bool(stats.isNumNullsSet())
            null_count = int(stats.getNumNulls()) if counted else -1
            if counted:
                nulls[name] = nulls.get(name, 0) + null_count
            else:
                no_nulls.add(name)
            if not isinstance(kind, _BOUNDED):
                continue
            if isinstance(kind, TimestampType) and "MICROS" not in str(
                chunk.getPrimitiveType().getLogicalTypeAnnotation()
            ):
                # INT96 or milliseconds (``spark.sql.parquet.outputTimestampType``) would
                # read wrongly as microseconds
                no_bounds.add(name)
                continue
            if not stats.hasNonNullValue():
                # all values null (nothing to bound) or bounds left out: only the null
                # count tells which
                if null_count != int(chunk.getValueCount()):
                    no_bounds.add(name)
                continue
            try:
                least = _python_value(kind, stats.genericGetMin())
                greatest = _python_value(kind, stats.genericGetMax())
            except (ValueError, OverflowError, TypeError):  # UnicodeDecodeError included
                no_bounds.add(name)
                continue
            if name not in low or least < low[name]:
                low[name] = least
            if name not in high or greatest > high[name]:
                high[name] = greatest
        # a column without a chunk in some row group is not described by this footer
        no_nulls |= kinds.keys() - seen
        no_bounds |= kinds.keys() - seen
    return FileStats(
        rows=rows,
        nulls={k: v for k, v in nulls.items() if k not in no_nulls},
        low={k: v for k, v in low.items() if k not in no_bounds},
        high={k: v for k, v in high.items() if k not in no_bounds},
    )
