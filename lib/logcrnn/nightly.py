"""``logcrnn nightly``: every nightly stage in order, for cron (one Spark session).

For each source, night D:

1. ingest D's raw files into bronze (a night with no files is reported, not a crash);
2. mine D into silver;
3. build the windows of D-1 again (sessions that ran past midnight are whole only now that D
   is mined: the midnight rule) and of D, with the current model's statistics;
4. score D-1 and D with the current model (nights without windows get an empty partition).

Every stage replaces its own partitions, so the whole run can be repeated for a night, and a
failure leaves the tables of the failed stage as they were.  Without a trained model the
windows are built and scoring is skipped with a message; without fitted statistics the
windows carry raw features only.
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from logcrnn import ingest, mining, score, windows
from logcrnn.config import Config, load_source
from logcrnn.errors import DataError, UsageError
from logcrnn.lake import Lake

log = logging.getLogger(__name__)


def raw_inputs(cfg: Config, source: str, night: date, pattern: str | None) -> list[str]:
    """The night's raw files: ``pattern`` with ``{source}`` / ``{date}`` filled in, else
    every file under ``<lake.raw_root>/<source>/<date>/``."""
    if pattern is None:
        pattern = str(Path(cfg.lake.raw_root) / "{source}" / "{date}" / "*")
    filled = pattern.format(source=source, date=night.isoformat())
    if "://" in filled:  # object stores: let Spark expand the glob
        return [filled]
    return sorted(p for p in glob.glob(filled) if Path(p).is_file())


def run(
    spark: SparkSession,
    cfg: Config,
    sources: Sequence[str],
    night: date | str,
    pattern: str | None = None,
    labels: str | None = None,
) -> dict[str, Any]:
    """Run the night for every source; returns each stage's report per source."""
    from logcrnn.model.artifact import current_artifact, load_artifact

    night = date.fromisoformat(str(night))
    if labels is not None and len(sources) != 1:
        raise UsageError("--labels needs exactly one --source")
    for source in sources:
        load_source(cfg, source)
    lake = Lake.from_settings(spark, cfg.lake)
    started = time.perf_counter()
    out: dict[str, Any] = {"night": str(night), "sources": {}}
    for source in sources:
        stages: dict[str, Any] = {}
        out["sources"][source] = stages
        inputs = raw_inputs(cfg, source, night, pattern)
        if inputs:
            stages["ingest"] = ingest.run(spark, cfg, source, inputs, night, lake=lake).as_dict()
            stages["mine"] = mining.mine_night(spark, cfg, lake, source, night).as_dict()
        else:
            log.warning("%s %s: no raw files (%s): nothing to ingest", source, night,
                        pattern or cfg.lake.raw_root)  # fmt: skip
            stages["ingest"] = {"files": 0, "message": "no raw files for this night"}
        try:
            model = current_artifact(lake.root, source, cfg.train.models_dir)
            stats_night = load_artifact(model).stats_night
        except DataError as exc:
            log.warning("%s: no usable model (%s): windows only, no scoring", source, exc)
            model, stats_night = None, None
        # the night before is rebuilt only if it has data (never an empty partition for a
        # night the lake never had); night D always gets its partitions, empty or not
        before = night - timedelta(days=1)
        nights = [before, night] if _has_events(lake, source, before) else [night]
        for d in nights:
            report = windows.build_windows(
                spark, cfg, lake, source, d, labels=labels, stats_night=stats_night
            )
            stages[f"windows {d}"] = report.as_dict()
        if model is not None:
            for d in nights:
                stages[f"score {d}"] = score.score_night(
                    spark, cfg, lake, source, d, model
                ).as_dict()
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _has_events(lake: Lake, source: str, night: date) -> bool:
    return lake.exists(mining.EVENTS) and not lake.read(mining.EVENTS, night, source).isEmpty()


def summary(result: dict[str, Any]) -> list[str]:
    """One line per stage and source."""
    lines = [f"logcrnn nightly {result['night']}: {result['seconds']}s"]
    for source, stages in result["sources"].items():
        for stage, rep in stages.items():
            if stage == "ingest":
                what = rep.get("message") or (
                    f"{rep['lines_read']} lines, {rep['malformed']} malformed"
                    f" ({100 * rep['malformed_share']:.1f}%)"
                )
            elif stage == "mine":
                what = f"{rep['templates']} templates ({rep['new_templates']} new)"
            elif stage.startswith("windows"):
                what = f"{sum(rep['windows'].values())} windows"
            else:
                what = (
                    f"{rep['windows']} windows scored, {rep['anomalies']} anomalous, "
                    f"{100 * rep['unseen_share']:.1f}% of events unseen in training"
                )
            lines.append(f"  {source:8} {stage:18} {what}")
    return lines
