"""The session factory: Delta is switched on only when its jars will be on the classpath."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession

from logcrnn import spark as spark_mod
from logcrnn.spark import delta_extension_loaded, delta_jars_present


def test_no_delta_jars_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert not delta_jars_present({})


def test_delta_jars_found_in_a_jar_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "delta-spark_2.12-3.3.2.jar").write_bytes(b"")
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert delta_jars_present({})


def test_delta_jars_named_in_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spark_mod, "_spark_jar_dirs", lambda: [tmp_path])
    assert delta_jars_present({"spark.jars.packages": "io.delta:delta-spark_2.12:3.3.2"})
    assert delta_jars_present({"spark.jars": "/opt/jars/delta-spark_2.12-3.3.2.jar"})


def test_test_session_has_no_delta_extension(spark: SparkSession) -> None:
    assert not delta_extension_loaded(spark)
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"  # from conf/base.yaml


def test_spark_submit_master_wins_over_the_config(tmp_path: Path) -> None:
    """conf/local.yaml says local[*]; under spark-submit --master local[1] the session must
    run on local[1] (the master is spark-submit's to choose)."""
    script = tmp_path / "app.py"
    script.write_text(
        "from logcrnn.config import load_config\n"
        "from logcrnn.spark import build_session\n"
        "cfg = load_config(None)\n"
        "assert cfg.spark.master == 'local[*]', cfg.spark.master\n"
        "print('MASTER=' + build_session('t', cfg.spark).sparkContext.master)\n"
    )
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    done = subprocess.run(
        [str(submit), "--master", "local[1]", str(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MASTER=local[1]" in done.stdout
