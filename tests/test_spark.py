"""The session factory: Delta is switched on only when its jars will be on the classpath."""

from __future__ import annotations

from pathlib import Path

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
