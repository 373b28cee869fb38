"""The session factory: Delta is switched on only when its jars will be on the classpath; the
project's Java functions are registered when their jar was built, and used only when on."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession

from logcrnn import spark as spark_mod
from logcrnn.config import Config, load_source
from logcrnn.ingest import parse_lines
from logcrnn.spark import (
    JVM_CATALOG_FUNCTIONS,
    JVM_FUNCTIONS,
    build_session,
    delta_extension_loaded,
    delta_jars_present,
    functions_jar,
    jvm_function,
    row_cache,
)

LINES = "file string, line_no long, value string"


def test_no_delta_jars_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert not delta_jars_present({})


def test_delta_jars_found_in_a_jar_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "delta-spark_2.12-3.3.2.jar").write_bytes(b"")
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert delta_jars_present({})


def test_delta_jars_named_in_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert delta_jars_present({"spark.jars.packages": "io.delta:delta-spark_2.12:3.3.2"})
    assert delta_jars_present({"spark.jars": "/opt/jars/delta-spark_2.12-3.3.2.jar"})


def test_test_session_has_no_delta_extension(spark: SparkSession) -> None:
    assert not delta_extension_loaded(spark)
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"  # from conf/base.yaml


def test_spark_submit_master_wins_over_the_config(tmp_path: Path) -> None:
    """conf/local.yaml says local[*]; under spark-submit --master local[1] the session must
    run on local[1] (the master is spark-submit's to choose)."""
    script = tmp_path / "app.py"
    script.write_text(
        "from logcrnn.config import load_config\n"
        "from logcrnn.spark import build_session\n"
        "cfg = load_config(None)\n"
        "assert cfg.spark.master == 'local[*]', cfg.spark.master\n"
        "from logcrnn.spark import jvm_function\n"
        "spark = build_session('t', cfg.spark)\n"
        "print('MASTER=' + spark.sparkContext.master)\n"
        "print('JAVA=' + str(jvm_function(spark, 'logcrnn_mask_values')))\n"
        "if jvm_function(spark, 'logcrnn_mask_values'):\n"
        "    df = spark.createDataFrame([('a 12 b 3',)], 't string').repartition(2)\n"
        "    starts = \"concat('[0-9]+', chr(2), '0-9', chr(2), chr(2), chr(2))\"\n"
        "    expr = \"logcrnn_mask_values(t, '[0-9]+', '<*>', \" + starts + ')'\n"
        "    row = df.selectExpr(expr + ' AS r').first()\n"
        "    print('MASKED=' + row.r.masked + '|' + ','.join(row.r['values']))\n"
        "    keys = df.selectExpr(\"logcrnn_fn.extract_all(t, '[0-9]+', '') AS k\").first().k\n"
        "    print('KEYS=' + ','.join(keys))\n"
    )
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    done = subprocess.run(
        [str(submit), "--master", "local[1]", str(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MASTER=local[1]" in done.stdout
    # the project's Java functions reach a spark-submit driver too, when they were built
    assert f"JAVA={functions_jar() is not None}" in done.stdout
    if functions_jar() is not None:  # and run on the executors
        assert "MASKED=a <*> b <*>|12,3" in done.stdout
        assert "KEYS=12,3" in done.stdout  # the function catalog too (ADD JAR)


def test_the_java_functions_are_registered_when_built(spark: SparkSession) -> None:
    if functions_jar() is None:
        assert shutil.which("javac") is None, "make setup builds lib/logcrnn/jvm with a JDK"
        pytest.skip("no JDK here: the Java functions were not built")
    assert spark.conf.get("spark.jars").endswith("logcrnn-jvm.jar")
    for name in (*JVM_FUNCTIONS, *JVM_CATALOG_FUNCTIONS):
        assert jvm_function(spark, name)


def test_the_java_functions_can_be_turned_off(spark: SparkSession, cfg: Config) -> None:
    """spark.jvm_functions: false on a session that has them registered: not used."""
    if functions_jar() is None:
        pytest.skip("no JDK here: the Java functions were not built")
    off = dataclasses.replace(cfg.spark, jvm_functions=False)
    names = (*JVM_FUNCTIONS, *JVM_CATALOG_FUNCTIONS)
    try:
        assert build_session("tests", off) is spark
        assert not any(jvm_function(spark, name) for name in names)
        assert "logcrnn.jvm" not in _ingest_plan(spark, cfg)
    finally:
        build_session("tests", cfg.spark)
    assert all(jvm_function(spark, name) for name in names)
    for java_class in ("Utf8Ok", "CutFields", "FixedTimestamp", "ExtractAll"):
        assert f"logcrnn.jvm.{java_class}" in _ingest_plan(spark, cfg)


def test_the_row_cache_gives_back_every_row(spark: SparkSession, cfg: Config) -> None:
    if functions_jar() is None:
        assert row_cache(spark.range(1)) is None
        pytest.skip("no JDK here: the Java functions were not built")
    big = "x" * (5 << 20)  # longer than a chunk: a chunk of its own
    # ~8 MB a partition: chunks of 4 MB fill up, and a row that does not fit starts the next
    df = spark.range(0, 60_000, numPartitions=3).selectExpr(
        "id",
        "IF(id % 7 = 0, NULL, concat('message ', id, repeat('m', CAST(id % 700 AS int)))) AS text",
        "IF(id % 5 = 0, NULL, array(CAST(id AS string), 'b')) AS values",
        "CAST(id % 2 = 0 AS boolean) AS flag",
        f"IF(id = 12345, '{big}', NULL) AS big",
        "IF(id % 3 = 0, NULL, id * 1.5) AS x",
    )
    made = row_cache(df)
    assert made is not None
    cached, drop = made
    assert cached.schema == df.schema
    want = sorted(df.collect())
    try:
        assert sorted(cached.collect()) == want
        assert sorted(cached.collect()) == want  # read again from the cache
        # kept by the first action: a second one reads it, it does not compute df again
        rdd_info = spark.sparkContext._jsc.sc().getRDDStorageInfo()
        assert sum(info.numCachedPartitions() for info in rdd_info) >= 3
        # kept serialised (and spilled to disk), not as objects on the heap
        assert all(
            not info.storageLevel().deserialized() and info.storageLevel().useDisk()
            for info in rdd_info
        )
        assert cached.where("big IS NOT NULL").first().big == big
        # rows that are not in Spark's binary format yet (a Python function's output)
        mapped = df.select("id").mapInPandas(lambda it: it, "id long")
        made = row_cache(mapped)
        assert made is not None and sorted(made[0].collect()) == sorted(mapped.collect())
        made[1]()
    finally:
        drop()
    assert sorted(cached.collect()) == want  # dropped: computed again from its lineage
    # with the Java functions off there is no cache (mining masks every line twice)
    try:
        build_session("tests", dataclasses.replace(cfg.spark, jvm_functions=False))
        assert row_cache(df) is None
    finally:
        build_session("tests", cfg.spark)


def _ingest_plan(spark: SparkSession, cfg: Config) -> str:
    lines = spark.createDataFrame([("f", 1, "081109 203615 148 INFO a.B: x")], LINES)
    bronze = parse_lines(lines, load_source(cfg, "hdfs"), date(2008, 11, 9), 65536)
    return str(bronze._jdf.queryExecution().optimizedPlan().toString())


def test_no_jar_no_java_functions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spark_mod.importlib.resources, "files", lambda _: tmp_path)
    assert functions_jar() is None


def test_the_jar_is_copied_out_of_an_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the package imported from a --py-files archive, Spark still gets a file path."""
    archive = tmp_path / "logcrnn-0.1.0.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("logcrnn/jvm/logcrnn-jvm.jar", b"the jar's bytes")
    monkeypatch.setattr(
        spark_mod.importlib.resources, "files", lambda _: zipfile.Path(archive, "logcrnn/")
    )
    monkeypatch.setattr(spark_mod.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    jar = functions_jar()
    assert jar is not None and jar.parent == tmp_path / "tmp" and jar.suffix == ".jar"
    assert jar.read_bytes() == b"the jar's bytes"
    assert functions_jar() == jar
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [jar.name]
