"""Time reading the statistics of a partition's Parquet footers, three ways.

    .venv/bin/python tools/profile_footers.py BENCH_DATA_DIR [FILES]

Ingests the first file of ``BENCH_DATA_DIR`` (made by ``logcrnn bench ingest``) into a
scratch lake under /tmp, writes its rows again as FILES Parquet files (default 400, a night
of a large cluster), and reads every footer of those files, twice per way: with the project's
Java ``FooterStats`` (one call per file), through parquet-mr's objects call by call (the path
without the jar), and the row count alone (what commits carried before statistics).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

from logcrnn import ingest
from logcrnn.config import load_config
from logcrnn.lake import Lake, _HadoopFS
from logcrnn.schemas import RAW_LINES_SCHEMA
from logcrnn.spark import build_session

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    data, files = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 400
    root = "/tmp/logcrnn-profile-footers"
    shutil.rmtree(root, ignore_errors=True)
    cfg = load_config(REPO / "conf" / "local.yaml", lake=root)
    spark = build_session("profile-footers", cfg.spark)
    lake = Lake(spark, root)
    ingest.run(spark, cfg, "hdfs", [str(sorted(data.glob("*.log"))[0])], "2008-11-09", lake=lake)
    rows = lake.read("bronze.raw_lines").repartition(files)
    lake.write(rows, "bronze.raw_lines", night="2008-11-10", source="hdfs")
    uris = [
        f"file://{u}"
        for u in DeltaTable(lake.path("bronze.raw_lines")).file_uris()
        if "night=2008-11-10" in u
    ]
    fs = _HadoopFS(spark, f"file://{root}")
    jvm = spark.sparkContext._jvm
    assert jvm is not None

    def row_count(uri: str) -> None:
        hadoop_file = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
            fs._path(uri), fs._conf
        )
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(hadoop_file)
        reader.getRecordCount()
        reader.close()

    def statistics(java: bool) -> None:
        fs._java_footers = java
        for uri in uris:
            fs.parquet_stats(uri, RAW_LINES_SCHEMA)
        assert fs._java_footers == java

    ways = {
        "statistics, Java FooterStats": lambda: statistics(True),
        "statistics, call by call": lambda: statistics(False),
        "row count alone": lambda: [row_count(u) for u in uris],
    }
    for round_ in (1, 2):
        for name, run in ways.items():
            started = time.perf_counter()
            run()
            seconds = time.perf_counter() - started
            print(
                f"round {round_}, {len(uris)} files, {name}: {seconds:.2f} s "
                f"({1000 * seconds / len(uris):.1f} ms per file)"
            )
    spark.stop()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
