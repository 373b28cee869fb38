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


def test_status_names_gaps_and_stages_left_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "lake")
    for night in ("2008-11-01", "2008-11-02", "2008-11-04"):  # 2008-11-03 never ran
        log = tmp_path / f"{night}.log"
        log.write_text(f"{GOOD}\n{GOOD}\n")
        assert main(["ingest", "--source", "hdfs", "--input", str(log), "--date", night,
                     "--lake", root]) == 0  # fmt: skip
    for night in ("2008-11-01", "2008-11-02"):
        assert main(["mine", "--source", "hdfs", "--date", night, "--lake", root]) == 0
    capsys.readouterr()
    assert main(["status", "--lake", root, "--json"]) == 0  # a report, not a check
    (hdfs,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sources"]
    bronze, events, windows, _ = hdfs["stages"]
    assert (bronze["nights"], bronze["first"], bronze["last"]) == (3, "2008-11-01", "2008-11-04")
    assert bronze["missing"] == ["2008-11-03"] and bronze["last_rows"] == 2
    assert (events["nights"], events["last"], windows["nights"]) == (2, "2008-11-02", 0)
    assert hdfs["model"] is None
    assert hdfs["problems"] == [
        "bronze.raw_lines lacks 1 night(s) between 2008-11-01 and 2008-11-04: 2008-11-03",
        "silver.events ends at 2008-11-02, bronze.raw_lines ends at 2008-11-04: run logcrnn "
        "mine for the nights after 2008-11-02",
        "gold.windows holds no night, silver.events ends at 2008-11-02: run logcrnn windows "
        "for the nights up to 2008-11-01",
    ]
    assert main(["status", "--lake", root, "--check"]) == 1
    captured = capsys.readouterr()
    assert "! bronze.raw_lines lacks 1 night(s)" in captured.out
    assert captured.err.strip() == "logcrnn status: 3 problem(s) found (see above)"
    assert main(["status", "--lake", root, "--source", "bgl", "--check", "--json"]) == 0
    assert main(["status", "--lake", root, "--source", "hdsf"]) == 2  # misspelt: not "ok"


def test_status_lets_the_windows_trail_the_events_by_one_night() -> None:
    from logcrnn.status import StageStatus, _problems

    def stage(table: str, first: str, last: str) -> StageStatus:
        return StageStatus(table, 2, first, last, 10)

    model = {"version": "v", "error": None}
    stages = [
        stage("bronze.raw_lines", "2008-11-01", "2008-11-02"),
        stage("silver.events", "2008-11-01", "2008-11-02"),
        stage("gold.windows", "2008-10-31", "2008-11-01"),  # D-1: the midnight rule
        stage("gold.anomalies", "2008-10-31", "2008-11-01"),
    ]
    assert _problems(stages, model) == []
    stages[2] = StageStatus("gold.windows")  # a first night's windows may wait for the next
    stages[3] = StageStatus("gold.anomalies")
    assert _problems([stages[0], stage("silver.events", "2008-11-02", "2008-11-02"),
                      *stages[2:]], model) == []  # fmt: skip
    stages[3] = stage("gold.anomalies", "2008-10-31", "2008-11-01")
    stages[2] = stage("gold.windows", "2008-10-30", "2008-10-31")  # two nights behind
    assert [p.split(",")[0] for p in _problems(stages, model)] == [
        "gold.windows ends at 2008-10-31"
    ]
    assert _problems(stages[:2] + [stage("gold.windows", "2008-11-01", "2008-11-02"),
                                   stage("gold.anomalies", "2008-11-01", "2008-11-02")],
                     None) == ["no current model: run logcrnn train (gold.windows cannot be "
                               "scored)"]  # fmt: skip


NIGHTLY_COMMANDS = [["score", "--source", "bgl"], ["maintain"], ["nightly", "--source", "bgl"],
                    ["windows", "--source", "bgl"]]  # fmt: skip


@pytest.mark.parametrize("command", NIGHTLY_COMMANDS)
def test_a_night_that_is_not_a_date_is_a_usage_error(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--date", "2008-13-01"])
    assert done.value.code == 2
    assert "argument --date: not a date (YYYY-MM-DD): '2008-13-01'" in capsys.readouterr().err
