"""Calls of one Java function with two different literals on every row (docs/BENCHMARKS.md).

    .venv/bin/python tools/profile_scan_cache.py [DATA_DIR]

Prints, each the faster of two runs into a ``noop`` sink:

* every bronze column of the first 2 files under DATA_DIR (default: the folder `logcrnn
  bench ingest --lines 10000000 --files 16` leaves under .bench/), with HDFS's session key
  alone and with an address as a second key (two ``logcrnn_fn.extract_all`` calls per row);
* the bundled Proxifier sample, repeated to 200,000 lines, masked by the Java functions
  (Proxifier's rules need two scans: two ``logcrnn_mask`` calls per row).

Each function keeps the plans and scans it built for its newest arguments (``ArgCache``,
``MaskFunction``); with one entry kept, these rebuilt a scan on every call.
"""

from __future__ import annotations

import dataclasses
import gzip
import sys
import time
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from logcrnn import ingest
from logcrnn.config import SessionKey, load_config, load_source
from logcrnn.masking import Masker, masks_for
from logcrnn.spark import build_session

PROXIFIER = (
    Path(__file__).resolve().parents[1] / "data/sample/loghub_2k/Proxifier/Proxifier_2k.log.gz"
)


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else ".bench/data-hdfs-10000000-16-0")
    files = sorted(str(p) for p in data.glob("part-*.log"))[:2]
    if not files:
        sys.exit(f"no part-*.log under {data}: run `logcrnn bench ingest` first")
    cfg = load_config(None)
    spark = build_session("profile_scan_cache", cfg.spark)

    def best(name: str, df: DataFrame) -> None:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            df.write.mode("overwrite").format("noop").save()
            times.append(time.perf_counter() - started)
        print(f"{name:<52} {min(times):6.2f} s", flush=True)

    lines = spark.read.text(files).select(
        F.lit("f").alias("file"), F.lit(1).cast("long").alias("line_no"), "value"
    )
    print(f"{lines.count():,} HDFS lines in {len(files)} files")
    spec = load_source(cfg, "hdfs")
    address = SessionKey("ip", r"/\d+\.\d+\.\d+\.\d+")
    two = dataclasses.replace(spec, session_keys=(*spec.session_keys, address))
    for name, s in (("every bronze column, one session key", spec), ("the same, two keys", two)):
        best(
            name,
            ingest.parse_lines(lines, s, date(2008, 11, 9), cfg.ingest.max_parse_bytes, jvm=True),
        )

    with gzip.open(PROXIFIER, "rt", encoding="utf-8") as f:
        text = f.read().splitlines()
    sample = spark.createDataFrame([(t,) for t in text], "t string")
    repeated = (
        sample.crossJoin(spark.range(100).select(F.col("id").alias("k")))
        .select(F.concat("t", F.col("k").cast("string")).alias("t"))
        .repartition(2)
        .cache()
    )
    masker = Masker(masks_for(load_source(cfg, "proxifier")))
    print(f"{repeated.count():,} Proxifier lines, {len(masker.jvm_scans)} scans")
    best(
        "Proxifier masked by the Java functions",
        repeated.select(masker.masked(F.col("t"), jvm=True)),
    )
    spark.stop()


if __name__ == "__main__":
    main()
