"""The lake: partition-scoped, atomic, genuine Delta writes (delta-rs backend here)."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from logcrnn.errors import LakeError, UsageError
from logcrnn.lake import Lake


def _ids(df) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return sorted((str(r.night), r.id) for r in df.select("night", "id").collect())


@pytest.fixture()
def lake(spark: SparkSession, tmp_path: Path) -> Lake:
    return Lake(spark, str(tmp_path / "lake"), "auto")


def test_backend_without_delta_jars_is_delta_rs(lake: Lake) -> None:
    assert lake.backend == "delta-rs"


def test_native_backend_requires_the_extension(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no Delta extension"):
        Lake(spark, str(tmp_path), "delta-spark")


def test_write_replaces_exactly_one_night(spark: SparkSession, lake: Lake) -> None:
    v0 = lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    v1 = lake.write(spark.range(10, 13), "scratch.t", night="2024-01-02")
    v2 = lake.write(spark.range(100, 102), "scratch.t", night="2024-01-01")
    assert (v0, v1, v2) == (0, 1, 2)
    assert _ids(lake.read("scratch.t")) == [
        ("2024-01-01", 100),
        ("2024-01-01", 101),
        ("2024-01-02", 10),
        ("2024-01-02", 11),
        ("2024-01-02", 12),
    ]
    assert _ids(lake.read("scratch.t", night="2024-01-02")) == [
        ("2024-01-02", 10),
        ("2024-01-02", 11),
        ("2024-01-02", 12),
    ]
    # re-running a night never duplicates
    lake.write(spark.range(100, 102), "scratch.t", night="2024-01-01")
    assert lake.read("scratch.t").count() == 5


def test_tables_are_genuine_delta_with_one_version_per_write(
    spark: SparkSession, lake: Lake
) -> None:
    lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    lake.write(spark.range(0, 7), "scratch.t", night="2024-01-02")
    lake.write(spark.range(0, 2), "scratch.t", night="2024-01-01")
    dt = DeltaTable(lake.path("scratch.t"))
    assert dt.version() == 2
    assert dt.metadata().partition_columns == ["night"]
    history = dt.history()
    assert [h["version"] for h in history] == [2, 1, 0]
    assert [h["logcrnn.rows"] for h in history] == ["2", "7", "5"]
    # delta-rs's own view of the live files matches what Spark reads
    assert len(dt.file_uris(partition_filters=[("night", "=", "2024-01-01")])) >= 1
    adds = pa.table(dt.get_add_actions(flatten=True))
    assert sum(adds.column("num_records").to_pylist()) == 9


def test_reading_an_earlier_version(spark: SparkSession, lake: Lake) -> None:
    lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    lake.write(spark.range(50, 52), "scratch.t", night="2024-01-01")
    assert sorted(r.id for r in lake.read("scratch.t", version=0).collect()) == [0, 1, 2, 3, 4]
    assert sorted(r.id for r in lake.read("scratch.t").collect()) == [50, 51]


def test_failed_commit_leaves_table_and_storage_as_they_were(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    night_dir = Path(lake.path("scratch.t")) / "night=2024-01-01"
    before = sorted(p.name for p in night_dir.iterdir())
    seen_files: list[str] = []

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        # The Parquet files of the new write exist at this point.
        seen_files.extend(str(p) for p in night_dir.rglob("*.parquet"))
        raise OSError("disk full while committing")

    monkeypatch.setattr(lake, "_commit", boom)
    with pytest.raises(LakeError, match="table left unchanged: disk full"):
        lake.write(spark.range(100, 200), "scratch.t", night="2024-01-01")
    assert len(seen_files) > 1  # old files + the new write's files
    assert sorted(p.name for p in night_dir.iterdir()) == before
    assert DeltaTable(lake.path("scratch.t")).version() == 0
    assert sorted(r.id for r in lake.read("scratch.t").collect()) == [0, 1, 2, 3, 4]


def test_failing_spark_job_leaves_table_as_it_was(spark: SparkSession, lake: Lake) -> None:
    lake.write(spark.range(0, 3), "scratch.t", night="2024-01-01")
    bad = spark.range(0, 1000).withColumn(
        "id", F.when(F.col("id") == 999, F.raise_error("bad row")).otherwise(F.col("id"))
    )
    with pytest.raises(LakeError, match="table left unchanged"):
        lake.write(bad, "scratch.t", night="2024-01-01")
    assert DeltaTable(lake.path("scratch.t")).version() == 0
    assert lake.read("scratch.t").count() == 3


def test_schema_change_is_refused(spark: SparkSession, lake: Lake) -> None:
    lake.write(spark.range(0, 3), "scratch.t", night="2024-01-01")
    with pytest.raises(LakeError, match="schema mismatch"):
        lake.write(spark.range(0, 3).withColumn("x", F.lit(1)), "scratch.t", night="2024-01-02")
    assert DeltaTable(lake.path("scratch.t")).version() == 0


def test_empty_write_empties_the_night(spark: SparkSession, lake: Lake) -> None:
    lake.write(spark.range(0, 3), "scratch.t", night="2024-01-01")
    lake.write(spark.range(0, 2), "scratch.t", night="2024-01-02")
    lake.write(spark.range(0, 0), "scratch.t", night="2024-01-01")
    assert _ids(lake.read("scratch.t")) == [("2024-01-02", 0), ("2024-01-02", 1)]
    assert lake.read("scratch.t", night="2024-01-01").count() == 0


def test_sql_by_table_name(spark: SparkSession, tmp_path: Path, cfg) -> None:  # type: ignore[no-untyped-def]
    from logcrnn import ingest

    lake = Lake(spark, str(tmp_path / "lake"))
    log = tmp_path / "a.log"
    log.write_text("081109 203615 148 INFO dfs.DataNode: x blk_1 y\nnot a line\n")
    ingest.run(spark, cfg, "hdfs", [str(log)], "2008-11-09", lake=lake)
    rows = lake.sql(
        "SELECT parse_ok, count(*) AS n FROM bronze.raw_lines GROUP BY parse_ok ORDER BY parse_ok"
    ).collect()
    assert [(r.parse_ok, r.n) for r in rows] == [(False, 1), (True, 1)]
    assert lake.tables() == ["bronze.raw_lines"]


def test_partitioned_by_source_needs_the_source(spark: SparkSession, lake: Lake) -> None:
    with pytest.raises(UsageError, match="partitioned by source"):
        lake.write(spark.range(1), "bronze.raw_lines", night="2024-01-01")


def test_restore_partition_touches_only_that_partition(spark: SparkSession, lake: Lake) -> None:
    v0 = lake.write(spark.range(0, 3), "scratch.r", night="2024-01-01")
    lake.write(spark.range(10, 12), "scratch.r", night="2024-01-02")
    lake.write(spark.range(100, 101), "scratch.r", night="2024-01-01")  # the write to undo
    lake.write(spark.range(20, 21), "scratch.r", night="2024-01-02")  # a later, unrelated one
    lake.restore_partition("scratch.r", "2024-01-01", None, v0)
    assert _ids(lake.read("scratch.r")) == [
        ("2024-01-01", 0),
        ("2024-01-01", 1),
        ("2024-01-01", 2),
        ("2024-01-02", 20),
    ]
    lake.restore_partition("scratch.r", "2024-01-02", None, None)  # did not exist: emptied
    assert _ids(lake.read("scratch.r")) == [("2024-01-01", 0), ("2024-01-01", 1), ("2024-01-01", 2)]
    assert DeltaTable(lake.path("scratch.r")).history(1)[0]["logcrnn.restored_from"] == "None"


# ---------------------------------------------------------------------------------------------
# two jobs committing to one table at once (the Airflow DAG runs every source's chain in
# parallel, and every table is shared by the sources)


def _race(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str
) -> tuple[threading.Barrier, threading.local]:
    """Make each thread's first call of ``target.name`` in a round wait for the other's, so
    both have read the same table version before either commits."""
    barrier = threading.Barrier(2, timeout=60)
    state = threading.local()
    original = getattr(target, name)

    def racing(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not getattr(state, "raced", False):
            state.raced = True
            barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, racing)
    return barrier, state


def _writers(lake: Lake, spark: SparkSession, nights: list[str], rounds: int, state):  # type: ignore[no-untyped-def]
    errors: list[tuple[int, int, str]] = []

    def work(k: int) -> None:
        for i in range(rounds):
            state.raced = False
            try:
                rows = spark.range(1000 * k + 10 * i, 1000 * k + 10 * i + 3)
                lake.write(rows, "scratch.c", night=nights[k])
            except LakeError as exc:
                errors.append((k, i, str(exc)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writes_of_other_partitions_both_commit(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(spark.range(0, 1), "scratch.c", night="2024-01-01")
    _, state = _race(monkeypatch, DeltaTable, "create_write_transaction")
    errors = _writers(lake, spark, ["2024-01-01", "2024-01-02"], 3, state)
    # every round, one commit loses to the other (delta-rs reads the whole table) and is
    # committed again on the newer version: nothing fails, nothing is lost
    assert errors == []
    assert lake.version("scratch.c") == 6
    assert _ids(lake.read("scratch.c")) == [
        ("2024-01-01", 20),
        ("2024-01-01", 21),
        ("2024-01-01", 22),
        ("2024-01-02", 1020),
        ("2024-01-02", 1021),
        ("2024-01-02", 1022),
    ]


def test_concurrent_writes_of_one_partition_fail_one_and_keep_the_other(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(spark.range(0, 1), "scratch.c", night="2024-01-01")
    _, state = _race(monkeypatch, DeltaTable, "create_write_transaction")
    errors = _writers(lake, spark, ["2024-01-01", "2024-01-01"], 3, state)
    assert sorted(i for _, i, _ in errors) == [0, 1, 2]  # one loser per round
    assert all("another job replaced this partition" in e for _, _, e in errors)
    assert lake.version("scratch.c") == 3
    ids = [i for _, i in _ids(lake.read("scratch.c"))]
    assert ids in ([20, 21, 22], [1020, 1021, 1022])  # one whole write, never both
    # the losers' files are gone: one write folder per committed version
    folders = [p for p in (Path(lake.path("scratch.c")) / "night=2024-01-01").iterdir()]
    assert len(folders) == 4


def test_two_first_writes_both_land_in_the_table_one_of_them_creates(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake import transaction

    _, state = _race(monkeypatch, transaction, "create_table_with_add_actions")
    errors = _writers(lake, spark, ["2024-01-01", "2024-01-02"], 1, state)
    assert errors == []
    assert lake.version("scratch.c") == 1
    assert _ids(lake.read("scratch.c")) == [
        ("2024-01-01", 0),
        ("2024-01-01", 1),
        ("2024-01-01", 2),
        ("2024-01-02", 1000),
        ("2024-01-02", 1001),
        ("2024-01-02", 1002),
    ]
    # the same race on one night: the table is created once, the other write is refused
    other = Lake(spark, str(Path(lake.root).parent / "other"), "auto")
    errors = _writers(other, spark, ["2024-01-01", "2024-01-01"], 1, state)
    assert len(errors) == 1 and "another job replaced this partition" in errors[0][2]
    assert other.version("scratch.c") == 0 and other.read("scratch.c").count() == 3


def _exact_figures(path: str, column: str) -> tuple[object, object, int]:
    """Least value, greatest value and null count of ``column`` in one Parquet file."""
    import pyarrow.compute as pc

    values = pq.read_table(path, columns=[column]).column(column)
    bounds = pc.min_max(values)
    return bounds["min"].as_py(), bounds["max"].as_py(), values.null_count


def _needs_the_jar(spark: SparkSession, java: bool = True) -> None:
    from logcrnn.spark import jvm_function

    if java and shutil.which("javac") is None and not jvm_function(spark, "logcrnn_mask"):
        pytest.skip("no JDK here: make setup could not build the Java functions")


@pytest.fixture(params=["java", "py4j"])
def footers(request: pytest.FixtureRequest, spark: SparkSession) -> Iterator[str]:
    """Footers read by the project's Java ``FooterStats``, or by parquet-mr's objects call by
    call (the path without the jar)."""
    from logcrnn.spark import JVM_FUNCTIONS_CONF

    _needs_the_jar(spark, request.param == "java")
    before = spark.conf.get(JVM_FUNCTIONS_CONF, "true")
    if request.param == "py4j":
        spark.conf.set(JVM_FUNCTIONS_CONF, "false")
    yield request.param
    spark.conf.set(JVM_FUNCTIONS_CONF, before)


def test_commits_carry_each_files_exact_statistics(
    spark: SparkSession, lake: Lake, footers: str
) -> None:
    from datetime import date as day
    from datetime import datetime, timedelta

    base = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [
        (
            i,
            None if i % 7 == 0 else base + timedelta(microseconds=997 * i),
            day(2023, 1, 1) + timedelta(days=i % 40),
            None if i % 5 == 0 else f"name-{i:03d}-é",
            "line " * 10 + str(i),  # 50+ characters: only a prefix bounds it
            float("nan") if i == 3 else i / 10,
            i % 2 == 0,
            [i, i + 1],
        )
        for i in range(60)
    ]
    df = spark.createDataFrame(
        rows,
        "id long, ts timestamp, d date, name string, text string, score double, "
        "flag boolean, arr array<int>",
    ).repartition(3, "id")
    from logcrnn.lake import _HadoopFS

    assert _HadoopFS(spark, lake.root)._java_footers == (footers == "java")
    version = lake.write(df, "scratch.t", night="2024-01-01")
    dt = DeltaTable(lake.path("scratch.t"), version=version)
    actions = pa.table(dt.get_add_actions(flatten=False)).to_pylist()
    assert len(actions) == 3 and sum(a["num_records"] for a in actions) == 60
    for a in actions:
        path = str(Path(lake.path("scratch.t")) / a["path"])
        low, high, nulls = a["min"], a["max"], a["null_count"]
        for col in ("id", "d", "name"):
            assert (low[col], high[col], nulls[col]) == _exact_figures(path, col), col
        ts_low, ts_high, ts_nulls = _exact_figures(path, "ts")
        assert nulls["ts"] == ts_nulls
        # whole milliseconds, widened outwards
        assert low["ts"] <= ts_low < low["ts"] + timedelta(milliseconds=1)
        assert high["ts"] - timedelta(milliseconds=1) < ts_high <= high["ts"]
        assert low["ts"].microsecond % 1000 == 0 and high["ts"].microsecond % 1000 == 0
        text_low, _, _ = _exact_figures(path, "text")
        assert low["text"] == text_low[:32] and high.get("text") is None
        score = _exact_figures(path, "score")
        if 3 in pq.read_table(path, columns=["id"]).column("id").to_pylist():
            # Spark sorts NaN above every number: a file holding one has no bounds
            assert low["score"] is None and high["score"] is None
        else:
            assert (low["score"], high["score"], nulls["score"]) == score
        # booleans and arrays get no bounds; the partition column no figures
        for col in ("flag", "arr", "night"):
            assert low.get(col) is None and high.get(col) is None, col
        assert nulls["score"] == 0 and nulls["flag"] == 0 and nulls.get("night") is None


def test_statistics_stay_true_where_the_footer_has_no_bounds(
    spark: SparkSession, lake: Lake, footers: str
) -> None:
    # parquet-mr keeps no bounds for values over 4 KB; a column entirely null has none
    rows = [(i, "x" * 5000 if i == 1 else f"v{i}", None) for i in range(4)]
    df = spark.createDataFrame(rows, "id long, big string, empty string").coalesce(1)
    dt = DeltaTable(lake.path("scratch.t"), version=lake.write(df, "scratch.t", night="2024-01-01"))
    (action,) = pa.table(dt.get_add_actions(flatten=False)).to_pylist()
    assert action["min"]["big"] is None and action["max"]["big"] is None
    assert action["min"]["empty"] is None and action["null_count"]["empty"] == 4
    assert (action["min"]["id"], action["max"]["id"], action["num_records"]) == (0, 3, 4)


def test_restoring_a_partition_keeps_its_files_statistics(spark: SparkSession, lake: Lake) -> None:
    df = spark.createDataFrame([(i, f"n{i}") for i in range(5)], "id long, name string")
    v0 = lake.write(df.coalesce(1), "scratch.t", night="2024-01-01")
    lake.write(
        spark.range(100, 102).withColumn("name", F.lit("z")), "scratch.t", night="2024-01-01"
    )
    lake.restore_partition("scratch.t", "2024-01-01", None, v0)

    def figures(version: int | None = None) -> list[dict]:  # type: ignore[type-arg]
        rows = pa.table(
            DeltaTable(lake.path("scratch.t"), version=version).get_add_actions(flatten=True)
        )
        return [{k: v for k, v in r.items() if k != "modification_time"} for r in rows.to_pylist()]

    assert figures() == figures(v0)
    assert figures()[0]["min.name"] == "n0" and figures()[0]["max.id"] == 4


def test_a_delta_reader_skips_files_by_the_statistics(spark: SparkSession, lake: Lake) -> None:
    from deltalake import QueryBuilder

    quarters = [spark.range(start, start + 1000, numPartitions=1) for start in range(0, 4000, 1000)]
    ids = quarters[0].union(quarters[1]).union(quarters[2]).union(quarters[3])  # one file each
    lake.write(
        ids.withColumn("ts", F.timestamp_seconds(F.col("id") * 3 + 1e9)),
        "scratch.t",
        night="2024-01-01",
    )
    query = "FROM t WHERE ts >= TIMESTAMP '2001-09-09 04:16:40' AND id % 2 = 0"  # ids 3000..
    builder = QueryBuilder().register("t", DeltaTable(lake.path("scratch.t")))
    plan = str(builder.execute(f"EXPLAIN SELECT count(*) {query}").read_all().column(1))
    assert len(re.findall(r"part-\d+", plan)) == 1  # of the 4 files, the one with ids 3000..
    (count,) = builder.execute(f"SELECT count(*) AS n {query}").read_all().column(0).to_pylist()
    assert (
        count
        == lake.read("scratch.t")
        .where(
            (F.col("ts") >= F.lit("2001-09-09 04:16:40").cast("timestamp")) & (F.col("id") % 2 == 0)
        )
        .count()
        == 500
    )


def test_the_java_footer_reader_reads_what_parquet_mr_objects_say(
    spark: SparkSession, lake: Lake
) -> None:
    from logcrnn.filestats import footer_row_groups, parse_footer_text
    from logcrnn.lake import _HadoopFS

    rows = [
        (i, f"é{i}", "x" * 5000 if i == 2 else "s", None, float("nan") if i == 1 else 0.5, [i])
        for i in range(6)
    ]
    df = spark.createDataFrame(
        rows, "id long, name string, big string, empty int, f double, a array<int>"
    )
    _needs_the_jar(spark)
    lake.write(df.repartition(2), "scratch.t", night="2024-01-01")
    fs = _HadoopFS(spark, lake.path("scratch.t"))
    assert fs._java_footers  # the test session has the project's jar
    jvm = spark.sparkContext._jvm
    for uri in DeltaTable(lake.path("scratch.t")).file_uris():
        java = parse_footer_text(str(jvm.logcrnn.jvm.FooterStats.read(uri, fs._conf)))
        hadoop_file = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
            fs._path(uri), fs._conf
        )
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(hadoop_file)
        try:
            assert java == footer_row_groups(reader.getFooter())
        finally:
            reader.close()
        names = [c.name for c in java[0][1]]
        assert "a.list.element" in names and len(java[0][1]) == len(df.columns) + 1
