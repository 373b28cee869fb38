"""Scheduling: the Airflow DAGs in conf/airflow (loaded by a real Airflow 2.10 from
.venv-airflow, in a subprocess) and the crontab line in conf/cron."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = REPO / ".venv-airflow"
AIRFLOW_PY = AIRFLOW_VENV / "bin" / "python"
DAG_FOLDER = REPO / "conf" / "airflow"
CRONTAB = REPO / "conf" / "cron" / "logcrnn.crontab"

NIGHT = "2024-03-10"  # the logical date the templates are rendered for
STAGES = {  # nightly task prefix -> job, the night it processes (days before the logical date)
    "ingest": ("ingest_logs.py", 0),
    "mine": ("mine_templates.py", 0),
    "windows": ("build_windows.py", 1),  # the midnight rule: D-1, after mining D
    "score": ("score_windows.py", 1),
}
RETRAIN = {"select_features": "select_features.py", "train": "train_model.py"}
SPARK_SUBMIT = "airflow.providers.apache.spark.operators.spark_submit.SparkSubmitOperator"

# Runs in .venv-airflow: loads the DAG folder and prints every task as one JSON line.
GRAPH_SCRIPT = r"""
import json, sys
from airflow import macros
from airflow.models import DagBag
from airflow.serialization.serialized_objects import SerializedDAG
from airflow.utils.context import VariableAccessor

