"""Header formats against Loghub's own parse of its 2k samples, and compiler unit tests.

For each of the 16 Loghub systems the raw lines go through :func:`logcrnn.ingest.parse_lines`
with the source's configured format, once with the plan the compiler picks and once forced
onto the regex plan, and every line is compared with ``<Sys>_2k.log_structured.csv.gz``.
All sources are parsed in one Spark job per plan (the ``spark`` fixture is conftest's).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from logcrnn.config import SourceSpec, TimestampSpec, load_config, load_source
from logcrnn.errors import ConfigError
from logcrnn.formats import JVM_CUT_FIELDS, CompiledFormat, compile_format
from logcrnn.ingest import parse_lines
from logcrnn.spark import jvm_function

LOGHUB = Path(__file__).resolve().parents[1] / "data" / "sample" / "loghub_2k"
SOURCES = (
    "android apache bgl hadoop hdfs healthapp hpc linux mac openssh openstack proxifier "
    "spark thunderbird windows zookeeper"
).split()
FOLDER = {p.name.lower(): p.name for p in LOGHUB.iterdir() if p.is_dir()}
NIGHT = date(2017, 7, 1)  # yearless formats (syslog, logcat) take the year from the night
MAX_BYTES = 65536
NOT_HEADER = ("LineId", "EventId", "EventTemplate")  # structured CSV columns besides fields
LINE_COLUMNS = "file string, line_no long, value string"


# ------------------------------------------------------------------------------------------
# helpers


@cache
def _spec(name: str) -> SourceSpec:
    return load_source(load_config(None), name)


def _compiled(spec: SourceSpec, plan: str | None = None) -> CompiledFormat:
    compiled = compile_format(spec.format, dict(spec.field_patterns))
    return compiled if plan is None else dataclasses.replace(compiled, plan=plan)


@cache
def _raw_lines(name: str) -> tuple[str, ...]:
    folder = FOLDER[name]
    data = gzip.decompress((LOGHUB / folder / f"{folder}_2k.log.gz").read_bytes())
    lines = re.split(r"\r?\n", data.decode("utf-8"))
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(lines)


@cache
def _structured(name: str) -> tuple[dict[str, str], ...]:
    folder = FOLDER[name]
    path = LOGHUB / folder / f"{folder}_2k.log_structured.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return tuple(csv.DictReader(fh))


def _parse(
    spark: SparkSession,
    spec: SourceSpec,
    lines: list[str],
    plan: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> list[Row]:
    df = spark.createDataFrame([("t.log", i + 1, v) for i, v in enumerate(lines)], LINE_COLUMNS)
    compiled = _compiled(spec, plan)
    out = parse_lines(df, spec, NIGHT, max_bytes, compiled, extra_fields=compiled.fields[:-1])
    return out.orderBy("line_no").collect()


def _utc(*args: int) -> int:
    """Microseconds since the epoch of a UTC wall-clock time."""
    since = datetime(*args, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)  # type: ignore[misc,arg-type]
    return since // timedelta(microseconds=1)


def _hdfs_spec() -> SourceSpec:
    return SourceSpec(
        name="t",
        format="<Date> <Time> <Pid> <Level> <Component>: <Content>",
        timestamp=TimestampSpec(fields=("Date", "Time"), format="yyMMdd HHmmss"),
        level="Level",
        component="Component",
    )


HDFS_LINE = (
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    "blk_38865049064139660 terminating"
)


# ------------------------------------------------------------------------------------------
# all 16 Loghub samples, both plans


@pytest.fixture(scope="module", params=["configured", "regex"])
def parsed(request: pytest.FixtureRequest, spark: SparkSession) -> dict[str, list[Row]]:
    """Every sample line of every source parsed, by source, in line order."""
    plan = None if request.param == "configured" else "regex"
    lines = spark.createDataFrame(
        [(name, i + 1, v) for name in SOURCES for i, v in enumerate(_raw_lines(name))],
        LINE_COLUMNS,
    ).cache()
    parts: list[DataFrame] = []
    for name in SOURCES:
        spec = _spec(name)
        compiled = _compiled(spec, plan)
        part = parse_lines(
            lines.where(F.col("file") == name),
            spec,
            NIGHT,
            MAX_BYTES,
            compiled,
            extra_fields=compiled.fields[:-1],  # every header field, to compare with Loghub
        )
        parts.append(
            part.select(
                "source",
                "line_no",
                "line",
                "parse_ok",
                "parse_error",
                "content",
                "fields",
                "level",
                "component",
                "node",
                "label",
                "session_keys",
                F.unix_micros("ts").alias("ts_us"),
            )
        )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    by_source: dict[str, list[Row]] = {name: [] for name in SOURCES}
    for row in union.collect():
        by_source[row.source].append(row)
    lines.unpersist()
    return {name: sorted(rows, key=lambda r: r.line_no) for name, rows in by_source.items()}


def test_every_source_has_a_sample() -> None:
    assert sorted(FOLDER) == sorted(SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_fields_match_loghub(name: str, parsed: dict[str, list[Row]]) -> None:
    rows, expected = parsed[name], _structured(name)
    assert len(rows) == len(expected) == len(_raw_lines(name)) == 2000
    header = [c for c in expected[0] if c not in (*NOT_HEADER, "Content")]
    failures: list[str] = []
    for row, exp in zip(rows, expected, strict=True):
        assert row.line_no == int(exp["LineId"])
        problems = []
        if not row.parse_ok:
            problems.append(f"parse_error={row.parse_error}")
        if row.content != exp["Content"]:
            problems.append(f"content {row.content!r} != {exp['Content']!r}")
        fields = row.fields or {}
        if sorted(fields) != sorted(header):
            problems.append(f"field names {sorted(fields)} != {sorted(header)}")
        for key in header:
            got = fields.get(key)
            if (got or "").strip() != exp[key].strip():
                problems.append(f"{key} {got!r} != {exp[key]!r}")
        if problems:
            failures.append(f"line {row.line_no}: {row.line[:120]!r}: " + "; ".join(problems))
    assert not failures, f"{len(failures)} lines differ, e.g.\n" + "\n".join(failures[:5])


@pytest.mark.parametrize("name", SOURCES)
def test_named_columns_and_timestamps(name: str, parsed: dict[str, list[Row]]) -> None:
    spec = _spec(name)
    for row in parsed[name]:
        fields = row.fields
        assert row.level == (fields[spec.level] if spec.level else None)
        assert row.component == (fields[spec.component] if spec.component else None)
        assert row.node == (fields[spec.node] if spec.node else None)
        assert row.label == (fields[spec.label.field] if spec.label else None)
        if spec.timestamp is not None:
            assert row.ts_us is not None, row.line
        else:
            assert row.ts_us is None


@pytest.mark.parametrize(
    ("name", "line_no", "micros"),
    [
        ("hdfs", 1, _utc(2008, 11, 9, 20, 36, 15)),  # 081109 203615
        ("bgl", 1, 1117838570 * 1_000_000),  # epoch seconds
        ("healthapp", 1, _utc(2017, 12, 23, 22, 15, 29, 606_000)),  # 20171223-22:15:29:606
        ("healthapp", 952, _utc(2017, 12, 23, 22, 25, 13, 8_000)),  # ...-22:25:13:8 = 8 ms
        ("healthapp", 312, _utc(2017, 12, 23, 22, 16, 0, 119_000)),  # ...-22:16:0:119
        ("android", 1, _utc(2017, 3, 17, 16, 13, 38, 811_000)),  # 03-17 16:13:38.811
        ("apache", 1, _utc(2005, 12, 4, 4, 47, 44)),  # Sun Dec 04 04:47:44 2005
    ],
)
def test_exact_utc_timestamps(
    name: str, line_no: int, micros: int, parsed: dict[str, list[Row]]
) -> None:
    assert parsed[name][line_no - 1].ts_us == micros


def test_hdfs_session_keys_are_the_block_ids(parsed: dict[str, list[Row]]) -> None:
    rows = parsed["hdfs"]
    assert any(len(r.session_keys) > 1 for r in rows)
    for row in rows:
        expected = list(dict.fromkeys(re.findall(r"blk_-?\d+", row.content)))
        assert row.session_keys == expected, row.line


# ------------------------------------------------------------------------------------------
# the compiler on hand-written lines


def test_plan_choice() -> None:
    assert _compiled(_spec("hdfs")).plan == "delimited"
    assert _compiled(_spec("linux")).plan == "regex"  # optional (\[<PID>\])?
    forced = compile_format("<Date> <Content>", {"Date": r"\d{6}"})
    assert forced.plan == "regex"
    assert forced.fields == ("Date", "Content")


@pytest.mark.parametrize(
    ("fmt", "patterns"),
    [
        ("no fields", None),
        ("<A> <A>", None),  # a repeated name
        ("<A> <B> tail", None),  # must end with the message field
        ("<A-1> <B>", None),  # not an identifier
        ("<A> <B>", {"A": "(x)"}),  # a capturing field pattern
    ],
)
def test_bad_formats_are_config_errors(fmt: str, patterns: dict[str, str] | None) -> None:
    with pytest.raises(ConfigError):
        compile_format(fmt, patterns)


@pytest.mark.parametrize("plan", [None, "regex"])
def test_mismatch_keeps_the_line(spark: SparkSession, plan: str | None) -> None:
    lines = ["this line has no colon at all", "", HDFS_LINE]
    rows = _parse(spark, _hdfs_spec(), lines, plan)
    for row in rows[:2]:
        assert not row.parse_ok
        assert row.parse_error == "format_mismatch"
        assert row.content is None and row.fields is None and row.ts is None
    assert [r.line for r in rows] == lines
    assert rows[2].parse_ok
    assert rows[2].fields["Component"] == "dfs.DataNode$PacketResponder"


def test_optional_group_with_and_without_pid(spark: SparkSession) -> None:
    lines = [
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
        "Jun 15 04:06:20 combo logrotate: ALERT exited abnormally with [1]",
        "Jun 15 04:06:20 combo klogind[1]: Authentication failed from 1.2.3.4 [5]: x",
    ]
    rows = _parse(spark, _spec("linux"), lines)
    assert all(r.parse_ok for r in rows)
    first, second, third = rows
    assert first.component == "sshd(pam_unix)" and first.fields["PID"] == "19939"
    assert first.content == "check pass; user unknown"
    assert second.component == "logrotate"
    assert not second.fields["PID"]  # the group did not take part (Loghub: empty)
    assert second.content == "ALERT exited abnormally with [1]"
    assert third.component == "klogind" and third.fields["PID"] == "1"
    assert third.content == "Authentication failed from 1.2.3.4 [5]: x"
    assert first.node == "combo"
    assert first.ts.month == 6 and first.ts.year == NIGHT.year


@pytest.mark.parametrize("plan", [None, "regex"])
def test_line_too_long(spark: SparkSession, plan: str | None) -> None:
    long_line = HDFS_LINE + " x" * 40
    rows = _parse(spark, _hdfs_spec(), [long_line, HDFS_LINE], plan, max_bytes=len(HDFS_LINE))
    assert not rows[0].parse_ok and rows[0].parse_error == "line_too_long"
    assert rows[0].line == long_line and rows[0].content is None
    assert rows[1].parse_ok


@pytest.mark.parametrize("plan", [None, "regex"])
def test_bad_timestamp(spark: SparkSession, plan: str | None) -> None:
    line = HDFS_LINE.replace("081109", "081399")  # month 13
    (row,) = _parse(spark, _hdfs_spec(), [line], plan)
    assert not row.parse_ok
    assert row.parse_error == "bad_timestamp"
    assert row.ts is None
    assert row.fields["Date"] == "081399"  # the header matched: its fields are kept
    assert row.content.startswith("PacketResponder 1")


@pytest.mark.parametrize("plan", [None, "regex"])
def test_surrounding_whitespace_is_not_content(spark: SparkSession, plan: str | None) -> None:
    line = "  " + HDFS_LINE + " \t "
    (row,) = _parse(spark, _hdfs_spec(), [line], plan)
    assert row.parse_ok
    assert row.line == line  # the stored line is untouched
    assert row.fields["Date"] == "081109"
    assert row.content.endswith("terminating")


@pytest.mark.parametrize("plan", [None, "regex"])
def test_multi_character_separators(spark: SparkSession, plan: str | None) -> None:
    """A field runs to the first whole separator, as in Loghub, not to its first character."""
    proxifier = _parse(
        spark,
        _spec("proxifier"),
        ["[10.30 16:51:56] svchost.exe *64 - proxy.cse:5070 close - lifetime <1 sec"],
        plan,
    )[0]
    assert proxifier.fields == {"Time": "10.30 16:51:56", "Program": "svchost.exe *64"}
    assert proxifier.content == "proxy.cse:5070 close - lifetime <1 sec"
    hadoop = _parse(
        spark,
        _spec("hadoop"),
        ["2015-10-18 18:01:47,978 INFO [main] a.b.C:inner: message: with colons"],
        plan,
    )[0]
    assert hadoop.component == "a.b.C:inner"
    assert hadoop.fields["Process"] == "main"
    assert hadoop.content == "message: with colons"


def test_the_java_cut_gives_the_built_ins_fields(spark: SparkSession) -> None:
    """lib/logcrnn/jvm/CutFields.java against the delimited plan's built-ins, on every Loghub
    sample of a delimited source and on lines that fit badly (blanks, missing separators,
    empty pieces, non-ASCII, control characters, null, a 1 MB line)."""
    if shutil.which("javac") is None and not jvm_function(spark, JVM_CUT_FIELDS):
        pytest.skip("no JDK here: make setup could not build the Java functions")
    assert jvm_function(spark, JVM_CUT_FIELDS)
    odd = [
        "",
        " ",
        "\t" + HDFS_LINE + " \r",
        HDFS_LINE.replace(" 148 ", "  148 "),
        HDFS_LINE.replace(": ", ":"),
        HDFS_LINE.replace(": ", ":    "),
        "081109 203615",
        "081109 203615 148 INFO",
        "081109 203615 148 INFO x: ",
        "081109 203615 148 INFO x:  y  ",
        "ünï 203615 ∆ INFO dfs.Ö: 😀 blk_1 \x01 \x02",
        None,
        "081109 203615 148 INFO a: " + "y" * 1_000_000,
        "[10.30 16:51:56] svchost.exe *64 - proxy.cse:5070 close - lifetime <1 sec",
        "[10.30 16:51:56]svchost.exe - x",
        "2015-10-18 18:01:47,978 INFO [main] a.b.C:inner: message: with colons",
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02 RAS KERNEL",
    ]
    checked = 0
    for name in SOURCES:
        compiled = _compiled(_spec(name))
        if compiled.plan != "delimited":
            continue
        rows = [(i, v) for i, v in enumerate([*_raw_lines(name), *odd])]
        df = spark.createDataFrame(rows, "i int, value string")
        java = compiled.apply(df, "value", jvm=True)
        assert "logcrnn.jvm.CutFields" in java._jdf.queryExecution().optimizedPlan().toString()
        built_in = compiled.apply(df, "value", jvm=False)
        assert (
            "logcrnn.jvm.CutFields" not in built_in._jdf.queryExecution().optimizedPlan().toString()
        )
        # a null line: the built-ins' flag is null or false by format (parse_lines: false)
        both = [F.coalesce("_matched", F.lit(False)).alias("m"), "h"]
        got = java.select("i", F.to_json(F.struct(*both)).alias("j"))
        want = built_in.select("i", F.to_json(F.struct(*both)).alias("j"))
        assert got.exceptAll(want).count() == 0 and want.exceptAll(got).count() == 0, name
        assert java.where("_matched").count() >= 0.9 * len(_raw_lines(name)), name
        checked += 1
    assert checked >= 8  # most Loghub formats are delimited


def test_regex_plan_is_linear_on_long_lines(spark: SparkSession) -> None:
    """Tens of thousands of separator look-alikes: no backtracking blow-up, no stack overflow."""
    spec = _spec("hadoop")
    component = "a:" * 20_000 + "b"
    program = " ".join(["x -y"] * 15_000)  # " -y" and " x" start no " - " separator
    lines = [f"2015-10-18 18:01:47,978 INFO [main] {component}: done"]
    prox = [f"[10.30 16:51:56] {program} - done", f"[10.30 16:51:56] {program}"]
    rows = _parse(spark, spec, lines, "regex", max_bytes=1 << 20)
    assert rows[0].parse_ok and rows[0].component == component
    rows = _parse(spark, _spec("proxifier"), prox, "regex", max_bytes=1 << 20)
    assert rows[0].parse_ok and rows[0].fields["Program"] == program
    assert rows[0].content == "done"
    assert not rows[1].parse_ok and rows[1].parse_error == "format_mismatch"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("081109 203615", "yyMMdd HHmmss"),
        ("2015-10-18 18:01:47,978", "yyyy-MM-dd HH:mm:ss,SSS"),
        ("2017-05-16 00:00:00.008", "yyyy-MM-dd HH:mm:ss.SSS"),
        ("17/06/09 20:10:40", "yy/MM/dd HH:mm:ss"),
        ("081309 203615", "yyMMdd HHmmss"),  # month 13
        ("080230 203615", "yyMMdd HHmmss"),  # 30 February
        ("08110 203615", "yyMMdd HHmmss"),  # too short
        ("0811x9 203615", "yyMMdd HHmmss"),  # not a digit
    ],
)
def test_fixed_width_timestamp_agrees_with_to_timestamp(
    spark: SparkSession, text: str, pattern: str
) -> None:
    from logcrnn.formats import fixed_width_timestamp

    fast = fixed_width_timestamp(F.lit(text), pattern)
    assert fast is not None
    row = spark.range(1).select(fast.alias("a"), F.to_timestamp(F.lit(text), pattern).alias("b"))
    got = row.first()
    assert got is not None and got.a == got.b


def test_fixed_width_timestamp_declines_text_patterns() -> None:
    from logcrnn.formats import fixed_width_timestamp

    assert fixed_width_timestamp(F.col("x"), "MMM d HH:mm:ss") is None
    assert fixed_width_timestamp(F.col("x"), "yyyyMMdd-H:m:s") is None
