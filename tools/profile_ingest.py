"""Per-step cost of ingestion on synthetic lines (the breakdown in docs/BENCHMARKS.md).

    .venv/bin/python tools/profile_ingest.py [DATA_DIR] [N_FILES]

DATA_DIR defaults to the folder `logcrnn bench ingest --lines 10000000 --files 16` leaves
under .bench/; the first N_FILES (default 4, i.e. 2.5M lines) of its part files are used.
Each step runs twice in one warm session and the faster run is printed.  The ``noop`` sink
computes the columns without writing them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from logcrnn import ingest
from logcrnn.config import load_config, load_source
from logcrnn.formats import JVM_CUT_FIELDS, compile_format
from logcrnn.lake import Lake
from logcrnn.spark import build_session, jvm_function


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else ".bench/data-hdfs-10000000-16-0")
    n_files = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    files = sorted(str(p) for p in data.glob("part-*.log"))[:n_files]
    if not files:
        sys.exit(f"no part-*.log under {data}: run `logcrnn bench ingest` first")
    cfg = load_config(None)
    spark = build_session("profile_ingest", cfg.spark)
    spec = load_source(cfg, "hdfs")
    night = date(2008, 11, 9)
    scratch = Path(tempfile.mkdtemp(prefix="profile-ingest-"))
    lake = Lake(spark, str(scratch / "lake"))
    lines = spark.read.text(files).select(
        F.lit("f").alias("file"), F.lit(1).cast("long").alias("line_no"), "value"
    )

    def best(name: str, step: Callable[[], object]) -> None:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        print(f"{name:<48} {min(times):6.2f} s", flush=True)

    def noop(df: DataFrame) -> Callable[[], object]:
        return lambda: df.write.mode("overwrite").format("noop").save()

    n = spark.read.text(files).count()
    print(f"{n:,} lines in {len(files)} files")
    best(
        "read text -> Parquet (raw copy)",
        lambda: spark.read.text(files).write.mode("overwrite").parquet(str(scratch / "raw")),
    )
    # what any bronze writes, parse or not: the original line and its message beside it
    # (here the line from its 33rd character, about where an HDFS header ends), so the text
    # is written twice; the other columns are left out, so this is a floor
    best(
        "line + a copy of its message, no parse, Parquet",
        lambda: spark.read.text(files)
        .select(F.col("value").alias("line"), F.substring("value", 33, 1 << 20).alias("content"))
        .write.mode("overwrite")
        .parquet(str(scratch / "twice")),
    )
    java = jvm_function(spark, ingest.JVM_UTF8_OK)
    for jvm in (False, True) if java else (False,):
        bronze = ingest.parse_lines(lines, spec, night, cfg.ingest.max_parse_bytes, jvm=jvm)
        how = "the Java functions" if jvm else "Spark's built-ins"
        best(f"every bronze column, {how}, noop sink", noop(bronze))
        best(
            "the same, written and committed (lake.write)",
            lambda b=bronze: lake.write(b, "bronze.raw_lines", night, source="hdfs"),
        )
    fmt = compile_format(spec.format)
    best("header cut alone, built-ins, noop sink", noop(fmt.apply(lines, "value", jvm=False)))
    if fmt.plan == "delimited" and jvm_function(spark, JVM_CUT_FIELDS):
        best("header cut alone, the Java function, noop sink",
             noop(fmt.apply(lines, "value", jvm=True)))  # fmt: skip
    for jvm in (False, True) if java else (False,):
        how = "the Java function" if jvm else "built-ins"
        keys = ingest._session_keys(spec, F.col("value"), jvm)
        best(f"session keys alone, {how}, noop sink", noop(lines.select(keys)))
        utf8 = ingest._utf8_columns(F.col("value"), jvm)
        best(f"UTF-8 check alone, {how}, noop sink", noop(lines.select(*utf8)))
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
