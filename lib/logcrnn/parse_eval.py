"""Template-mining accuracy on Loghub-style samples: grouping and parsing accuracy, speed.

* **Grouping accuracy (GA)**, Zhu et al., ICSE-SEIP 2019: a line is correctly parsed when the
  set of lines that share its predicted template is exactly the set of lines that share its
  true template; GA is the fraction of such lines.
* **Parsing accuracy (PA)**: the fraction of lines whose predicted template text equals the
  true template (whitespace runs collapsed on both sides).

The run uses the same code as the nightly job (:mod:`logcrnn.mining`): the source's format
parses each line, its mask rules mask the message, Drain3s mine the distinct masked messages in
shards, one miner merges their templates, and every message takes the template that Drain3's
read-only ``match`` gives.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from logcrnn.config import Config, load_source
from logcrnn.errors import UsageError
from logcrnn.ingest import parse_lines
from logcrnn.masking import Masker, masks_for
from logcrnn.mining import distinct_messages, learn_and_match, message_text, mine_shards, miner_for

_WS = re.compile(r"\s+")


def grouping_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """GA over aligned per-line event ids (see module docstring)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    if not truth:
        return 0.0
    by_pred: dict[str, list[int]] = defaultdict(list)
    by_truth: dict[str, list[int]] = defaultdict(list)
    for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        by_pred[p].append(i)
        by_truth[t].append(i)
    correct = 0
    for lines in by_pred.values():
        truth_ids = {truth[i] for i in lines}
        if len(truth_ids) == 1 and len(by_truth[next(iter(truth_ids))]) == len(lines):
            correct += len(lines)
    return correct / len(truth)


def _norm(template: str) -> str:
    return _WS.sub(" ", template.strip())


def parsing_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """PA over aligned per-line template texts."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    if not truth:
        return 0.0
    return sum(_norm(t) == _norm(p) for t, p in zip(truth, predicted, strict=True)) / len(truth)


@dataclass
class ParseEvalResult:
    source: str
    lines: int
    grouping_accuracy: float
    parsing_accuracy: float
    templates_found: int
    templates_true: int
    lines_per_s: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_text(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def read_truth(path: Path) -> list[dict[str, str]]:
    """Rows of a Loghub ``*_structured.csv`` (plain or .gz)."""
    if not path.is_file():
        raise UsageError(f"truth file not found: {path}")
    rows = list(csv.DictReader(io.StringIO(_read_text(path))))
    if not rows or not {"EventId", "EventTemplate"} <= rows[0].keys():
        raise UsageError(f"{path}: expected Loghub columns EventId, EventTemplate")
    return rows


def evaluate_file(
    spark: SparkSession,
    cfg: Config,
    source: str,
    log_path: Path,
    truth_path: Path,
    shards: int | None = None,
) -> ParseEvalResult:
    """Mask and mine one Loghub-style log; score it against its structured ground truth.

    The path is the nightly job's (:mod:`logcrnn.mining`): masks in Spark, distinct messages
    mined in shards, the shard templates merged by one miner, every message matched on the
    executors.
    """
    spec = load_source(cfg, source)
    if not log_path.is_file():
        raise UsageError(f"log file not found: {log_path}")
    raw = _read_text(log_path).splitlines()
    truth = read_truth(truth_path)
    if len(truth) != len(raw):
        raise UsageError(f"{truth_path}: {len(truth)} rows for {len(raw)} lines in {log_path}")
    started = time.perf_counter()
    lines = spark.createDataFrame(
        [(log_path.name, i + 1, v) for i, v in enumerate(raw)],
        "file string, line_no long, value string",
    )
    parsed = parse_lines(lines, spec, date(2000, 1, 1), cfg.ingest.max_parse_bytes).cache()
    masker = Masker(masks_for(spec))
    distinct = distinct_messages(parsed, masker).cache()
    shard_rows = mine_shards(distinct, spec, shards or 2 * spark.sparkContext.defaultParallelism)
    miner = miner_for(spec).fit([])
    mapping = learn_and_match(spark, distinct, miner, [(t, n) for t, n, _ in shard_rows])
    ids = {r.masked: r.template_id for r in mapping.select("masked", "template_id").collect()}
    texts = dict(miner.templates_)
    texts.update({r.template_id: r.masked for r in mapping.where("unmatched").collect()})
    per_line = parsed.select("line_no", masker.masked(message_text()).alias("m")).collect()
    mapping.unpersist()
    distinct.unpersist()
    parsed.unpersist()
    predicted_ids = [ids[r.m] for r in sorted(per_line, key=lambda r: r.line_no)]
    seconds = time.perf_counter() - started
    predicted_templates = [texts.get(i, "") for i in predicted_ids]
    return ParseEvalResult(
        source=source,
        lines=len(raw),
        grouping_accuracy=round(grouping_accuracy([r["EventId"] for r in truth], predicted_ids), 4),
        parsing_accuracy=round(
            parsing_accuracy([r["EventTemplate"] for r in truth], predicted_templates), 4
        ),
        templates_found=len(set(predicted_ids)),
        templates_true=len({r["EventId"] for r in truth}),
        lines_per_s=round(len(raw) / seconds, 1),
        seconds=round(seconds, 3),
    )


def find_systems(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(source, log, truth)`` for every ``<Sys>/<Sys>_2k.log[.gz]`` under a Loghub folder."""
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        logs = sorted(sub.glob("*_2k.log")) + sorted(sub.glob("*_2k.log.gz"))
        truths = sorted(sub.glob("*_2k.log_structured.csv*"))
        if logs and truths:
            found.append((sub.name.lower(), logs[0], truths[0]))
    if not found:
        raise UsageError(f"no Loghub 2k systems under {folder}")
    return found
