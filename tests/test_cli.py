"""The command line: SQL over the lake by table name, history, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logcrnn.cli import main

GOOD = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1"


@pytest.fixture()
def lake(tmp_path: Path) -> str:
    log = tmp_path / "a.log"
    log.write_text(f"{GOOD}\n{GOOD}\nnot a log line\n")
    root = str(tmp_path / "lake")
    assert main(["ingest", "--source", "hdfs", "--input", str(log), "--date", "2008-11-09",
                 "--lake", root]) == 0  # fmt: skip
    return root


def test_sql_formats(lake: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    query = "SELECT parse_ok, count(*) AS n FROM bronze.raw_lines GROUP BY parse_ok ORDER BY 1"
    assert main(["sql", query, "--lake", lake, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows == [{"parse_ok": False, "n": 1}, {"parse_ok": True, "n": 2}]
    assert main(["sql", query, "--lake", lake, "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["parse_ok,n", "False,1", "True,2"]


def test_sql_error_is_one_line_exit_2(lake: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["sql", "SELECT nope FROM bronze.raw_lines", "--lake", lake]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SQL error" in err[0] and "nope" in err[0]


def test_history_lists_one_version_per_write(
    lake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "b.log"
    log.write_text(GOOD + "\n")
    assert main(["ingest", "--source", "hdfs", "--input", str(log), "--date", "2008-11-10",
                 "--lake", lake]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["history", "bronze.raw_lines", "--lake", lake, "--json"]) == 0
    history = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [v["version"] for v in history["versions"]] == [1, 0]
    assert [v["logcrnn.rows"] for v in history["versions"]] == ["1", "3"]


def test_unknown_config_key_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sql", "SELECT 1", "--lake", str(tmp_path), "--set", "lake.nope=1"])
    assert code == 2
    assert "unknown config key 'lake.nope'" in capsys.readouterr().err
