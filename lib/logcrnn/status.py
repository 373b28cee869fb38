"""Where each source's pipeline stands: the nights every stage holds, the gaps, the model.

``logcrnn status`` reads only the Delta logs (each partition's row count comes from the file
statistics there; the native backend counts the rows instead) and the models folder.  It
reports, per source, the first and last night and the missing nights of each stage's table,
and names what an operator has to act on:

* a night missing between a table's first and last night (a night that failed or was never
  run; a night with no raw files leaves no partition either, so it shows here too);
* a stage that stopped behind the one before it (mining behind ingestion, scoring behind the
  windows); the windows may trail the events by one night, as the midnight rule has them;
* no current model while there are windows to score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

from logcrnn.config import Config
from logcrnn.lake import Lake

#: the nightly stages' tables, in pipeline order
STAGES = ("bronze.raw_lines", "silver.events", "gold.windows", "gold.anomalies")
#: how many nights each stage may trail the one before it (windows: the midnight rule)
_MAY_TRAIL = {"silver.events": 0, "gold.windows": 1, "gold.anomalies": 0}
#: the command that brings each stage's table up to date
_ACTION = {"silver.events": "mine", "gold.windows": "windows", "gold.anomalies": "score"}
_SHOWN = 5


@dataclass(frozen=True)
class StageStatus:
    table: str
    nights: int = 0
    first: str | None = None
    last: str | None = None
    #: rows of the last night (-1: the Delta log has no statistics for some file)
    last_rows: int = 0
    #: nights between ``first`` and ``last`` the table does not hold
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceStatus:
    source: str
    stages: list[StageStatus]
    #: the current model (version, created_at, train_from, train_to, valid_f1), or None
    model: dict[str, Any] | None
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [self.source]
        for s in self.stages:
            if not s.nights:
                out.append(f"  {s.table:<18} no night")
                continue
            gap = f", {len(s.missing)} missing" if s.missing else ""
            out.append(
                f"  {s.table:<18} {s.nights} night(s) {s.first}..{s.last}{gap} "
                f"(last: {s.last_rows:,} rows)"
            )
        if self.model is None:
            out.append(f"  {'model':<18} none")
        else:
            m = self.model
            f1 = "-" if m.get("valid_f1") is None else f"{m['valid_f1']:.3f}"
            out.append(
                f"  {'model':<18} {m['version']} (nights {m['train_from']}..{m['train_to']}, "
                f"validation F1 {f1})"
            )
        out += [f"  ! {p}" for p in self.problems] or ["  ok"]
        return out


def _days(first: str, last: str) -> list[str]:
    d, end, out = date.fromisoformat(first), date.fromisoformat(last), []
    while d <= end:
        out.append(str(d))
        d += timedelta(days=1)
    return out


def _listed(nights: list[str]) -> str:
    more = f" and {len(nights) - _SHOWN} more" if len(nights) > _SHOWN else ""
    return ", ".join(nights[:_SHOWN]) + more


def _current_model(lake: Lake, cfg: Config, source: str) -> dict[str, Any] | None:
    from logcrnn.errors import DataError, UsageError
    from logcrnn.model import artifact

    try:
        folder = artifact.models_folder(lake.root, source, cfg.train.models_dir)
        current = artifact.current_version(folder)
    except (DataError, UsageError):
        return None
    if not current:
        return None
    v = artifact.describe_version(folder, current)
    keys = ("version", "created_at", "train_from", "train_to", "valid_f1", "error")
    return {k: getattr(v, k) for k in keys}


def run(lake: Lake, cfg: Config, sources: Sequence[str] | None = None) -> list[SourceStatus]:
    """The status of ``sources`` (default: every source any stage's table holds)."""
    by_table: dict[str, dict[str, dict[str, int]]] = {}
    for table in STAGES:
        nights: dict[str, dict[str, int]] = {}
        if lake.exists(table):
            for night, src, rows in lake.nights(table):
                nights.setdefault(str(src), {})[night] = rows
        by_table[table] = nights
    names = sorted(sources or {s for t in by_table.values() for s in t})
    out = []
    for source in names:
        stages = []
        for table in STAGES:
            held = by_table[table].get(source, {})
            if not held:
                stages.append(StageStatus(table))
                continue
            first, last = min(held), max(held)
            missing = [d for d in _days(first, last) if d not in held]
            stages.append(StageStatus(table, len(held), first, last, held[last], missing))
        model = _current_model(lake, cfg, source)
        out.append(SourceStatus(source, stages, model, _problems(stages, model)))
    return out


def _problems(stages: list[StageStatus], model: dict[str, Any] | None) -> list[str]:
    problems = []
    for s in stages:
        if s.missing:
            problems.append(
                f"{s.table} lacks {len(s.missing)} night(s) between {s.first} and {s.last}: "
                f"{_listed(s.missing)}"
            )
    for before, s in pairwise(stages):
        if before.last is None:
            continue
        trail = _MAY_TRAIL[s.table]
        due = date.fromisoformat(before.last) - timedelta(days=trail)
        if before.first is None or date.fromisoformat(before.first) > due:
            continue  # nothing this stage could hold yet (the windows of a first night)
        if s.last is None or date.fromisoformat(s.last) < due:
            where = f"ends at {s.last}" if s.last else "holds no night"
            problems.append(
                f"{s.table} {where}, {before.table} ends at {before.last}: run logcrnn "
                f"{_ACTION[s.table]} for the nights "
                f"{'after ' + s.last if s.last else 'up to ' + str(due)}"
            )
    windows = stages[STAGES.index("gold.windows")]
    if windows.nights and model is None:
        problems.append("no current model: run logcrnn train (gold.windows cannot be scored)")
    elif model is not None and model.get("error"):
        problems.append(f"the current model does not load: {model['error']}")
    return problems
