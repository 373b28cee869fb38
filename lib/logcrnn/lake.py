"""The lake: Delta tables by name under one root, written one partition at a time.

Two backends share one interface:

* ``delta-spark``: native ``format("delta")`` with ``replaceWhere`` when the session has the
  Delta SQL extension (Databricks, EMR, a classpath with the Delta jars).
* ``delta-rs``: Spark writes Parquet in parallel on the executors into a fresh folder inside
  the partition, and the driver commits exactly those files as **one** Delta transaction with
  the ``deltalake`` package (an overwrite scoped by partition filters).  No row passes through
  the driver.  If anything fails before the commit, the new folder is deleted and the table's
  log is untouched, so readers never see a half-written night.

In both cases the partition columns are also stored inside the Parquet files, so the files
read back correctly whatever folder they sit in.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from logcrnn.config import LakeSettings
from logcrnn.errors import LakeError, UsageError
from logcrnn.filestats import FileStats, footer_row_groups, parse_footer_text, summarise
from logcrnn.schemas import TABLES, TableSpec, check_schema, table_spec
from logcrnn.spark import delta_extension_loaded, jvm_function

log = logging.getLogger(__name__)

_REPLACED = (
    "{table} {values}: another job replaced this partition while this one was writing it; "
    "this write was not committed"
)
_TABLE_REF = re.compile(r"(?<![\w.`])(bronze|silver|gold|scratch)\.([A-Za-z_]\w*)\b")


def view_name(table: str) -> str:
    """The Spark SQL temporary view a table is registered under with the delta-rs backend."""
    return table.replace(".", "_")


def _has_scheme(root: str) -> bool:
    parsed = urlparse(root)
    return len(parsed.scheme) > 1  # one letter is a Windows drive, not a scheme


class Lake:
    """Tables ``layer.name`` stored as Delta under ``root/layer/name``.

    Parameters
    ----------
    spark
        The session used to read and write data.
    root
        Lake root: a local path or a URI both Spark and delta-rs understand.
    backend
        ``auto`` (native Delta if the session has the extension, else delta-rs),
        ``delta-spark`` or ``delta-rs``.
    """

    def __init__(self, spark: SparkSession, root: str, backend: str = "auto") -> None:
        self.spark = spark
        self.root = root.rstrip("/") if _has_scheme(root) else str(Path(root).resolve())
        if backend == "auto":
            backend = "delta-spark" if delta_extension_loaded(spark) else "delta-rs"
        if backend == "delta-spark" and not delta_extension_loaded(spark):
            raise UsageError(
                "lake.backend is delta-spark but the session has no Delta extension "
                "(put the Delta jars on the classpath or use backend auto/delta-rs)"
            )
        if backend not in ("delta-spark", "delta-rs"):
            raise UsageError(f"unknown lake backend {backend!r}")
        self.backend = backend

    @classmethod
    def from_settings(cls, spark: SparkSession, settings: LakeSettings) -> Lake:
        return cls(spark, settings.root, settings.backend)

    # ---------------------------------------------------------------------------------------
    # naming

    def path(self, table: str) -> str:
        """Where ``table`` lives."""
        spec = table_spec(table)
        return f"{self.root}/{spec.layer}/{spec.short}"

    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self.path(table)))

    def _dt(self, table: str, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.path(table), version=version)
        except TableNotFoundError as exc:
            raise LakeError(f"table {table} does not exist at {self.path(table)}") from exc
        except Exception as exc:  # delta-rs raises several kinds
            raise LakeError(f"cannot open table {table} at {self.path(table)}: {exc}") from exc

    # ---------------------------------------------------------------------------------------
    # writing

    def write(
        self,
        df: DataFrame,
        table: str,
        night: date | str,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Replace the partition ``night`` (and ``source`` where the table has it) with ``df``.

        ``df`` carries the table's columns; its partition columns are overwritten with the
        given values.  Returns the table version this write created.  Rows of other nights or
        sources are never touched; on any failure the table is left as it was.
        """
        return self.write_with_stats(df, table, night, source, metadata)[0]

    def write_with_stats(
        self,
        df: DataFrame,
        table: str,
        night: date | str,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[int, list[FileStats] | None]:
        """:meth:`write`, returning besides the version the exact figures of every file it
        committed (their footers' row counts, null counts and bounds), None with the native
        backend (Delta computes its own statistics there)."""
        spec = table_spec(table)
        night_str = str(date.fromisoformat(str(night)))
        values: dict[str, str] = {"night": night_str}
        if "source" in spec.partition_by:
            if not source:
                raise UsageError(f"{table} is partitioned by source: name the source to write")
            values["source"] = source
        elif source is not None:
            raise UsageError(f"{table} is not partitioned by source")
        df = df.withColumn("night", F.lit(night_str).cast("date"))
        if "source" in values:
            df = df.withColumn("source", F.lit(values["source"]))
        if spec.schema is not None:
            df = df.select(*[F.col(f.name) for f in spec.schema.fields])
            check_schema(df.schema, spec.schema, table)
        if self.backend == "delta-spark":
            return self._write_native(df, spec, values), None
        return self._write_deltars(df, spec, values, dict(metadata or {}))

    def _write_native(self, df: DataFrame, spec: TableSpec, values: dict[str, str]) -> int:
        where = " AND ".join(f"{k} = '{v}'" for k, v in values.items())
        existed = self.exists(spec.name)
        for attempt in (1, 2):
            try:
                (
                    df.write.format("delta")
                    .options(**spec.parquet_options)
                    .mode("overwrite")
                    .option("replaceWhere", where)
                    .partitionBy(*spec.partition_by)
                    .save(self.path(spec.name))
                )
                break
            except Exception as exc:
                # Delta's own conflict check scopes replaceWhere to its partition; the one
                # race it fails is two first writes creating the table (ProtocolChanged or
                # MetadataChanged): write once more into the table the other job created.
                created = not existed and self.exists(spec.name)
                if attempt == 1 and created and "Changed" in str(exc):
                    continue
                raise LakeError(f"writing {spec.name} ({where}) failed: {_short(exc)}") from exc
        return self.version(spec.name)

    def _write_deltars(
        self,
        df: DataFrame,
        spec: TableSpec,
        values: dict[str, str],
        metadata: dict[str, Any],
    ) -> tuple[int, list[FileStats]]:
        from deltalake import transaction

        table_path = self.path(spec.name)
        part_dir = "/".join(f"{k}={values[k]}" for k in spec.partition_by)
        txn = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        rel_dir = f"{part_dir}/{txn}"
        out_dir = f"{table_path}/{rel_dir}"
        fs = _HadoopFS(self.spark, out_dir)
        existing = self.exists(spec.name)
        if existing:
            current = self.schema(spec.name)
            check_schema(df.schema, current, spec.name)
        try:
            df.write.options(**spec.parquet_options).mode("errorifexists").parquet(out_dir)
            files = fs.list_parquet(out_dir)
            stats = [fs.parquet_stats(f"{out_dir}/{name}", df.schema) for name, _, _ in files]
            adds = [
                transaction.AddAction(
                    path=f"{rel_dir}/{name}",
                    size=size,
                    partition_values=dict(values),
                    modification_time=mtime,
                    data_change=True,
                    stats=st.delta_json(skip=spec.partition_by),
                )
                for (name, size, mtime), st in zip(files, stats, strict=True)
            ]
            rows = sum(st.rows for st in stats)
            info = {
                "logcrnn.partition": json.dumps(values),
                "logcrnn.rows": str(rows),
                **{f"logcrnn.{k}": str(v) for k, v in metadata.items()},
            }
            self._commit(spec, adds, values, existing, info, df.schema)
        except Exception as exc:
            fs.delete(out_dir)
            if isinstance(exc, (LakeError, UsageError)):
                raise
            raise LakeError(
                f"writing {spec.name} ({part_dir}) failed, table left unchanged: {_short(exc)}"
            ) from exc
        version = self.version(spec.name)
        log.info("%s v%d: %s replaced with %d rows", spec.name, version, part_dir, rows)
        return version, stats

    def _commit(
        self,
        spec: TableSpec,
        adds: list[Any],
        values: dict[str, str],
        existing: bool,
        info: dict[str, str],
        schema: StructType,
    ) -> None:
        """Commit ``adds`` as one Delta transaction replacing the partition ``values``.

        Jobs of other sources may commit to the same table meanwhile: delta-rs rebases an
        overwrite of this partition onto their commits (they touch other partitions), and a
        table another job created since this write began (two sources' first night) is
        written to as an existing table rather than failing.
        """
        from deltalake import CommitProperties, Schema, transaction

        delta_schema = Schema.from_json(schema.json())
        if not existing:
            try:
                transaction.create_table_with_add_actions(
                    self.path(spec.name),
                    delta_schema,
                    adds,
                    mode="error",
                    partition_by=list(spec.partition_by),
                    name=spec.name,
                    # delta-rs would commit a lost creation again as version 1, a second
                    # CREATE adding its files beside the winner's: fail it instead
                    commit_properties=CommitProperties(custom_metadata=info, max_commit_retries=0),
                )
                return
            except Exception:
                if not self.exists(spec.name):
                    raise
            log.info("%s was created by another job meanwhile: writing into it", spec.name)
            check_schema(schema, self.schema(spec.name), spec.name)
            if self._partition_files(self._dt(spec.name), values):
                raise LakeError(_REPLACED.format(table=spec.name, values=values))
        self._overwrite_partition(spec, adds, values, delta_schema, info)

    _COMMIT_ATTEMPTS = 8

    @staticmethod
    def _partition_actions(dt: Any, values: Mapping[str, str]) -> list[dict[str, Any]]:
        """The add actions (rows of ``get_add_actions``) of ``dt``'s files in the partition
        ``values``."""
        import pyarrow as pa

        rows = pa.table(dt.get_add_actions(flatten=False)).to_pylist()
        return [
            r
            for r in rows
            if all(str((r.get("partition") or {}).get(k)) == v for k, v in values.items())
        ]

    def _partition_files(self, dt: Any, values: Mapping[str, str]) -> set[str]:
        return {r["path"] for r in self._partition_actions(dt, values)}

    def _overwrite_partition(
        self,
        spec: TableSpec,
        adds: list[Any],
        values: dict[str, str],
        schema: Any,
        info: dict[str, str],
    ) -> None:
        """One commit replacing the partition ``values`` with ``adds`` (delta-rs).

        delta-rs does not scope an overwrite's reads to its partition filters, so a commit of
        another job landing between this one's read and its commit (another source's night:
        other partitions) fails it as "a concurrent transaction deleted data this operation
        read".  When the partition's own files are still those this commit read, nothing it
        replaces has changed: it is committed again on the newer version.  When they are not,
        another job replaced this very partition meanwhile, and this write fails rather than
        silently replacing that one.
        """
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        dt = self._dt(spec.name)
        for attempt in range(1, self._COMMIT_ATTEMPTS + 1):
            read = self._partition_files(dt, values)
            try:
                dt.create_write_transaction(
                    adds,
                    mode="overwrite",
                    schema=schema,
                    partition_by=list(spec.partition_by),
                    partition_filters=[(k, "=", v) for k, v in values.items()],
                    commit_properties=CommitProperties(custom_metadata=info),
                )
                return
            except CommitFailedError as exc:
                latest = self._dt(spec.name)
                if self._partition_files(latest, values) != read:
                    raise LakeError(_REPLACED.format(table=spec.name, values=values)) from exc
                if attempt == self._COMMIT_ATTEMPTS:
                    raise
                log.info(
                    "%s %s: commit %d lost to another job's commit on other partitions; "
                    "committing again on version %d",
                    spec.name,
                    values,
                    attempt,
                    latest.version(),
                )
                dt = latest
                time.sleep(random.uniform(0.05, 0.25) * attempt)

    def restore_partition(
        self, table: str, night: date | str, source: str | None, version: int | None
    ) -> None:
        """Put one partition back as it was at ``version`` (a job rolling back its writes).

        ``version`` None means the table did not exist then: the partition is emptied.  Only
        this partition changes; other nights and sources, and writes other jobs made since,
        are kept.  The restored files are the very files of that version (Delta never deletes
        them before a VACUUM), committed again as one overwrite.
        """
        spec = table_spec(table)
        values = {"night": str(date.fromisoformat(str(night)))}
        if "source" in spec.partition_by and source is not None:
            values["source"] = source
        if self.backend == "delta-spark":
            where = " AND ".join(f"{k} = '{v}'" for k, v in values.items())
            if version is None:
                self.spark.sql(f"DELETE FROM delta.`{self.path(table)}` WHERE {where}")
                return
            old = self.read(table, values["night"], values.get("source"), version=version)
            self._write_native(old, spec, values)
            return
        if not self.exists(table):
            return
        from deltalake import transaction

        old_rows = (
            [] if version is None else self._partition_actions(self._dt(table, version), values)
        )
        adds = [
            transaction.AddAction(
                path=row["path"],
                size=row["size_bytes"],
                partition_values=dict(values),
                modification_time=row["modification_time"],
                data_change=True,
                stats=_restored_stats(row, spec.partition_by),
            )
            for row in old_rows
        ]
        info = {"logcrnn.partition": json.dumps(values), "logcrnn.restored_from": str(version)}
        self._overwrite_partition(spec, adds, values, self._dt(table).schema(), info)
        log.warning("%s: %s restored as of version %s", table, values, version)

    # ---------------------------------------------------------------------------------------
    # maintenance

    def nights(self, table: str, source: str | None = None) -> list[tuple[str, str | None, int]]:
        """``(night, source, rows)`` of every partition the current version holds, oldest
        first (``source`` None for tables without it; rows from the Delta log's statistics,
        -1 where a file has none)."""
        spec = table_spec(table)
        counts: dict[tuple[str, str | None], int] = {}
        if self.backend == "delta-spark":
            cols = [c for c in ("night", "source") if c in spec.partition_by]
            df = self.read(table, source=source).groupBy(*cols).count()
            for r in df.collect():
                key = (str(r["night"]), r["source"] if "source" in cols else None)
                counts[key] = int(r["count"])
        else:
            import pyarrow as pa

            actions = pa.table(self._dt(table).get_add_actions(flatten=True)).to_pylist()
            for a in actions:
                src = a.get("partition.source") if "source" in spec.partition_by else None
                if source is not None and src != source:
                    continue
                key = (str(a["partition.night"]), src)
                rows = a.get("num_records")
                old = counts.get(key, 0)
                counts[key] = -1 if rows is None or old < 0 else old + int(rows)
        return sorted((n, s, r) for (n, s), r in counts.items())

    def drop_nights(
        self, table: str, before: date | str, source: str | None = None, dry_run: bool = False
    ) -> tuple[list[tuple[str, str | None, int]], int | None]:
        """Remove every night older than ``before`` (of ``source`` only, when given) as one
        commit; returns the partitions removed (as :meth:`nights` gives them) and the new
        version, None when there was nothing to remove or ``dry_run`` (nothing committed).

        Only the Delta log changes: the files stay, readable by earlier versions, until a
        :meth:`vacuum` older than the retention period deletes them.
        """
        spec = table_spec(table)
        cutoff = str(date.fromisoformat(str(before)))
        if "source" not in spec.partition_by and source is not None:
            raise UsageError(f"{table} is not partitioned by source")
        if source is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", source):
            raise UsageError(f"not a source name: {source!r}")
        if not self.exists(table):
            return [], None
        old = [p for p in self.nights(table, source) if p[0] < cutoff]
        if not old or dry_run:
            return old, None
        where = f"night < '{cutoff}'" + (f" AND source = '{source}'" if source else "")
        if self.backend == "delta-spark":
            self.spark.sql(f"DELETE FROM delta.`{self.path(table)}` WHERE {where}")
        else:
            from deltalake import CommitProperties

            self._dt(table).delete(
                where,
                commit_properties=CommitProperties(
                    custom_metadata={
                        "logcrnn.dropped_before": cutoff,
                        "logcrnn.source": source or "",
                    }
                ),
            )
        version = self.version(table)
        log.info("%s v%d: nights before %s dropped (%s)", table, version, cutoff, source or "all")
        return old, version

    def vacuum(
        self, table: str, retain_hours: int, dry_run: bool = False, force: bool = False
    ) -> list[tuple[str, int]]:
        """Delete the files no current row lives in that are older than ``retain_hours``:
        files of replaced or dropped nights, and files a killed write left uncommitted.

        Returns ``(path under the table, bytes)`` of each file deleted (or, ``dry_run``, that
        would be).  Earlier versions that read those files can no longer be read, and a job
        rolling back its night restores files of the version it started from, so the retention
        must outlast the longest job.  Below the table's ``delta.deletedFileRetentionDuration``
        (a week by default) Delta refuses unless ``force``.
        """
        if retain_hours < 0:
            raise UsageError(f"vacuum: retention must be >= 0 hours, got {retain_hours}")
        if not self.exists(table):
            return []
        hours = int(retain_hours)
        path = self.path(table)
        fs = _HadoopFS(self.spark, path)
        if self.backend == "delta-spark":
            check = "spark.databricks.delta.retentionDurationCheck.enabled"
            if force:
                self.spark.conf.set(check, "false")
            try:
                rows = self.spark.sql(
                    f"VACUUM delta.`{path}` RETAIN {hours} HOURS DRY RUN"
                ).collect()
                names = [str(r[0]).split(f"{path}/", 1)[-1] for r in rows]
                sized = [(n, fs.size(f"{path}/{n}")) for n in names]
                if not dry_run and names:
                    self.spark.sql(f"VACUUM delta.`{path}` RETAIN {hours} HOURS")
            except Exception as exc:
                raise LakeError(f"vacuum of {table} failed: {_short(exc)}") from exc
            finally:
                if force:
                    self.spark.conf.unset(check)
            return sized
        try:
            names = self._dt(table).vacuum(
                retention_hours=hours,
                dry_run=True,
                enforce_retention_duration=not force,
                full=True,
            )
            sized = [(n, fs.size(f"{path}/{n}")) for n in sorted(names)]
            if not dry_run and names:
                done = set(
                    self._dt(table).vacuum(
                        retention_hours=hours,
                        dry_run=False,
                        enforce_retention_duration=not force,
                        full=True,
                    )
                )
                sized = [(n, b) for n, b in sized if n in done]
                # the write folders emptied, then partition folders left empty (deepest first)
                folders = {n.rsplit("/", 1)[0] for n in done if "/" in n}
                for folder in list(folders):
                    while "/" in folder:
                        folder = folder.rsplit("/", 1)[0]
                        folders.add(folder)
                for folder in sorted(folders, key=lambda f: (-f.count("/"), f)):
                    fs.delete_if_empty(f"{path}/{folder}")
        except Exception as exc:
            msg = _short(exc)
            if "minimum retention" in msg:
                msg += " (use --force to vacuum sooner, knowing earlier versions become unreadable)"
            raise LakeError(f"vacuum of {table} failed: {msg}") from exc
        return sized

    # ---------------------------------------------------------------------------------------
    # reading

    def schema(self, table: str) -> StructType:
        """The table's schema as stored in its Delta log."""
        return StructType.fromJson(json.loads(self._dt(table).schema().to_json()))

    def read(
        self,
        table: str,
        night: date | str | None = None,
        source: str | None = None,
        version: int | None = None,
    ) -> DataFrame:
        """The table (optionally one night / source, optionally as of ``version``)."""
        filters: list[tuple[str, str, str]] = []
        if night is not None:
            filters.append(("night", "=", str(date.fromisoformat(str(night)))))
        if source is not None:
            filters.append(("source", "=", source))
        if self.backend == "delta-spark":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            df = reader.load(self.path(table))
            for col, _, value in filters:
                df = df.where(F.col(col) == F.lit(value).cast(df.schema[col].dataType))
            return df
        dt = self._dt(table, version)
        schema = StructType.fromJson(json.loads(dt.schema().to_json()))
        spec = table_spec(table)
        part_filters = [f for f in filters if f[0] in spec.partition_by] or None
        uris = dt.file_uris(partition_filters=part_filters)
        if not uris:
            return self.spark.createDataFrame([], schema)
        df = self.spark.read.schema(schema).parquet(*uris)
        for col, _, value in filters:
            if col not in spec.partition_by:
                df = df.where(F.col(col) == F.lit(value))
        return df

    def file_uris(
        self,
        table: str,
        source: str | None = None,
        nights: Sequence[date | str] | None = None,
        version: int | None = None,
    ) -> list[str]:
        """URIs of the Parquet files holding ``table`` (optionally some nights of one source)
        at ``version`` (default: current), for readers outside Spark (Petastorm, pyarrow).

        Local paths come back as ``file://`` URIs.  The files are immutable: a later write
        of the same night adds new files and leaves these readable until a VACUUM.
        """
        spec = table_spec(table)
        wanted = (
            None if nights is None else sorted({str(date.fromisoformat(str(n))) for n in nights})
        )
        if self.backend == "delta-spark":
            df = self.read(table, source=source, version=version)
            if wanted is not None:
                df = df.where(F.col("night").cast("string").isin(wanted))
            uris = df.inputFiles()
        else:
            filters: list[tuple[str, str, Any]] = []
            if source is not None and "source" in spec.partition_by:
                filters.append(("source", "=", source))
            if wanted is not None:
                if not wanted:
                    return []
                filters.append(("night", "in", wanted))
            uris = self._dt(table, version).file_uris(partition_filters=filters or None)
        # not Path.as_uri(): readers take the path part verbatim, so '=' must stay unquoted
        return sorted(u if _has_scheme(u) else f"file://{Path(u).resolve()}" for u in uris)

    def version(self, table: str) -> int:
        """The table's current version."""
        if self.backend == "delta-spark":
            from delta.tables import DeltaTable as SparkDeltaTable

            hist = SparkDeltaTable.forPath(self.spark, self.path(table)).history(1)
            return int(hist.collect()[0]["version"])
        return int(self._dt(table).version())

    def history(self, table: str) -> list[dict[str, Any]]:
        """One entry per commit, newest first: version, timestamp, operation, metadata."""
        if self.backend == "delta-spark":
            from delta.tables import DeltaTable as SparkDeltaTable

            rows = SparkDeltaTable.forPath(self.spark, self.path(table)).history().collect()
            return [r.asDict(recursive=True) for r in rows]
        return list(self._dt(table).history())

    def tables(self) -> list[str]:
        """Known tables that exist in this lake."""
        return [name for name in sorted(TABLES) if self.exists(name)]

    def register_views(self) -> list[str]:
        """Make every existing table queryable from Spark SQL by its name.

        With the native backend the tables are registered in the catalog as
        ``layer.name``; with delta-rs as temporary views ``layer_name`` (see :meth:`sql`,
        which accepts either spelling).
        """
        names = []
        for table in self.tables():
            if self.backend == "delta-spark":
                spec = table_spec(table)
                self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {spec.layer}")
                self.spark.sql(
                    f"CREATE TABLE IF NOT EXISTS {table} USING delta "
                    f"LOCATION '{self.path(table)}'"
                )
            else:
                self.read(table).createOrReplaceTempView(view_name(table))
            names.append(table)
        return names

    def sql(self, query: str) -> DataFrame:
        """Run Spark SQL with every lake table available under its ``layer.name``."""
        self.register_views()
        if self.backend == "delta-rs":
            known = set(self.tables())

            def swap(match: re.Match[str]) -> str:
                name = f"{match.group(1)}.{match.group(2)}"
                return view_name(name) if name in known else match.group(0)

            query = _TABLE_REF.sub(swap, query)
        return self.spark.sql(query)


def _restored_stats(row: dict[str, Any], partition_by: Sequence[str]) -> str:
    """The ``stats`` of an earlier version's add action, committed again as it was."""
    stats = FileStats.from_add_action(row)
    return "{}" if stats is None else stats.delta_json(skip=partition_by)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


class _HadoopFS:
    """Listing, row counts and deletes through Spark's Hadoop FileSystem (any URI Spark reads)."""

    def __init__(self, spark: SparkSession, uri: str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        self._fs = jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(self._conf)
        self._java_footers = jvm_function(spark, "logcrnn_mask")

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def list_parquet(self, folder: str) -> list[tuple[str, int, int]]:
        """``(name, bytes, mtime ms)`` of the Parquet files directly in ``folder``."""
        out = []
        for status in self._fs.listStatus(self._path(folder)):
            name = status.getPath().getName()
            if status.isFile() and name.endswith(".parquet"):
                out.append((name, int(status.getLen()), int(status.getModificationTime())))
        return sorted(out)

    def parquet_stats(self, uri: str, schema: StructType) -> FileStats:
        """The figures of the Parquet file at ``uri`` (written with ``schema``), from its
        footer alone: in one call of the project's Java ``FooterStats`` when the session
        has it, else through parquet-mr's objects call by call."""
        if self._java_footers:
            try:
                text = self._jvm.logcrnn.jvm.FooterStats.read(uri, self._conf)
                return summarise(parse_footer_text(str(text)), schema)
            except Exception as exc:  # a jar without the class; a file it cannot read
                # (the reading below then fails with parquet-mr's own message)
                log.warning("Java footer reader failed (%s): reading footers call by call", exc)
                self._java_footers = False
        hadoop_file = self._jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
            self._path(uri), self._conf
        )
        reader = self._jvm.org.apache.parquet.hadoop.ParquetFileReader.open(hadoop_file)
        try:
            return summarise(footer_row_groups(reader.getFooter()), schema)
        finally:
            reader.close()

    def size(self, uri: str) -> int:
        """Bytes of the file at ``uri``; 0 when it is gone."""
        try:
            return int(self._fs.getFileStatus(self._path(uri)).getLen())
        except Exception:  # FileNotFoundException: deleted meanwhile
            return 0

    def delete_if_empty(self, uri: str) -> None:
        """Delete the folder ``uri`` if it exists and holds nothing (object stores have no
        folders: nothing to do there)."""
        try:
            folder = self._path(uri)
            if self._fs.isDirectory(folder) and not self._fs.listStatus(folder):
                self._fs.delete(folder, False)
        except Exception:  # best effort: an empty folder costs nothing
            log.debug("could not remove the empty folder %s", uri)

    def delete(self, uri: str) -> None:
        try:
            self._fs.delete(self._path(uri), True)
        except Exception:  # best-effort clean-up: the Delta log never names these files
            log.warning("could not delete %s", uri)
