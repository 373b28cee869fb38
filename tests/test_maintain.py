"""Lake upkeep: unused files vacuumed only past their retention, old nights dropped by
retention in one commit, and nothing a current reader needs ever deleted."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from logcrnn.cli import main
from logcrnn.config import ConfigError, load_config
from logcrnn.errors import LakeError
from logcrnn.lake import Lake

GOOD = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1"
TEN_DAYS_AGO = time.time() - 10 * 86400


def _ids(df) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return sorted((str(r.night), r.id) for r in df.select("night", "id").collect())


def _parquet(table_dir: Path) -> set[str]:
    return {str(p.relative_to(table_dir)) for p in table_dir.rglob("*.parquet")}


def _data(files: list[tuple[str, int]]) -> set[str]:
    return {n for n, _ in files if n.endswith(".parquet")}


def _age(table_dir: Path) -> None:
    for p in table_dir.rglob("*"):
        if p.is_file() and "_delta_log" not in p.parts:
            os.utime(p, (TEN_DAYS_AGO, TEN_DAYS_AGO))


@pytest.fixture()
def lake(spark: SparkSession, tmp_path: Path) -> Lake:
    return Lake(spark, str(tmp_path / "lake"), "auto")


def test_vacuum_deletes_replaced_files_only_past_the_retention(
    spark: SparkSession, lake: Lake
) -> None:
    lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    first = _parquet(Path(lake.path("scratch.t")))
    lake.write(spark.range(10, 13), "scratch.t", night="2024-01-02")
    lake.write(spark.range(100, 102), "scratch.t", night="2024-01-01")  # replaces `first`
    table_dir = Path(lake.path("scratch.t"))
    live = {u.split(f"{table_dir}/", 1)[1] for u in DeltaTable(str(table_dir)).file_uris()}
    before = _ids(lake.read("scratch.t"))
    _age(table_dir)  # old files, but their removal was committed just now

    # Spark's _SUCCESS and checksum files are no table's: once old, they go whatever the log
    assert _data(lake.vacuum("scratch.t", 168)) == set()
    with pytest.raises(LakeError, match="--force"):
        lake.vacuum("scratch.t", 0)
    dry = lake.vacuum("scratch.t", 0, dry_run=True, force=True)
    assert _data(dry) == first
    assert all(b > 0 for n, b in dry if n.endswith(".parquet"))
    assert first <= _parquet(table_dir)  # a dry run deletes nothing

    done = lake.vacuum("scratch.t", 0, force=True)
    assert _data(done) == first
    assert _parquet(table_dir) == live
    assert _ids(lake.read("scratch.t")) == before
    # the versions that read the deleted files cannot be read any more
    with pytest.raises(Exception, match="does not exist"):
        lake.read("scratch.t", version=1).count()
    # the replaced write's folder went with its files
    assert not (table_dir / Path(next(iter(first))).parent).exists()


def test_vacuum_deletes_an_old_uncommitted_write_and_keeps_a_running_one(
    spark: SparkSession, lake: Lake
) -> None:
    lake.write(spark.range(0, 5), "scratch.t", night="2024-01-01")
    table_dir = Path(lake.path("scratch.t"))
    live = _parquet(table_dir)
    one = table_dir / next(iter(live))
    killed = table_dir / "night=2024-01-01" / "20240101T000000-killed" / "part-0.parquet"
    running = table_dir / "night=2024-01-01" / "20240102T000000-running" / "part-0.parquet"
    for orphan in (killed, running):
        orphan.parent.mkdir(parents=True)
        shutil.copy(one, orphan)
    os.utime(killed, (TEN_DAYS_AGO, TEN_DAYS_AGO))

    done = lake.vacuum("scratch.t", 168)
    assert [n for n, _ in done] == [str(killed.relative_to(table_dir))]
    assert not killed.parent.exists() and running.exists()
    assert _parquet(table_dir) == live | {str(running.relative_to(table_dir))}
    assert lake.read("scratch.t").count() == 5


def test_dropping_old_nights_is_one_commit_that_keeps_their_files_for_the_retention(
    spark: SparkSession, lake: Lake
) -> None:
    for i, night in enumerate(("2024-01-01", "2024-01-02", "2024-01-03")):
        lake.write(spark.range(10 * i, 10 * i + 2), "scratch.t", night=night)
    table_dir = Path(lake.path("scratch.t"))
    assert [(n, r) for n, _, r in lake.nights("scratch.t")] == [
        ("2024-01-01", 2), ("2024-01-02", 2), ("2024-01-03", 2)
    ]  # fmt: skip
    files = _parquet(table_dir)

    assert lake.drop_nights("scratch.t", "2024-01-03", dry_run=True) == (
        [("2024-01-01", None, 2), ("2024-01-02", None, 2)],
        None,
    )
    assert lake.version("scratch.t") == 2  # a dry run commits nothing
    _, version = lake.drop_nights("scratch.t", "2024-01-03")
    assert version == 3
    assert _ids(lake.read("scratch.t")) == [("2024-01-03", 20), ("2024-01-03", 21)]
    assert DeltaTable(str(table_dir)).history(1)[0]["operation"] == "DELETE"
    assert lake.read("scratch.t", version=2).count() == 6  # time travel still works
    assert lake.drop_nights("scratch.t", "2024-01-03") == ([], None)  # nothing left to drop
    assert lake.version("scratch.t") == 3

    _age(table_dir)
    assert _data(lake.vacuum("scratch.t", 168)) == set()  # dropped now: kept for a week
    assert _parquet(table_dir) == files
    # a week later (here: no retention) they go, and their nights' folders with them
    dropped = {f for f in files if not f.startswith("night=2024-01-03/")}
    assert dropped and _data(lake.vacuum("scratch.t", 0, force=True)) == dropped
    assert sorted(p.name for p in table_dir.iterdir()) == ["_delta_log", "night=2024-01-03"]
    assert _ids(lake.read("scratch.t")) == [("2024-01-03", 20), ("2024-01-03", 21)]


def _ingest(lake: str, tmp_path: Path, night: str, lines: int) -> None:
    log = tmp_path / f"{night}.log"
    log.write_text(f"{GOOD}\n" * lines)
    args = ["ingest", "--source", "hdfs", "--input", str(log), "--date", night, "--lake", lake]
    assert main(args) == 0


def test_maintain_drops_the_nights_past_retention_and_reports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "lake")
    for night, lines in (("2008-11-01", 3), ("2008-11-05", 2), ("2008-11-09", 1)):
        _ingest(root, tmp_path, night, lines)
    keep = ["--set", "retention.bronze_raw_lines=4"]  # keeps 2008-11-05 and later
    cmd = ["maintain", "--date", "2008-11-09", "--lake", root, "--json", *keep]

    capsys.readouterr()
    assert main([*cmd, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bronze = {t["table"]: t for t in dry["tables"]}["bronze.raw_lines"]
    assert dry["dry_run"] and bronze["dropped"] == ["2008-11-01/hdfs"]
    assert bronze["dropped_rows"] == 3 and bronze["version"] is None
    assert DeltaTable(f"{root}/bronze/raw_lines").version() == 2  # nothing committed

    assert main(cmd) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bronze = {t["table"]: t for t in report["tables"]}["bronze.raw_lines"]
    assert bronze["dropped"] == ["2008-11-01/hdfs"] and bronze["version"] == 3
    assert main(["sql", "SELECT night, count(*) AS n FROM bronze.raw_lines GROUP BY 1 ORDER BY 1",
                 "--lake", root, "--format", "csv"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip().splitlines() == [
        "night,n",
        "2008-11-05,2",
        "2008-11-09,1",
    ]

    assert main(cmd) == 0  # again: nothing more to drop, no new version
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {t["table"]: t for t in again["tables"]}["bronze.raw_lines"]["dropped"] == []
    assert DeltaTable(f"{root}/bronze/raw_lines").version() == 3


def test_maintain_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "lake")
    _ingest(root, tmp_path, "2008-11-09", 1)
    capsys.readouterr()
    for extra in (["--table", "gold.nope"], ["--retain-hours", "-1"], ["--source", "nope"]):
        assert main(["maintain", "--date", "2008-11-09", "--lake", root, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("logcrnn maintain:"), err
    # below a week without --force: refused before anything changed (exit 1, a lake error)
    assert main(["maintain", "--date", "2008-11-09", "--lake", root, "--retain-hours", "0"]) == 1
    assert "--force" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="retention.gold_windows"):
        load_config(None, overrides=["retention.gold_windows=-1"])
