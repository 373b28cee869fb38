"""Cost of the masking variants behind template mining (the table in docs/BENCHMARKS.md).

    .venv/bin/python tools/profile_mine.py [DATA_DIR] [N_FILES]

DATA_DIR defaults to the folder `logcrnn bench ingest --lines 10000000 --files 16` leaves
under .bench/; its first N_FILES (default 4, i.e. 2.5M lines) are ingested into a scratch lake
once, then each variant runs twice in one warm session over bronze and the faster run is
printed.  The ``noop`` sink computes the column without writing it.  The ``events:`` rows
build up ``mining.events_frame`` (the events write of a mining night) one step at a time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from logcrnn import ingest, mining
from logcrnn.config import load_config, load_source
from logcrnn.lake import Lake
from logcrnn.masking import JVM_MASK, JVM_MASK_VALUES, Masker, first_chars, masks_for
from logcrnn.schemas import table_spec
from logcrnn.spark import build_session, jvm_function
from logcrnn.windows import event_count_columns


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else ".bench/data-hdfs-10000000-16-0")
    n_files = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    files = sorted(str(p) for p in data.glob("part-*.log"))[:n_files]
    if not files:
        sys.exit(f"no part-*.log under {data}: run `logcrnn bench ingest` first")
    cfg = load_config(None)
    spark = build_session("profile_mine", cfg.spark)
    spec = load_source(cfg, "hdfs")
    rules = masks_for(spec)
    scratch = Path(tempfile.mkdtemp(prefix="profile_mine_"))
    try:
        lake = Lake(spark, str(scratch / "lake"))
        ingest.run(spark, cfg, "hdfs", files, "2008-11-09", lake=lake)
        bronze = lake.read("bronze.raw_lines", "2008-11-09", "hdfs")
        text = mining.message_text()

        def timed(name: str, action: Callable[[int], object]) -> None:
            """The faster of two runs of ``action(run)``."""
            times = []
            for run in range(2):
                started = time.perf_counter()
                action(run)
                times.append(time.perf_counter() - started)
            print(f"{name:<60} {min(times):6.2f}s", flush=True)

        def best(name: str, make: Column, frame: DataFrame | None = None) -> None:
            source = frame if frame is not None else bronze
            timed(name, lambda _: source.select(make).write.format("noop").mode("overwrite").save())

        best("read the message column", text)
        sequential = text
        for rule in rules:
            sequential = F.regexp_replace(sequential, rule.regex, rule.token)
        best(f"{len(rules)} mask rules, one regexp_replace each", sequential)
        plain = Masker(rules, guard=False)
        best("one alternation, one scan", plain.masked(text, jvm=False))
        ((alternation, token),) = plain.scans
        one_class = f"(?=[{first_chars(alternation)}])(?:{alternation})"
        single = F.regexp_replace(text, one_class, token)
        best("behind a look-ahead of one class for every rule", single)
        fast = Masker(rules)
        best("behind the look-ahead with a \\b branch", fast.masked(text, jvm=False))
        if jvm_function(spark, JVM_MASK):
            best("the same scan, the Java function logcrnn_mask, kept", fast.masked(text, jvm=True))
        both = F.struct(fast.masked(text, jvm=False), fast.values(text))
        best("  masked text and values, two scans", both)
        texts = bronze.select(text.alias("t"))
        one_scan = fast.with_masked_values(texts, F.col("t"), jvm=False)
        best("  masked text and values, one scan of the built-ins", F.struct("masked", "values"),
             one_scan)  # fmt: skip
        if jvm_function(spark, JVM_MASK_VALUES):
            java = fast.with_masked_values(texts, F.col("t"), jvm=True)
            best("  masked text and values, the Java function, kept", F.struct("masked", "values"),
                 java)  # fmt: skip
        else:
            print("  (the Java functions are not built: no row for them)")
        # the events write of mine_night, step by step, with a stand-in lookup of the same
        # size (every distinct masked message, a hash for its template id)
        lookup = F.broadcast(
            mining.distinct_messages(bronze, fast)
            .select(
                "masked",
                F.substring(F.sha1("masked"), 1, 16).alias("template_id"),
                F.lit(None).cast("array<string>").alias("generalised"),
            )
            .localCheckpoint()
        )
        events = mining.events_frame(mining.masked_lines(bronze, fast), lookup)
        best("events: + the join to the templates", F.struct(*events.columns), events)
        observed = events.observe(Observation(), *event_count_columns())
        best("events: + the event-count observation", F.struct(*events.columns), observed)
        timed(
            "events: + the Parquet write, a dictionary for every column",
            lambda run: events.write.parquet(str(scratch / f"events{run}")),
        )
        options = table_spec(mining.EVENTS).parquet_options
        timed(
            "events: + the Parquet write, the parameters without one, kept",
            lambda run: events.write.options(**options).parquet(str(scratch / f"plain{run}")),
        )
        started = time.perf_counter()
        cached = bronze.select(fast.masked(text).alias("masked"), "line_no").persist(
            StorageLevel.MEMORY_AND_DISK
        )
        cached.count()
        print(f"{'persist() of the masked lines (building the cache)':<60} "
              f"{time.perf_counter() - started:6.2f}s")  # fmt: skip
        cached.unpersist()
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
