"""Ingestion: every line kept with its file and line number; bad input flagged, never lost."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from logcrnn import ingest
from logcrnn.cli import main
from logcrnn.config import Config, SessionKey, load_source
from logcrnn.errors import DataError, UsageError
from logcrnn.lake import Lake
from logcrnn.spark import jvm_function

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
CONF_SOURCES = Path(__file__).resolve().parents[1] / "conf" / "sources"

NIGHT = "2008-11-09"
GOOD = (
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    "blk_38865049064139660 terminating"
)


def _lines_of(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.splitlines()


def _bronze(lake: Lake, source: str = "hdfs"):  # type: ignore[no-untyped-def]
    return lake.read("bronze.raw_lines", night=NIGHT, source=source)


@pytest.fixture()
def lake(spark: SparkSession, tmp_path: Path) -> Lake:
    return Lake(spark, str(tmp_path / "lake"))


def test_real_sample_every_line_kept_in_order(spark: SparkSession, cfg: Config, lake: Lake) -> None:
    path = SAMPLE / "hdfs" / "HDFS_20000.log.gz"
    report = ingest.run(spark, cfg, "hdfs", [str(path)], NIGHT, lake=lake)
    expected = [b.decode() for b in _lines_of(path)]
    rows = _bronze(lake).orderBy("line_no").select("line_no", "line", "parse_ok").collect()
    assert [r.line_no for r in rows] == list(range(1, 20001))
    assert [r.line for r in rows] == expected
    assert all(r.parse_ok for r in rows)
    assert (report.lines_read, report.parsed, report.malformed) == (20000, 20000, 0)
    first = _bronze(lake).where("line_no = 1").first()
    assert first is not None
    assert str(first.ts) == "2008-11-09 20:35:18"
    assert (first.level, first.component) == ("INFO", "dfs.DataNode$DataXceiver")
    assert first.session_keys == ["blk_-1608999687919862906"]
    assert first.fields == {"Pid": "143"}
    # every block id of the log appears in session_keys (1,782 distinct, per the manifest)
    n_blocks = _bronze(lake).select(F.explode("session_keys")).distinct().count()
    assert n_blocks == 1782


@contextmanager
def _split_size(spark: SparkSession, size: str) -> Iterator[None]:
    """Plain files are split into parts of ``size`` bytes inside the ``with`` block."""
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", size)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset("spark.sql.files.maxPartitionBytes")
        else:
            spark.conf.set("spark.sql.files.maxPartitionBytes", old)


def test_line_numbers_across_splits_and_files(
    spark: SparkSession, cfg: Config, lake: Lake, tmp_path: Path
) -> None:
    big = tmp_path / "big.log"
    lines = [f"081109 2036{i % 60:02d} {i} INFO c: message {i} blk_{i}" for i in range(30000)]
    big.write_text("\n".join(lines) + "\n")
    small = tmp_path / "small.log"
    small.write_text("\n".join(lines[:7]))  # no trailing newline
    with _split_size(spark, "65536"):  # ~30 splits of big.log
        ingest.run(spark, cfg, "hdfs", [str(tmp_path / "*.log")], NIGHT, lake=lake)
    got = {
        (Path(r.file).name, r.line_no): r.line
        for r in _bronze(lake).select("file", "line_no", "line").collect()
    }
    want = {("big.log", i + 1): s for i, s in enumerate(lines)}
    want.update({("small.log", i + 1): s for i, s in enumerate(lines[:7])})
    assert got == want


def test_when_files_larger_than_a_split_are_read_whole() -> None:
    mb = 1 << 20
    split = 128 * mb

    def files(*sizes: int, ext: str = ".log") -> list[ingest.InputFile]:
        return [ingest.InputFile(f"f{i}{ext}", s) for i, s in enumerate(sizes)]

    assert ingest.single_pass(files(split, 3), split, cores=2)  # every file fits a split
    assert ingest.single_pass(files(10 * split, ext=".gz"), split, cores=2)  # read whole anyway
    assert not ingest.single_pass(files(2 * split), split, cores=2)  # one task for 2 cores
    assert not ingest.single_pass(files(*[200 * mb] * 3), split, cores=2)  # 3 tasks, 2 cores
    assert ingest.single_pass(files(*[200 * mb] * 4), split, cores=2)  # two files per core
    assert ingest.single_pass(files(*[200 * mb] * 7, 400 * mb), split, cores=2)
    assert not ingest.single_pass(files(*[200 * mb] * 7, 800 * mb), split, cores=2)  # outlier
    assert not ingest.single_pass(files(*[200 * mb] * 8), split, cores=8)  # a cluster's cores


def test_line_numbers_of_large_files_read_whole(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four files larger than a split, on 2 cores: one pass, a task per file, no counting."""
    cores = spark.sparkContext.defaultParallelism
    lines = [f"081109 2036{i % 60:02d} {i} INFO c: message {i} blk_{i}" for i in range(3000)]
    for k in range(2 * cores):
        (tmp_path / f"part-{k}.log").write_text("\n".join(lines[k:]) + "\n")

    def no_counting(*args: object) -> None:
        raise AssertionError("the counting pass ran")

    monkeypatch.setattr(ingest, "read_numbered", no_counting)
    with _split_size(spark, "65536"):  # each file ~3 splits
        ingest.run(spark, cfg, "hdfs", [str(tmp_path / "*.log")], NIGHT, lake=lake)
    got = {
        (Path(r.file).name, r.line_no): r.line
        for r in _bronze(lake).select("file", "line_no", "line").collect()
    }
    want = {(f"part-{k}.log", i + 1): s for k in range(2 * cores) for i, s in enumerate(lines[k:])}
    assert got == want


