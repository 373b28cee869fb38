"""``make demo``: the pipeline on the bundled real sample with local Spark, no network.

Each bundled source is ingested into ``bronze.raw_lines`` for one night, then its templates
are mined into ``silver.events`` and ``silver.templates``; a per-source summary is printed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from logcrnn import ingest, mining
from logcrnn.config import Config
from logcrnn.errors import UsageError
from logcrnn.lake import Lake
from logcrnn.spark import spark_session

log = logging.getLogger(__name__)

#: source -> sample file under data/sample
DEMO_INPUTS = {
    "hdfs": "hdfs/HDFS_20000.log.gz",
    "bgl": "loghub_2k/BGL/BGL_2k.log.gz",
}


def run(cfg: Config, sample_dir: Path, night: str) -> dict[str, Any]:
    """Ingest every demo source for ``night``; return per-source figures."""
    missing = [p for p in DEMO_INPUTS.values() if not (sample_dir / p).is_file()]
    if missing:
        raise UsageError(f"bundled sample missing under {sample_dir}: {', '.join(missing)}")
    sources = []
    with spark_session("demo", cfg.spark) as spark:
        lake = Lake.from_settings(spark, cfg.lake)
        for source, rel in DEMO_INPUTS.items():
            report = ingest.run(spark, cfg, source, [str(sample_dir / rel)], night, lake=lake)
            mined = mining.mine_night(spark, cfg, lake, source, night)
            sources.append({**report.as_dict(), "templates": mined.templates})
        bronze = lake.read("bronze.raw_lines", night=night)
        per_source = {
            r["source"]: r.asDict()
            for r in bronze.groupBy("source")
            .agg(
                F.count(F.lit(1)).alias("lines"),
                F.sum(F.col("parse_ok").cast("int")).alias("parsed"),
                F.countDistinct("component").alias("components"),
                F.sum(F.size("session_keys")).alias("session_key_refs"),
                F.sum((F.col("label").isNotNull() & (F.col("label") != "-")).cast("int")).alias(
                    "alert_lines"
                ),
                F.min("ts").alias("first_ts"),
                F.max("ts").alias("last_ts"),
            )
            .collect()
        }
    return {
        "night": night,
        "lake": lake.root,
        "backend": lake.backend,
        "sources": sources,
        "bronze": per_source,
    }


def format_summary(result: dict[str, Any]) -> str:
    lines = [
        f"logcrnn demo: night {result['night']}, lake {result['lake']} ({result['backend']})",
        f"{'source':<8} {'lines':>7} {'parsed':>7} {'malformed':>9} {'components':>10} "
        f"{'alerts':>6} {'templates':>9}  time range (UTC)",
    ]
    for rep in result["sources"]:
        b = result["bronze"].get(rep["source"], {})
        lines.append(
            f"{rep['source']:<8} {rep['lines_read']:>7} {rep['parsed']:>7} "
            f"{rep['malformed']:>9} {b.get('components', 0):>10} {b.get('alert_lines', 0):>6} "
            f"{rep['templates']:>9}  "
            f"{b.get('first_ts')} .. {b.get('last_ts')}"
        )
    lines.append(
        'query it: .venv/bin/logcrnn sql "SELECT source, template, count FROM '
        'silver.templates ORDER BY count DESC"'
    )
    return "\n".join(lines)
