"""Airflow DAGs for logcrnn: ``logcrnn_nightly`` (daily, lake upkeep included) and
``logcrnn_retrain`` (weekly).

One ``SparkSubmitOperator`` per stage and source, each running a thin entry of ``jobs/`` with
the command-line contract of the project (``--conf FILE --lake DIR`` and the stage's own
arguments).  Nothing else happens here: all logic is in the jobs.

Install: put this file (or a symlink to it, so the repository default below still works) in the
DAGs folder of an Airflow 2.10 with apache-airflow-providers-apache-spark (``make .venv-airflow``
builds such a venv; its pins are in ``constraints-3.11.txt`` beside this file).  Before
unpausing, set the Airflow Variables you need (all optional; default in brackets):

* read when the file is parsed (they shape the DAG):
  ``logcrnn_sources``        comma-separated sources, e.g. ``hdfs,bgl`` [hdfs];
  ``logcrnn_spark_conn_id``  the Spark connection (master, deploy mode) [spark_default];
  ``logcrnn_start_date``     the first night to run, YYYY-MM-DD [2025-01-01];
* read when a task runs (Jinja templates):
  ``logcrnn_home``           the repository on the Airflow worker [the one this file is in];
  ``logcrnn_conf``           the config file [<home>/conf/cluster.yaml];
  ``logcrnn_lake_root``      the lake root, e.g. s3a://bucket/logcrnn/lake [<home>/lake];
  ``logcrnn_raw_root``       raw logs, read from <raw_root>/<source>/<night>/ [<home>/raw];
  ``logcrnn_py_files``       the application for --py-files: the wheel under a ``.zip``
                             name (PySpark puts only .zip/.egg/.jar archives on the
                             executors' path) [<home>/dist/logcrnn-0.1.0.zip].

Only the three that shape the DAG are read when the file is parsed (one metadata-database
query each, no network).  The others are Jinja templates, read when a task runs, as Airflow
recommends for Variables.  The night always comes from the run's logical date (``{{ ds }}``),
never from the clock, so catch-up and re-runs process the right night.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

# The repository this file lives in (conf/airflow/ -> ../..), following a symlink.
REPO_DEFAULT = str(Path(__file__).resolve().parents[2])

SOURCES = [
    s.strip() for s in Variable.get("logcrnn_sources", default_var="hdfs").split(",") if s.strip()
]
SPARK_CONN_ID = Variable.get("logcrnn_spark_conn_id", default_var="spark_default")
START_DATE = pendulum.parse(Variable.get("logcrnn_start_date", default_var="2025-01-01"), tz="UTC")


def _var(name: str, default: str) -> str:
    """A Jinja expression: Airflow Variable ``name``, else ``default`` (itself an expression).
    Used inside ``{{ }}``, it is read when the task runs, not when the file is parsed."""
    return f"var.value.get({name!r}, {default})"


def _t(expression: str) -> str:
    return "{{ " + expression + " }}"


HOME = _var("logcrnn_home", repr(REPO_DEFAULT))
CONF = _t(_var("logcrnn_conf", f"{HOME} ~ '/conf/cluster.yaml'"))
LAKE = _t(_var("logcrnn_lake_root", f"{HOME} ~ '/lake'"))
RAW_ROOT = _t(_var("logcrnn_raw_root", f"{HOME} ~ '/raw'"))
PY_FILES = _t(_var("logcrnn_py_files", f"{HOME} ~ '/dist/logcrnn-0.1.0.zip'"))
JOBS = _t(HOME) + "/jobs"

NIGHT = "{{ ds }}"  # the run's logical date: the night D this run is for
PREVIOUS_NIGHT = "{{ macros.ds_add(ds, -1) }}"

DEFAULT_ARGS = {
    "owner": "logcrnn",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
}


def spark_job(task_id: str, job: str, source: str | None, args: list[str]) -> SparkSubmitOperator:
    """``spark-submit --py-files <wheel> jobs/<job>.py --conf C --lake L [--source S] <args>``."""
    by_source = ["--source", source] if source else []
    return SparkSubmitOperator(
        task_id=task_id,
        application=f"{JOBS}/{job}.py",
        application_args=["--conf", CONF, "--lake", LAKE, *by_source, *args],
        py_files=PY_FILES,
        conn_id=SPARK_CONN_ID,
        name=f"logcrnn-{task_id}",
    )


# Nightly.  The run with logical date D starts once night D is over (00:00 UTC of D+1) and
# ingests and mines night D.
#
# Midnight rule: a window belongs to the night of its first event, so the windows of night D-1
# are whole only once night D is mined (a session from 23:50 to 00:20 needs both nights).
# We therefore keep the windows and score tasks inside the run, after this night's mine, and
# point them at the PREVIOUS night: run D = ingest D -> mine D -> windows D-1 -> score D-1.
# The anomalies of night D land one run later (run D+1), but every night is windowed and
# scored exactly once and always whole, with no cross-run sensor (a sensor on run D+1 would
# deadlock with max_active_runs=1).  The very first run has no night before it: its windows
# task stops on "no events ... mine it first"; mark that one run's windows and score success.
#
# Drain3's state is carried from night to night (silver.miner_state), so mining must go in
# date order: mine has depends_on_past (mine D waits for mine D-1 to have succeeded), and
# max_active_runs=1 with catchup runs a backlog one night at a time, oldest first.  Windows
# D-1 read events of D-2..D, all mined once mine D has succeeded.
#
# Lake upkeep closes each run, after every source's score, so it never commits beside a stage
# of the same lake: nights past their retention (conf ``retention:``) are dropped and files
# unused for ``retention.vacuum_hours`` deleted (it only lists files when there is nothing to
# do).
with DAG(
    dag_id="logcrnn_nightly",
    description="ingest, mine, windows and score, every night and source",
    schedule="@daily",
    start_date=START_DATE,
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["logcrnn"],
) as nightly:
    scores = []
    for source in SOURCES:
        ingest = spark_job(
            f"ingest_{source}",
            "ingest_logs",
            source,
            ["--input", f"{RAW_ROOT}/{source}/{NIGHT}", "--date", NIGHT],
        )
        mine = spark_job(f"mine_{source}", "mine_templates", source, ["--date", NIGHT])
        mine.depends_on_past = True
        windows = spark_job(
            f"windows_{source}", "build_windows", source, ["--date", PREVIOUS_NIGHT]
        )
        score = spark_job(f"score_{source}", "score_windows", source, ["--date", PREVIOUS_NIGHT])
        ingest >> mine >> windows >> score
        scores.append(score)
    upkeep = spark_job("maintain_lake", "maintain_lake", None, ["--date", NIGHT])
    scores >> upkeep


# Weekly retraining.  The run with logical date W starts at W+7 and trains on the seven nights
# W-7 .. W-1; their windows became final with the nightly runs up to W (they ran days before),
# so no sensor on the nightly DAG is needed.  No catch-up: an old week's model is not wanted.
# select-features fits the feature statistics and ranking of the period, train uses them.
TRAIN_FROM = "{{ macros.ds_add(ds, -7) }}"
TRAIN_TO = "{{ macros.ds_add(ds, -1) }}"

with DAG(
    dag_id="logcrnn_retrain",
    description="feature selection and CRNN training on the last week, per source",
    schedule="@weekly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["logcrnn"],
) as retrain:
    for source in SOURCES:
        period = ["--from", TRAIN_FROM, "--to", TRAIN_TO]
        select = spark_job(f"select_features_{source}", "select_features", source, period)
        train = spark_job(f"train_{source}", "train_model", source, period)
        select >> train
