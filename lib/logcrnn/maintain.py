"""Lake upkeep for a long-running deployment: old nights dropped, unused files deleted.

Every nightly write replaces its partition in a new commit, so the files of a re-run night,
and of nights dropped by retention, stay on storage until a VACUUM deletes them (that is what
keeps earlier versions readable and lets a failed job roll back).  ``logcrnn maintain --date D``
does, table by table:

1. vacuum it: delete the files no current row lives in once they are older than
   ``retention.vacuum_hours`` (a week by default), including files a killed write left
   uncommitted;
2. drop its nights older than ``D - retention.<table>`` days, for the four per-night data
   tables that have a retention set (one commit per table; their files are deleted by the
   first vacuum after ``vacuum_hours``);

and, with ``retention.model_versions`` set, deletes each source's model versions beyond its
newest N, never the current one.

Nothing here reads or rewrites rows: both steps work on the Delta log and file listings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from logcrnn.config import Config
from logcrnn.errors import UsageError
from logcrnn.lake import Lake
from logcrnn.schemas import table_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableUpkeep:
    """What maintenance did to one table (or would do, in a dry run)."""

    table: str
    #: nights older than this were dropped (None: the table has no retention set)
    dropped_before: str | None = None
    #: ``night/source`` of each partition dropped
    dropped: list[str] = field(default_factory=list)
    dropped_rows: int = 0
    #: the version the drop committed (None: nothing dropped, or a dry run)
    version: int | None = None
    #: Parquet files deleted (Spark's ``_SUCCESS`` and checksum files beside them go too)
    files_deleted: int = 0
    #: bytes of every file deleted
    bytes_deleted: int = 0


@dataclass(frozen=True)
class UpkeepReport:
    night: str
    dry_run: bool
    vacuum_hours: int
    tables: list[TableUpkeep]
    #: model versions deleted (or that would be), by source (``retention.model_versions``)
    models: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> list[str]:
        verb = "would drop" if self.dry_run else "dropped"
        delete = "would delete" if self.dry_run else "deleted"
        lines = []
        for t in self.tables:
            parts = []
            if t.dropped_before is not None:
                parts.append(
                    f"{verb} {len(t.dropped)} partition(s) before {t.dropped_before}"
                    f" ({t.dropped_rows:,} rows)"
                )
            parts.append(f"{delete} {t.files_deleted} file(s), {t.bytes_deleted / 1e6:.1f} MB")
            lines.append(f"  {t.table:<22} " + "; ".join(parts))
        for source, versions in self.models.items():
            lines.append(f"  {'models/' + source:<22} {delete} {len(versions)} model version(s)")
        return lines


def run(
    lake: Lake,
    cfg: Config,
    night: date | str,
    tables: Sequence[str] | None = None,
    source: str | None = None,
    vacuum_hours: int | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> UpkeepReport:
    """Drop old nights and vacuum ``tables`` (default: every table of the lake).

    ``source``: drop only that source's old nights (the vacuum is per table, whatever the
    source).  ``vacuum_hours``: overrides ``retention.vacuum_hours``.  ``force``: vacuum
    below the tables' own minimum retention (Delta's ``delta.deletedFileRetentionDuration``).
    """
    night_d = date.fromisoformat(str(night))
    hours = cfg.retention.vacuum_hours if vacuum_hours is None else int(vacuum_hours)
    if hours < 0:
        raise UsageError(f"maintain: the vacuum retention must be >= 0 hours, got {hours}")
    for t in tables or ():
        table_spec(t)  # an unknown name is a UsageError naming the known tables
    keep = cfg.retention.keep_days()
    chosen = sorted(set(tables)) if tables else lake.tables()
    done = []
    for table in chosen:
        if not lake.exists(table):
            done.append(TableUpkeep(table))
            continue
        # the vacuum first: it fails (retention below the table's minimum) before anything
        # changed, and it could not delete the files of nights dropped now anyway
        files = lake.vacuum(table, hours, dry_run=dry_run, force=force)
        cutoff = None
        dropped: list[str] = []
        rows = 0
        version = None
        if table in keep:
            cutoff = str(night_d - timedelta(days=keep[table]))
            old, version = lake.drop_nights(table, cutoff, source, dry_run=dry_run)
            dropped = [f"{n}/{s}" if s else n for n, s, _ in old]
            rows = sum(max(r, 0) for _, _, r in old)
        done.append(
            TableUpkeep(
                table,
                dropped_before=cutoff,
                dropped=dropped,
                dropped_rows=rows,
                version=version,
                files_deleted=sum(1 for n, _ in files if n.endswith(".parquet")),
                bytes_deleted=sum(b for _, b in files),
            )
        )
        log.info("maintained %s", done[-1])
    models = {}
    if cfg.retention.model_versions and not tables:
        models = prune_models(lake, cfg, cfg.retention.model_versions, source, dry_run)
    return UpkeepReport(str(night_d), dry_run, hours, done, models)


def prune_models(
    lake: Lake, cfg: Config, keep: int, source: str | None = None, dry_run: bool = False
) -> dict[str, list[str]]:
    """Each source's model versions beyond its newest ``keep`` (never the current one) deleted
    (:func:`logcrnn.model.artifact.prune_versions`); ``source``: that source's only."""
    from logcrnn.model import artifact

    root = artifact.models_folder(lake.root, "-", cfg.train.models_dir).parent
    folders = (
        [root / source]
        if source
        else sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    out = {}
    for folder in folders:
        if artifact.list_versions(folder):
            out[folder.name] = artifact.prune_versions(folder, keep, dry_run=dry_run)
    return out
