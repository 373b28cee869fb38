"""Raw log files into ``bronze.raw_lines``: every line kept, parsed where it can be.

Reading is Spark's text source (plain or compressed files, split across executors); every line
gets its file and 1-based line number; the header fields are cut out with the source's compiled
Loghub format (:mod:`logcrnn.formats`), timestamps normalised to UTC, session keys extracted.
Lines that do not fit are kept with ``parse_ok = false`` and the reason.  Nothing but per-file
counts ever reaches the driver.

Line numbers: Spark reads a large file as several splits, and a split does not know how many
lines came before it.  A first, cheap pass counts lines per split (and the id of its first
row); the second pass numbers each line as ``lines before its split + its index in the split``.
Both passes plan the same scan, so ``monotonically_increasing_id`` gives the same ids in both.
Files read whole, one partition each, need no counting pass (:func:`single_pass` says when).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from logcrnn.config import Config, SourceSpec, load_source
from logcrnn.errors import DataError, UsageError
from logcrnn.filestats import FileStats
from logcrnn.formats import CompiledFormat, compile_format, fixed_width_timestamp
from logcrnn.lake import Lake
from logcrnn.masking import Masker
from logcrnn.schemas import RAW_LINES_SCHEMA
from logcrnn.spark import JVM_CATALOG, jvm_function
from logcrnn.templates import MaskRule

log = logging.getLogger(__name__)

TABLE = "bronze.raw_lines"
#: The project's Java functions the parse uses where the session has them (``logcrnn.spark``).
JVM_UTF8_OK = f"{JVM_CATALOG}.utf8_ok"
JVM_EXTRACT_ALL = f"{JVM_CATALOG}.extract_all"
_ID_MASK = (1 << 33) - 1  # monotonically_increasing_id keeps the row index in the low 33 bits


@dataclass(frozen=True)
class InputFile:
    """One file to ingest: its URI and size in bytes."""

    uri: str
    size: int


@dataclass
class IngestReport:
    """What one ingest run did (printed as JSON with ``--json``)."""

    source: str
    night: str
    files: int
    empty_files: int
    bytes: int
    lines_read: int
    parsed: int
    malformed: int
    malformed_by_reason: dict[str, int]
    seconds: float
    table_version: int

    @property
    def malformed_share(self) -> float:
        return self.malformed / self.lines_read if self.lines_read else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "malformed_share": round(self.malformed_share, 6)}


# ------------------------------------------------------------------------------------------
# inputs


def expand_inputs(spark: SparkSession, patterns: Sequence[str]) -> list[InputFile]:
    """Expand paths, folders and globs into files, through Hadoop's FileSystem (any URI).

    A pattern that matches nothing is a :class:`UsageError` naming it.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        path = jvm.org.apache.hadoop.fs.Path(pattern)
        fs = path.getFileSystem(conf)
        statuses = fs.globStatus(path)
        if not statuses:
            raise UsageError(f"input not found: {pattern}")
        for status in statuses:
            if status.isDirectory():
                it = fs.listFiles(status.getPath(), True)
                while it.hasNext():
                    st = it.next()
                    name = st.getPath().getName()
                    if not name.startswith((".", "_")):
                        found[st.getPath().toString()] = InputFile(
                            st.getPath().toString(), int(st.getLen())
                        )
            else:
                found[status.getPath().toString()] = InputFile(
                    status.getPath().toString(), int(status.getLen())
                )
    if not found:
        raise UsageError(f"no files under: {', '.join(patterns)}")
    return sorted(found.values(), key=lambda f: f.uri)


# ------------------------------------------------------------------------------------------
# reading with line numbers