folder, ds = sys.argv[1], sys.argv[2]
bag = DagBag(dag_folder=folder, include_examples=False)
context = {
    "ds": ds,
    "macros": macros,
    "var": {"value": VariableAccessor(deserialize_json=False),
            "json": VariableAccessor(deserialize_json=True)},
}
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    SerializedDAG.to_dict(dag)  # what the scheduler stores: must not raise
    tasks = {}
    for task in dag.tasks:
        application = getattr(task, "application", None)
        args = list(getattr(task, "application_args", None) or [])
        py_files = getattr(task, "py_files", None)
        tasks[task.task_id] = {
            "operator": f"{type(task).__module__}.{type(task).__name__}",
            "upstream": sorted(task.upstream_task_ids),
            "retries": task.retries,
            "retry_delay": task.retry_delay.total_seconds(),
            "depends_on_past": task.depends_on_past,
            "application": application,
            "application_args": args,
            "conn_id": getattr(task, "conn_id", None) or getattr(task, "_conn_id", None),
            "rendered": {
                "application": task.render_template(application, context),
                "application_args": task.render_template(args, context),
                "py_files": task.render_template(py_files, context),
            },
        }
    out["dags"][dag.dag_id] = {
        "schedule": str(dag.schedule_interval),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tasks": tasks,
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throw-away AIRFLOW_HOME with an empty sqlite metadata DB: the DAG file reads Airflow
    Variables (at parse and in templates); with the DB they fall back to their defaults
    quietly instead of logging 'no such table'."""
    if not AIRFLOW_PY.exists():
        pytest.fail(
            f"{AIRFLOW_VENV.name} is missing: run `make .venv-airflow` (`make test` builds it)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    done = subprocess.run(
        [str(AIRFLOW_PY), "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def dag_graph(env: dict[str, str], variables: dict[str, str] | None = None) -> dict[str, Any]:
    """The DAG folder as seen by Airflow; ``variables`` are set as AIRFLOW_VAR_<NAME>."""
    env = env | {f"AIRFLOW_VAR_{k.upper()}": v for k, v in (variables or {}).items()}
    done = subprocess.run(
        [str(AIRFLOW_PY), "-c", GRAPH_SCRIPT, str(DAG_FOLDER), NIGHT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    graph: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert graph["import_errors"] == {}
    return graph


def night(days_before: int) -> str:
    return (date.fromisoformat(NIGHT) - timedelta(days=days_before)).isoformat()


def options(args: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of an argument list."""
    return {a: b for a, b in pairwise(args) if a.startswith("--")}


def check_spark_task(task: dict[str, Any], job: str, source: str) -> dict[str, str]:
    """The checks every task shares; returns its rendered options."""
    assert task["operator"] == SPARK_SUBMIT
    assert task["retries"] >= 1 and task["retry_delay"] > 0
    application = Path(task["rendered"]["application"])
    assert application.name == job and application.parent == REPO / "jobs"
    assert application.is_file()
    for arg in [task["application"], *task["application_args"]]:
        for expression in re.findall(r"{{(.*?)}}", arg):  # without its string literals:
            code = re.sub(r"'[^']*'|\"[^\"]*\"", "", expression)
            assert "now" not in code  # the night is never the clock's
    rendered = options(task["rendered"]["application_args"])
    assert not any("{{" in v for v in rendered.values())
    assert rendered["--source"] == source
    assert set(rendered) >= {"--conf", "--lake"}  # the command-line contract
    for flag in ("--date", "--from", "--to"):
        if flag in rendered:
            assert "ds" in options(task["application_args"])[flag]  # a logical-date template
    return rendered


@pytest.fixture(scope="module")
def default_graph(airflow_env: dict[str, str]) -> dict[str, Any]:
    return dag_graph(airflow_env)


def test_nightly_dag_defaults(default_graph: dict[str, Any]) -> None:
    assert set(default_graph["dags"]) == {"logcrnn_nightly", "logcrnn_retrain"}
    dag = default_graph["dags"]["logcrnn_nightly"]
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("@daily", True, 1)
    tasks = dag["tasks"]
    upkeep = tasks.pop("maintain_lake")
    assert set(tasks) == {f"{stage}_hdfs" for stage in STAGES}
    assert upkeep["upstream"] == ["score_hdfs"]  # the run's last task
    application = Path(upkeep["rendered"]["application"])
    assert application == REPO / "jobs" / "maintain_lake.py" and application.is_file()
    assert options(upkeep["rendered"]["application_args"]) == {
        "--conf": str(REPO / "conf" / "cluster.yaml"),
        "--lake": str(REPO / "lake"),
        "--date": NIGHT,
    }
    chain = [f"{stage}_hdfs" for stage in STAGES]
    assert [tasks[t]["upstream"] for t in chain] == [[], *([t] for t in chain[:-1])]
    assert tasks["mine_hdfs"]["depends_on_past"]  # Drain3 state goes night by night
    for stage, (job, days_before) in STAGES.items():
        task = tasks[f"{stage}_hdfs"]
        rendered = check_spark_task(task, job, "hdfs")
        assert rendered["--date"] == night(days_before)
        assert rendered["--conf"] == str(REPO / "conf" / "cluster.yaml")
        assert rendered["--lake"] == str(REPO / "lake")
        assert task["conn_id"] == "spark_default"
        assert task["rendered"]["py_files"] == str(REPO / "dist/logcrnn-0.1.0.zip")
    ingest = options(tasks["ingest_hdfs"]["rendered"]["application_args"])
    assert ingest["--input"] == f"{REPO}/raw/hdfs/{NIGHT}"


def test_retrain_dag_defaults(default_graph: dict[str, Any]) -> None:
    dag = default_graph["dags"]["logcrnn_retrain"]
    assert (dag["schedule"], dag["max_active_runs"]) == ("@weekly", 1)
    tasks = dag["tasks"]
    assert set(tasks) == {"select_features_hdfs", "train_hdfs"}
    assert tasks["select_features_hdfs"]["upstream"] == []
    assert tasks["train_hdfs"]["upstream"] == ["select_features_hdfs"]
    for prefix, job in RETRAIN.items():
        rendered = check_spark_task(tasks[f"{prefix}_hdfs"], job, "hdfs")
        assert (rendered["--from"], rendered["--to"]) == (night(7), night(1))


def test_dags_follow_variables(airflow_env: dict[str, str]) -> None:
    variables = {
        "logcrnn_sources": "hdfs, bgl",
        "logcrnn_spark_conn_id": "spark_yarn",
        "logcrnn_conf": "/etc/logcrnn/cluster.yaml",
        "logcrnn_lake_root": "s3a://bucket/lake",
        "logcrnn_raw_root": "s3a://bucket/raw",
        "logcrnn_py_files": "s3a://bucket/logcrnn.whl",
    }
    dags = dag_graph(airflow_env, variables)["dags"]
    nightly, retrain = dags["logcrnn_nightly"]["tasks"], dags["logcrnn_retrain"]["tasks"]
    upkeep = nightly.pop("maintain_lake")
    assert upkeep["upstream"] == ["score_bgl", "score_hdfs"]  # after every source
    assert options(upkeep["rendered"]["application_args"])["--lake"] == "s3a://bucket/lake"
    assert set(nightly) == {f"{stage}_{s}" for stage in STAGES for s in ("hdfs", "bgl")}
    assert set(retrain) == {f"{prefix}_{s}" for prefix in RETRAIN for s in ("hdfs", "bgl")}
    assert nightly["windows_bgl"]["upstream"] == ["mine_bgl"]  # one chain per source
    for task_id, task in {**nightly, **retrain}.items():
        rendered = options(task["rendered"]["application_args"])
        assert rendered["--source"] == task_id.rsplit("_", 1)[1]
        assert rendered["--conf"] == "/etc/logcrnn/cluster.yaml"
        assert rendered["--lake"] == "s3a://bucket/lake"
        assert task["rendered"]["py_files"] == "s3a://bucket/logcrnn.whl"
        assert task["conn_id"] == "spark_yarn"
    ingest = options(nightly["ingest_bgl"]["rendered"]["application_args"])
    assert ingest["--input"] == f"s3a://bucket/raw/bgl/{NIGHT}"


# --- cron ------------------------------------------------------------------------------------

CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]  # minute hour dom month dow
CRON_NAMES = [
    {},
    {},
    {},
    {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
]


def cron_field_ok(field: str, low: int, high: int, names: dict[str, int]) -> bool:
    def value(text: str) -> int | None:
        number = names.get(text.lower()) if not text.isdigit() else int(text)
        return number if number is not None and low <= number <= high else None

    for part in field.split(","):
        span, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if span == "*":
            continue
        first, _, last = span.partition("-")
        a, b = value(first), value(last) if last else None
        if a is None or (last and (b is None or b < a)):
            return False
    return True


def crontab() -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """The crontab's environment lines and its jobs as (five time fields, command)."""
    env: dict[str, str] = {}
    jobs: list[tuple[list[str], str]] = []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line):
            env[m[1]] = m[2]
            continue
        *fields, command = line.split(maxsplit=5)
        jobs.append((fields, command))
    return env, jobs