def test_bad_input_is_flagged_and_nothing_is_lost(
    spark: SparkSession, cfg: Config, lake: Lake, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.log").write_bytes(b"")
    garbage = bytes(range(256)) * 4  # binary, includes NUL and \n / \r bytes
    invalid_utf8 = GOOD.encode()[:40] + b"\xff\xfe\xc3(" + GOOD.encode()[40:]
    huge = GOOD + " x" * 600_000  # a 1.2 MB line that matches the format
    mixed = [
        GOOD.encode(),
        b"this line does not fit the format",
        invalid_utf8,
        huge.encode(),
        b"081109 999999 1 INFO c: bad clock",
        "081109 203615 148 INFO dfs.X: non-ASCII: \u00e9t\u00e9 \u65e5\u672c".encode(),
    ]
    (inputs / "mixed.log").write_bytes(b"\n".join(mixed) + b"\n")
    (inputs / "garbage.bin").write_bytes(garbage)
    with gzip.open(inputs / "ok.log.gz", "wb") as fh:
        fh.write(((GOOD + "\n") * 3).encode())
    report = ingest.run(spark, cfg, "hdfs", [str(inputs)], NIGHT, lake=lake)

    expected_total = len(mixed) + len(garbage.splitlines()) + 3
    bronze = _bronze(lake)
    assert bronze.count() == expected_total == report.lines_read
    assert report.files == 4 and report.empty_files == 1

    rows = {r.line_no: r for r in bronze.where(F.col("file").endswith("mixed.log")).collect()}
    assert rows[1].parse_ok and rows[1].parse_error is None
    assert (rows[2].parse_ok, rows[2].parse_error) == (False, "format_mismatch")
    assert rows[2].line == "this line does not fit the format"
    assert (rows[3].parse_ok, rows[3].parse_error) == (False, "invalid_utf8")
    assert bytes(rows[3].raw_bytes) == invalid_utf8  # exact bytes kept
    assert "\ufffd" in rows[3].line
    assert (rows[4].parse_ok, rows[4].parse_error) == (False, "line_too_long")
    assert rows[4].line == huge  # kept whole
    assert rows[4].session_keys == ["blk_38865049064139660"]
    assert (rows[5].parse_ok, rows[5].parse_error) == (False, "bad_timestamp")
    assert rows[5].component == "c"
    assert rows[6].parse_ok and rows[6].content.endswith("\u00e9t\u00e9 \u65e5\u672c")
    assert rows[6].raw_bytes is None

    garbage_rows = bronze.where(F.col("file").endswith("garbage.bin"))
    assert garbage_rows.where("parse_ok").count() == 0
    assert report.malformed == bronze.where(~F.col("parse_ok")).count()
    assert sum(report.malformed_by_reason.values()) == report.malformed
    # the figures from the written files' footers are those of reading the rows back
    read_back = ingest._counts(lake, date.fromisoformat(NIGHT), "hdfs", report.table_version, None)
    assert read_back == (report.lines_read, 3, report.malformed_by_reason)


def test_the_report_counts_from_footers_only_where_they_describe_one_input_file(
    spark: SparkSession, cfg: Config, lake: Lake, tmp_path: Path
) -> None:
    from logcrnn.filestats import FileStats

    log = tmp_path / "a.log"
    log.write_text(GOOD + "\nnot a line of the format\n" + GOOD + "\n")
    report = ingest.run(spark, cfg, "hdfs", [str(log)], NIGHT, lake=lake)
    assert (report.lines_read, report.malformed) == (3, 1)
    night, version = date.fromisoformat(NIGHT), report.table_version

    def one(name: str, rows: int, good: int) -> FileStats:
        return FileStats(rows, {"parse_error": good}, {"file": name}, {"file": name})

    # footers naming one input file each are taken at their word (here made up, to tell)
    made_up = [one("x", 10, 10), one("y", 5, 4), FileStats(0)]
    lines, files, reasons = ingest._counts(lake, night, "hdfs", version, made_up)
    assert (lines, files) == (15, 2)
    assert reasons == {"format_mismatch": 1}  # the reasons come from the malformed rows
    # a file holding lines of two input files, or no null count: the rows are read back
    two = FileStats(10, {"parse_error": 10}, {"file": "x"}, {"file": "y"})
    assert ingest._counts(lake, night, "hdfs", version, [two])[:2] == (3, 1)
    blind = FileStats(10, {}, {"file": "x"}, {"file": "x"})
    assert ingest._counts(lake, night, "hdfs", version, [blind])[:2] == (3, 1)


def test_the_java_parse_gives_the_built_ins_rows(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    """The parse with the project's Java functions (lib/logcrnn/jvm: UTF-8 check, header cut,
    fixed-width timestamp, session keys) against the same parse with Spark's built-ins: the
    same bronze rows for every Loghub sample and for lines each function could get wrong, read
    from bytes on disk (so invalid UTF-8 is real), in UTC and in a zone with summer time."""
    if shutil.which("javac") is None and not jvm_function(spark, ingest.JVM_UTF8_OK):
        pytest.skip("no JDK here: make setup could not build the Java functions")
    assert jvm_function(spark, ingest.JVM_UTF8_OK)
    head = "081109 203615 148 INFO dfs.X: "
    odd = [
        GOOD.encode(),
        b"",
        b"   ",
        GOOD.encode()[:40] + b"\xff\xfe\xc3(" + GOOD.encode()[40:],  # invalid UTF-8
        b"\xed\xa0\x80 081109 203615 148 INFO c: a surrogate's bytes",  # also invalid
        (head + "\u00e9t\u00e9 blk_1 \u65e5\u672c blk_-2 blk_1 \U0001f600 blk_3").encode(),
        (head + "many " + " ".join(f"blk_{i % 13}" for i in range(40))).encode(),
        (GOOD + " x" * 40_000).encode(),  # longer than max_parse_bytes below
        b"081109 203660 1 INFO c: a 60th second",
        b"081309 240000 1 INFO c: hour 24",
        b"081131 120000 1 INFO c: November 31st",
        b"080229 120000 1 INFO c: February 29th, 2008",
        b"090229 120000 1 INFO c: February 29th, 2009",
        b"081109 2036x5 1 INFO c: a letter in the time",
        b"0811099 203615 1 INFO c: a long date",
        "081109 2036\u00e9 1 INFO c: non-ASCII in the time".encode(),
        b"081109 203615 1 INFO c:no space after the colon blk_7",
        b"081109\t203615 1 INFO c: a tab blk_8",
        b"081109 203615 1 INFO c: \x01 control \x7f characters",
        b"blk_9 only",
        bytes(range(256)),
    ]
    max_bytes = 50_000
    checked = 0
    for zone in ("UTC", "America/Los_Angeles"):
        spark.conf.set("spark.sql.session.timeZone", zone)
        try:
            for name in sorted(
                p.stem for p in (SAMPLE.parents[1] / "conf" / "sources").glob("*.yaml")
            ):
                spec = load_source(cfg, name)
                if zone != "UTC" and name != "hdfs":
                    continue
                folder = {p.name.lower(): p for p in (SAMPLE / "loghub_2k").iterdir()}[name]
                sample = gzip.decompress((folder / f"{folder.name}_2k.log.gz").read_bytes())
                path = tmp_path / f"{name}-{zone.replace('/', '_')}.log"
                data = b"\n".join([*sample.splitlines(), *odd]) + b"\n"
                path.write_bytes(data)
                lines = ingest.read_whole_files(spark, [str(path)])
                java = ingest.parse_lines(lines, spec, date(2017, 7, 1), max_bytes, jvm=True)
                plan = java._jdf.queryExecution().optimizedPlan().toString()
                assert "logcrnn.jvm.Utf8Ok" in plan
                built_in = ingest.parse_lines(lines, spec, date(2017, 7, 1), max_bytes, jvm=False)
                assert (
                    "logcrnn.jvm" not in built_in._jdf.queryExecution().optimizedPlan().toString()
                )
                keep = [
                    *[c for c in java.columns if c not in ("fields", "ingested_at")],
                    F.to_json("fields").alias("fields"),
                ]
                got, want = java.select(keep), built_in.select(keep)
                assert got.count() == want.count() == len(data.splitlines())
                assert got.exceptAll(want).count() == 0 and want.exceptAll(got).count() == 0, name
                checked += 1
        finally:
            spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert checked == 17
    # two session keys, the second matching inside the first's matches: concatenated per key,
    # then made distinct, on both paths
    two = dataclasses.replace(
        load_source(cfg, "hdfs"),
        session_keys=(SessionKey("block", r"blk_-?\d+"), SessionKey("number", r"\d+")),
    )
    lines = ingest.read_whole_files(spark, [str(tmp_path / "hdfs-UTC.log")])
    pair = [
        ingest.parse_lines(lines, two, date(2017, 7, 1), max_bytes, jvm=jvm).select(
            "line_no", "session_keys"
        )
        for jvm in (True, False)
    ]
    assert pair[0].exceptAll(pair[1]).count() == 0 and pair[1].exceptAll(pair[0]).count() == 0
    row = pair[0].where("line_no = 2006").first()
    assert row is not None and row.session_keys == ["blk_1", "blk_-2", "blk_3", "1", "2", "3"]
    # the HDFS rows the Java functions must get right, whatever the built-ins do
    spec = load_source(cfg, "hdfs")
    rows = {
        r.line_no: r
        for r in ingest.parse_lines(
            ingest.read_whole_files(spark, [str(tmp_path / "hdfs-UTC.log")]),
            spec,
            date(2017, 7, 1),
            max_bytes,
            jvm=True,
        )
        .where(F.col("line_no") > 2000)
        .collect()
    }
    assert rows[2001].parse_ok and rows[2001].session_keys == ["blk_38865049064139660"]
    assert rows[2004].parse_error == "invalid_utf8" and rows[2005].parse_error == "invalid_utf8"
    assert rows[2006].session_keys == ["blk_1", "blk_-2", "blk_3"]
    assert rows[2007].session_keys == [f"blk_{i}" for i in range(13)]
    assert rows[2008].parse_error == "line_too_long"
    assert str(rows[2009].ts) == "2008-11-09 20:37:00"  # second 60: the next minute
    assert [rows[i].parse_error for i in (2010, 2011, 2013, 2014, 2015, 2016)] == [
        "bad_timestamp"
    ] * 6
    assert str(rows[2012].ts) == "2008-02-29 12:00:00"


def test_reingesting_a_night_replaces_it(spark: SparkSession, cfg: Config, lake: Lake) -> None:
    path = str(SAMPLE / "loghub_2k" / "BGL" / "BGL_2k.log.gz")
    ingest.run(spark, cfg, "bgl", [path], NIGHT, lake=lake)
    ingest.run(spark, cfg, "hdfs", [str(SAMPLE / "hdfs" / "HDFS_20000.log.gz")], NIGHT, lake=lake)
    again = ingest.run(spark, cfg, "bgl", [path], NIGHT, lake=lake)
    assert _bronze(lake, "bgl").count() == 2000
    assert _bronze(lake, "hdfs").count() == 20000  # the other source is untouched
    assert again.table_version == 2
    alerts = _bronze(lake, "bgl").where(F.col("label") != "-").count()
    assert alerts == 143  # per the data manifest


@pytest.mark.parametrize("bad", [1, 2])
def test_a_run_that_mostly_fails_to_parse_is_kept_and_warned_about(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    tmp_path: Path,
    bad: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = tmp_path / "night.log"
    log.write_text((GOOD + "\n") * (20 - bad) + "2008-11-09T20:36:15Z a new format\n" * bad)
    with caplog.at_level("WARNING", logger="logcrnn.ingest"):
        report = ingest.run(spark, cfg, "hdfs", [str(log)], NIGHT, lake=lake)
    assert (report.lines_read, report.malformed) == (20, bad)
    assert report.malformed_share == report.as_dict()["malformed_share"] == bad / 20
    warned = [r.getMessage() for r in caplog.records if "do not parse" in r.getMessage()]
    if bad / 20 > cfg.ingest.malformed_warn:  # 2 of 20: above the default 5%
        assert len(warned) == 1 and "10.0% of the 20 lines" in warned[0]
        assert "format of hdfs changed" in warned[0] and "hdfs.yaml" in warned[0]
    else:  # 1 of 20 is not above it
        assert warned == []
    assert _bronze(lake).count() == 20  # committed all the same, every line kept


def test_truncated_gz_is_named_and_nothing_is_committed(
    spark: SparkSession, cfg: Config, lake: Lake, tmp_path: Path
) -> None:
    good = tmp_path / "good.log"
    good.write_text(GOOD + "\n")
    ingest.run(spark, cfg, "hdfs", [str(good)], NIGHT, lake=lake)
    full = gzip.compress(((GOOD + "\n") * 5000).encode())
    bad = tmp_path / "cut.log.gz"
    bad.write_bytes(full[: len(full) // 2])
    with pytest.raises(
        DataError, match=r"cannot read .*cut\.log\.gz: java\.io\.EOFException.*nothing committed"
    ):
        ingest.run(spark, cfg, "hdfs", [str(good), str(bad)], NIGHT, lake=lake)
    assert lake.version("bronze.raw_lines") == 0
    assert _bronze(lake).count() == 1


def test_missing_input_and_unknown_source_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = str(tmp_path / "lake")
    code = main(
        [
            "ingest",
            "--source",
            "hdfs",
            "--input",
            str(tmp_path / "nope*.log"),
            "--date",
            NIGHT,
            "--lake",
            lake,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "input not found" in err[0] and "nope*.log" in err[0]
    code = main(
        ["ingest", "--source", "nosuch", "--input", str(tmp_path), "--date", NIGHT, "--lake", lake]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown source 'nosuch'" in err[0]


def test_missing_input_raises_usage_error(spark: SparkSession, cfg: Config, lake: Lake) -> None:
    with pytest.raises(UsageError, match="input not found"):
        ingest.run(spark, cfg, "hdfs", ["/nonexistent/dir/x.log"], NIGHT, lake=lake)


def test_cli_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "a.log"
    log.write_text(GOOD + "\nbroken\n")
    code = main(
        [
            "ingest",
            "--source",
            "hdfs",
            "--input",
            str(log),
            "--date",
            NIGHT,
            "--lake",
            str(tmp_path / "lake"),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["lines_read"] == 2 and report["parsed"] == 1 and report["malformed"] == 1
    assert report["bytes"] == log.stat().st_size
    assert report["seconds"] > 0
