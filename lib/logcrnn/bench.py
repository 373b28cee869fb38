"""Benchmarks: commands that print their figures next to a same-run baseline.

``bench ingest``: ``synth`` writes N lines of the source's format (split into several files),
then, alternating, a raw copy of those files (``spark.read.text(...).write.parquet(...)``, no
parsing) and the full ingest (line numbering, parsing, bronze write and Delta commit) run
``repeat`` times each in one Spark session.  Rates use the median run.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from logcrnn.config import Config, load_source
from logcrnn.synth import synth

log = logging.getLogger(__name__)


def _bench_data(
    cfg: Config, source: str, sample: Path, lines: int, files: int, workdir: Path, seed: int
) -> Path:
    """Synthesised input, reused across runs with the same parameters."""
    folder = workdir / f"data-{source}-{lines}-{files}-{seed}"
    marker = folder / "_DONE"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    synth(load_source(cfg, source), sample, lines, folder, files=files, seed=seed)
    marker.write_text(json.dumps({"sample": str(sample), "lines": lines}))
    log.info("synthesised %d lines in %.1fs", lines, time.perf_counter() - started)
    return folder


def bench_ingest(
    cfg: Config,
    source: str,
    sample: Path,
    lines: int,
    files: int,
    repeat: int,
    workdir: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the ingest benchmark and return its figures."""
    from logcrnn import ingest
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    data = _bench_data(cfg, source, sample, lines, files, workdir, seed)
    inputs = sorted(str(p) for p in data.glob("part-*.log"))
    raw_out = workdir / "raw-copy"
    lake_root = workdir / "lake"
    raw_s: list[float] = []
    ingest_s: list[float] = []
    reports = []
    with spark_session("bench_ingest", cfg.spark) as spark:
        lake = Lake(spark, str(lake_root), cfg.lake.backend)
        for _ in range(repeat):
            shutil.rmtree(raw_out, ignore_errors=True)
            started = time.perf_counter()
            spark.read.text(inputs).write.parquet(str(raw_out))
            raw_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = ingest.run(spark, cfg, source, inputs, "2008-11-09", lake=lake)
            ingest_s.append(time.perf_counter() - started)
            reports.append(report)
            log.info("raw copy %.1fs, ingest %.1fs", raw_s[-1], ingest_s[-1])
        cores = spark.sparkContext.defaultParallelism
    shutil.rmtree(raw_out, ignore_errors=True)
    shutil.rmtree(lake_root, ignore_errors=True)
    raw_med, ingest_med = statistics.median(raw_s), statistics.median(ingest_s)
    last = reports[-1]
    return {
        "benchmark": "ingest",
        "source": source,
        "lines": lines,
        "files": len(inputs),
        "bytes": last.bytes,
        "cores": cores,
        "repeat": repeat,
        "raw_copy_seconds": [round(s, 2) for s in raw_s],
        "ingest_seconds": [round(s, 2) for s in ingest_s],
        "raw_copy_lines_per_s": round(lines / raw_med),
        "ingest_lines_per_s": round(lines / ingest_med),
        "ratio_ingest_to_raw": round(raw_med / ingest_med, 3),
        "lines_read": last.lines_read,
        "malformed": last.malformed,
    }


def format_ingest(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"ingest benchmark: {result['lines']:,} {result['source']} lines in "
            f"{result['files']} files ({result['bytes'] / 1e6:.0f} MB), "
            f"{result['cores']} cores, median of {result['repeat']}",
            f"  raw copy (read.text -> parquet): {result['raw_copy_lines_per_s']:>12,} lines/s"
            f"   runs {result['raw_copy_seconds']}",
            f"  ingest (parse -> bronze, commit): {result['ingest_lines_per_s']:>11,} lines/s"
            f"   runs {result['ingest_seconds']}",
            f"  ingest / raw copy: {result['ratio_ingest_to_raw']:.2f}"
            f"   (lines read {result['lines_read']:,}, malformed {result['malformed']:,})",
        ]
    )