def test_crontab_lines_parse() -> None:
    env, jobs = crontab()
    assert len(jobs) == 2  # nightly, and the weekly lake upkeep
    assert env.get("SHELL") == "/bin/bash"
    scripts = []
    for fields, command in jobs:
        assert len(fields) == 5
        for field, (low, high), names in zip(fields, CRON_FIELDS, CRON_NAMES, strict=True):
            assert cron_field_ok(field, low, high, names), field
        assert len(command) < 1000  # cron's command length limit
        assert not re.search(r"(?<!\\)%", command)  # cron ends the command at an unescaped %
        script = command.replace(r"\%", "%")
        done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        scripts.append(script)
    nightly, upkeep = scripts
    for part in ("flock", ".venv/bin/logcrnn nightly", "--source", "--date", ">> logs/"):
        assert part in nightly
    for part in (".venv/bin/logcrnn maintain", "--date", ">> logs/maintain.log"):
        assert part in upkeep
    # the same lock: upkeep never runs beside a night
    assert (
        "flock -w 43200 logs/nightly.lock" in nightly
        and "flock -w 43200 logs/nightly.lock" in upkeep
    )
    assert jobs[1][0][4] == "0"  # weekly, on Sundays


@pytest.mark.parametrize("exit_code", [0, 3])
def test_crontab_line_runs(tmp_path: Path, exit_code: int) -> None:
    """The command as cron runs it, with a stand-in for the venv's logcrnn."""
    env, jobs = crontab()
    script = jobs[0][1].replace(r"\%", "%")
    stub = tmp_path / ".venv" / "bin" / "logcrnn"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/bin/sh\necho "logcrnn $*"\nexit {exit_code}\n')
    stub.chmod(0o755)
    run_env = env | {"LOGCRNN_HOME": str(tmp_path), "PATH": os.environ["PATH"], "HOME": "/"}
    before = datetime.now(UTC).date()
    done = subprocess.run(
        [env["SHELL"], "-c", script], env=run_env, cwd="/", capture_output=True, text=True
    )
    after = datetime.now(UTC).date()
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""  # all in the log
    log = (tmp_path / "logs" / "nightly.log").read_text().splitlines()
    nights = {(d - timedelta(days=1)).isoformat() for d in (before, after)}
    sources = env["LOGCRNN_SOURCES"]
    assert log[0] in {
        f"logcrnn nightly --conf {env['LOGCRNN_CONF']} --source {sources} --date {n}"
        for n in nights
    }
    if exit_code:
        assert len(log) == 2 and log[1].endswith(f"logcrnn nightly failed (exit {exit_code})")
    else:
        assert len(log) == 1