def _scan(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    return spark.read.text(list(uris)).select(
        F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("row_id"),
        F.col("value"),
    )


def split_offsets(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    """Pass 1: per (file, split) the id of its first row and the lines before the split.

    Returns ``file, block_start, first_id, lines_before, lines`` (one row per split).
    """
    per_split = (
        _scan(spark, uris)
        .groupBy("file", "block_start")
        .agg(F.min("row_id").alias("first_id"), F.count(F.lit(1)).alias("lines"))
    )
    by_file = Window.partitionBy("file").orderBy("block_start")
    return per_split.withColumn(
        "lines_before",
        F.coalesce(
            F.sum("lines").over(by_file.rowsBetween(Window.unboundedPreceding, -1)),
            F.lit(0),
        ),
    )


def read_numbered(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    """Pass 2 of the general plan: ``file, line_no, value`` for every line of ``uris``."""
    splits = split_offsets(spark, uris).collect()  # one row per split, never per line
    table = spark.createDataFrame(
        [(r.file, r.block_start, r.first_id, r.lines_before) for r in splits],
        "file string, block_start long, first_id long, lines_before long",
    )
    lines = _scan(spark, uris).join(F.broadcast(table), ["file", "block_start"])
    return lines.select(
        "file",
        (
            F.col("lines_before")
            + (F.col("row_id") - F.col("first_id")).bitwiseAND(F.lit(_ID_MASK))
            + 1
        ).alias("line_no"),
        "value",
    )


def read_whole_files(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    """``file, line_no, value`` in one pass, valid only under :func:`one_partition_per_file`.

    With each file read as one partition, the row index inside the partition (the low bits
    of ``monotonically_increasing_id``) is the line index.
    """
    return _scan(spark, uris).select(
        "file",
        (F.col("row_id").bitwiseAND(F.lit(_ID_MASK)) + 1).alias("line_no"),
        "value",
    )


_WHOLE = str(1 << 40)


@contextmanager
def one_partition_per_file(spark: SparkSession) -> Iterator[None]:
    """Plan file scans with one file per partition (split size and open cost both huge)."""
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    old = {k: spark.conf.get(k, None) for k in keys}
    for k in keys:
        spark.conf.set(k, _WHOLE)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def single_pass(files: Sequence[InputFile], split_bytes: int, cores: int) -> bool:
    """Whether ``files`` are numbered in one pass, one partition per file.

    Compressed files are read whole anyway, and a file that fits one split is one partition
    either way.  Larger plain files are split across tasks and need the counting pass, unless
    there are at least two files per core and none is more than twice their mean size: then
    a task per file keeps every core busy as splitting would, without reading the files twice.
    ``cores``: the session's default parallelism (the cores of all executors).
    """
    if all(f.uri.endswith(_COMPRESSED) or f.size <= split_bytes for f in files):
        return True
    sizes = [f.size for f in files]
    return len(sizes) >= 2 * max(cores, 1) and max(sizes) * len(sizes) <= 2 * sum(sizes)


def _split_bytes(spark: SparkSession) -> int:
    text = str(spark.conf.get("spark.sql.files.maxPartitionBytes", "128MB"))
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", text.strip().lower())
    if not match:
        return 128 << 20
    return int(match.group(1)) * units.get(match.group(2), 1)


# ------------------------------------------------------------------------------------------
# parsing (pure)


def _utf8_columns(value: Column, jvm: bool = False) -> tuple[Column, Column, Column]:
    """``(text, raw_bytes, valid)``: text is valid UTF-8; raw bytes kept only when it was not.

    Spark's text source keeps a line's bytes as they are.  Pure ASCII lines (byte length =
    character count) skip the check; others are decoded with replacement and compared.  With
    ``jvm`` the project's Java function ``logcrnn_fn.utf8_ok`` gives the same answer from the
    bytes, eight at a time, without counting characters.
    """
    raw = value.cast("binary")
    decoded = F.decode(raw, "UTF-8")
    if jvm:
        valid = F.call_function(JVM_UTF8_OK, value)
    else:
        ascii_only = F.octet_length(value) == F.length(value)
        valid = ascii_only | (F.encode(decoded, "UTF-8") == raw)
    text = F.when(valid, value).otherwise(decoded)
    return text, F.when(~valid, raw), valid


def _timestamp(spec: SourceSpec, header: Column, jvm_zone: str | None = None) -> Column | None:
    ts_spec = spec.timestamp
    if ts_spec is None:
        return None
    if ts_spec.expr:
        ts = F.expr(ts_spec.expr)
    elif ts_spec.epoch_field:
        ts = F.timestamp_seconds(header[ts_spec.epoch_field].cast("long"))
    elif ts_spec.fields and ts_spec.format:
        joined = F.concat_ws(ts_spec.sep, *[header[f] for f in ts_spec.fields])
        fast = fixed_width_timestamp(joined, ts_spec.format, jvm_zone)
        ts = fast if fast is not None else F.to_timestamp(joined, ts_spec.format)
    else:
        raise UsageError(f"source {spec.name}: timestamp needs expr, epoch_field or fields+format")
    if ts_spec.timezone.upper() != "UTC":
        ts = F.to_utc_timestamp(ts, ts_spec.timezone)
    return ts


def _session_keys(spec: SourceSpec, content: Column, jvm: bool = False) -> Column:
    """The distinct matches of the source's session-key regexes in ``content``, in order."""
    if not spec.session_keys:
        return F.array().cast("array<string>")
    if jvm:
        scans = [Masker((MaskRule(key.name, key.regex),)).jvm_scans[0] for key in spec.session_keys]
        arrays = [
            F.call_function(JVM_EXTRACT_ALL, content, F.lit(regex), F.lit(starts))
            for regex, _, starts in scans
        ]
        return arrays[0] if len(arrays) == 1 else F.array_distinct(F.concat(*arrays))
    arrays = [
        F.regexp_extract_all(content, F.lit(f"({key.regex})"), 1) for key in spec.session_keys
    ]
    keys = arrays[0] if len(arrays) == 1 else F.concat(*arrays)
    return F.array_distinct(F.coalesce(keys, F.array().cast("array<string>")))


def parse_lines(
    lines: DataFrame,
    spec: SourceSpec,
    night: date,
    max_parse_bytes: int,
    compiled: CompiledFormat | None = None,
    extra_fields: Sequence[str] | None = None,
    jvm: bool | None = None,
) -> DataFrame:
    """Parse ``file, line_no, value`` rows into the ``bronze.raw_lines`` schema.

    ``jvm``: use the project's Java functions (UTF-8 check, header cut, fixed-width
    timestamps, session keys) where the session has them (None), always (True) or never
    (False); both give the same rows.

    ``fields`` holds the header fields named by ``extra_fields`` (default: the source's
    ``extra_fields``), null when there are none.  ``parse_error`` is one of
    ``invalid_utf8``, ``line_too_long``, ``format_mismatch`` or ``bad_timestamp`` (the header
    matched but its time did not parse); such lines keep their text and whatever fields could
    be read.
    """
    fmt = compiled or compile_format(spec.format, dict(spec.field_patterns))
    spark = lines.sparkSession
    if jvm is None:
        jvm = jvm_function(spark, JVM_UTF8_OK)
    text, raw_bytes, valid = _utf8_columns(F.col("value"), jvm)
    df = lines.select(
        "file",
        "line_no",
        text.alias("line"),
        raw_bytes.alias("raw_bytes"),
        valid.alias("_utf8_ok"),
        F.lit(str(night)).cast("date").alias("night"),
    )
    too_long = F.octet_length("line") > max_parse_bytes
    df = df.withColumn("_parse_in", F.when(~too_long, F.col("line")))
    df = fmt.apply(df, "_parse_in", jvm).withColumn(
        "_matched", F.coalesce(F.col("_matched"), F.lit(False))
    )
    content_field = fmt.fields[-1]
    zone = str(spark.conf.get("spark.sql.session.timeZone")) if jvm else None
    ts = _timestamp(spec, F.col("h"), zone)
    ts_col = ts if ts is not None else F.lit(None).cast("timestamp")

    def field(name: str | None) -> Column:
        if name is None:
            return F.lit(None).cast("string")
        if name not in fmt.fields:
            raise UsageError(f"source {spec.name}: no field {name!r} in its format")
        return F.col("h")[name]

    kept = list(spec.extra_fields if extra_fields is None else extra_fields)
    for name in kept:
        field(name)  # unknown names are a config error
    fields_map = (
        F.map_from_arrays(
            F.array(*[F.lit(f) for f in kept]), F.array(*[F.col("h")[f] for f in kept])
        )
        if kept
        else F.lit(None).cast("map<string,string>")
    )
    label = field(spec.label.field) if spec.label else F.lit(None).cast("string")
    df = df.select(
        "*",
        ts_col.alias("ts"),
        field(spec.level).alias("level"),
        field(spec.component).alias("component"),
        field(spec.node).alias("node"),
        F.col("h")[content_field].alias("content"),
        label.alias("label"),
        F.when(F.col("_matched"), fields_map).alias("fields"),
    )
    has_ts = spec.timestamp is not None
    error = (
        F.when(~F.col("_utf8_ok"), "invalid_utf8")
        .when(too_long, "line_too_long")
        .when(~F.col("_matched"), "format_mismatch")
    )
    if has_ts:
        error = error.when(F.col("ts").isNull(), "bad_timestamp")
    df = df.withColumn("parse_error", error).withColumn("parse_ok", F.col("parse_error").isNull())
    # Session keys come from the message, or from the whole line when the header did not parse
    # (a malformed line still belongs to its block).
    df = df.withColumn(
        "session_keys",
        _session_keys(spec, F.coalesce(F.col("content"), F.col("line")), jvm),
    )
    return df.select(
        *[
            F.col(f.name)
            if f.name not in ("source", "ingested_at")
            else (F.lit(spec.name) if f.name == "source" else F.current_timestamp()).alias(f.name)
            for f in RAW_LINES_SCHEMA.fields
        ]
    )


# ------------------------------------------------------------------------------------------
# the job


_COMPRESSED = (".gz", ".bz2", ".deflate", ".zst", ".lz4", ".snappy", ".xz")


def _find_unreadable(spark: SparkSession, files: Sequence[InputFile]) -> str | None:
    """The first input Spark cannot read to the end (only called after a failed read).

    Spark's error does not name the file, so each file is read on its own, compressed files
    (the usual culprits: a truncated ``.gz``) first.
    """
    ordered = sorted(files, key=lambda f: not f.uri.endswith(_COMPRESSED))
    for f in ordered:
        try:
            spark.read.text(f.uri).select(F.count(F.lit(1))).collect()
        except Exception:  # any failure names this file
            return f.uri
    return None


def _root_cause(exc: BaseException) -> str:
    chain: list[str] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:  # the lake wraps Spark's error
        chain.append(str(cur))
        cur = cur.__cause__
    text = "\n".join(chain)
    for pattern in (
        r"(java\.io\.EOFException[^\n]*)",
        r"(java\.io\.IOException[^\n]*)",
        r"(java\.util\.zip\.\w+Exception[^\n]*)",
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def _counts(
    lake: Lake,
    night: date,
    source: str,
    version: int,
    written: Sequence[FileStats] | None,
) -> tuple[int, int, dict[str, int]]:
    """Lines, input files with lines, and malformed lines by reason of the partition just
    written (at ``version``).

    The footers of the files written (``written``) give the lines and the input files
    whenever each holds the lines of one input file (a task per file or split: the usual
    case), and the number of malformed lines; only malformed rows are then read back, for
    their reasons.  Otherwise the partition's ``file`` and ``parse_error`` are read back.
    """

    def rows() -> DataFrame:  # read only when the footers do not suffice
        return lake.read(TABLE, night=night, source=source, version=version)

    described = [st for st in (written or []) if st.rows]
    if written is not None and all(
        "parse_error" in st.nulls and "file" in st.low and st.low["file"] == st.high.get("file")
        for st in described
    ):
        lines = sum(st.rows for st in described)
        malformed = lines - sum(st.nulls["parse_error"] for st in described)
        reasons: dict[str, int] = {}
        if malformed:
            bad = rows().where(F.col("parse_error").isNotNull()).groupBy("parse_error").count()
            reasons = {r[0]: int(r[1]) for r in bad.collect()}
        return lines, len({st.low["file"] for st in described}), reasons
    counts = rows().groupBy("file", "parse_error").agg(F.count(F.lit(1)).alias("n")).collect()
    reasons = {}
    for r in counts:
        if r["parse_error"] is not None:
            reasons[r["parse_error"]] = reasons.get(r["parse_error"], 0) + int(r["n"])
    return sum(int(r["n"]) for r in counts), len({r["file"] for r in counts}), reasons


def run(
    spark: SparkSession,
    cfg: Config,
    source: str,
    inputs: Sequence[str],
    night: date | str,
    lake: Lake | None = None,
) -> IngestReport:
    """Ingest ``inputs`` as source ``source`` for ``night`` into ``bronze.raw_lines``.

    Replaces that (night, source) partition.  A file Spark cannot read (a truncated ``.gz``)
    raises :class:`DataError` naming it, and nothing is committed.
    """
    started = time.perf_counter()
    night_d = date.fromisoformat(str(night))
    spec = load_source(cfg, source)
    compiled = compile_format(spec.format, dict(spec.field_patterns))
    files = expand_inputs(spark, inputs)
    uris = [f.uri for f in files]
    lake = lake or Lake.from_settings(spark, cfg.lake)
    one_pass = single_pass(files, _split_bytes(spark), spark.sparkContext.defaultParallelism)
    planning = one_partition_per_file(spark) if one_pass else nullcontext()
    try:
        with planning:
            numbered = (read_whole_files if one_pass else read_numbered)(spark, uris)
            bronze = parse_lines(numbered, spec, night_d, cfg.ingest.max_parse_bytes, compiled)
            version, written = lake.write_with_stats(bronze, TABLE, night_d, source=spec.name)
    except Exception as exc:
        if isinstance(exc, (UsageError, DataError)):
            raise
        bad = _find_unreadable(spark, files)
        if bad is not None:
            raise DataError(f"cannot read {bad}: {_root_cause(exc)}; nothing committed") from exc
        raise
    lines_read, files_with_lines, reasons = _counts(lake, night_d, spec.name, version, written)
    malformed = sum(reasons.values())
    report = IngestReport(
        source=spec.name,
        night=str(night_d),
        files=len(files),
        empty_files=len(files) - files_with_lines,
        bytes=sum(f.size for f in files),
        lines_read=lines_read,
        parsed=lines_read - malformed,
        malformed=malformed,
        malformed_by_reason=dict(sorted(reasons.items())),
        seconds=round(time.perf_counter() - started, 3),
        table_version=version,
    )
    log.info("ingested %s", report)
    if report.malformed_share > cfg.ingest.malformed_warn:
        top = max(reasons.items(), key=lambda kv: kv[1])[0]
        log.warning(
            "%s %s: %.1f%% of the %d lines do not parse (mostly %s; ingest.malformed_warn "
            "%.1f%%): has the log format of %s changed? Its format is in %s/%s.yaml",
            spec.name, night_d, 100 * report.malformed_share, lines_read, top,
            100 * cfg.ingest.malformed_warn, spec.name, cfg.sources_dir, spec.name,
        )  # fmt: skip
    return report
