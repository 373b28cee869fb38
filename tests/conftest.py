"""One session-scoped local[2] SparkSession for the whole suite, and shared paths."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from logcrnn.config import Config, load_config
from logcrnn.spark import build_session

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    lake = tmp_path_factory.mktemp("lake")
    return load_config(
        REPO / "conf" / "local.yaml",
        overrides=[
            "spark.master=local[2]",
            "spark.conf.spark.sql.shuffle.partitions=4",
            "spark.conf.spark.driver.memory=2g",
            f"spark.conf.spark.sql.warehouse.dir={tmp_path_factory.mktemp('warehouse')}",
        ],
        lake=str(lake),
    )


@pytest.fixture(scope="session")
def spark(cfg: Config) -> Iterator[SparkSession]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = build_session("tests", cfg.spark)
    yield session
    session.stop()
