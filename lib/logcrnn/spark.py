"""The one place that builds a SparkSession.

Nothing here hard-codes a master: ``spark.master`` comes from the config (``local[*]`` in
``conf/local.yaml``) and is left unset on clusters; under spark-submit its ``--master`` always
wins, whatever the config says.  When the
Delta Lake jars are on the classpath the Delta SQL extension and catalog are switched on, and
:mod:`logcrnn.lake` then uses native ``format("delta")``; otherwise the lake commits through
delta-rs.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from logcrnn.config import SparkSettings

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def _spark_jar_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SPARK_HOME"):
        dirs.append(Path(os.environ["SPARK_HOME"]) / "jars")
    import pyspark

    dirs.append(Path(pyspark.__file__).parent / "jars")
    return dirs


def delta_jars_present(conf: dict[str, str]) -> bool:
    """True when a Delta Lake jar will be on the driver's classpath.

    Looks at Spark's own jar folders, ``spark.jars`` and ``spark.jars.packages`` (a Maven
    coordinate only helps where Maven is reachable, which the config then says explicitly).
    """
    jars = " ".join(str(conf.get(k, "")) for k in ("spark.jars", "spark.jars.packages"))
    if "delta-spark" in jars or "delta-core" in jars:
        return True
    for folder in _spark_jar_dirs():
        if glob.glob(str(folder / "delta-spark_*.jar")) or glob.glob(
            str(folder / "delta-core_*.jar")
        ):
            return True
    return False


def _as_conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def under_spark_submit() -> bool:
    """True when spark-submit (or the pyspark shell) started this driver: it launched the JVM
    and passes its gateway, and its ``--master`` (default ``local[*]``) is already set."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(app_name: str, settings: SparkSettings) -> SparkSession:
    """Get or create the session for ``app_name`` with the configured Spark options."""
    # Executors must run the same interpreter as the driver (the project's venv), unless
    # the deployment says otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {k: _as_conf_value(v) for k, v in settings.conf.items()}
    builder = SparkSession.builder.appName(f"{settings.app_prefix}-{app_name}")
    if settings.master and not under_spark_submit():
        builder = builder.master(settings.master)
    elif settings.master:
        log.info("spark.master %s from the config ignored: spark-submit set the master",
                 settings.master)  # fmt: skip
    if delta_jars_present(conf):
        extensions = [e for e in conf.get("spark.sql.extensions", "").split(",") if e]
        if DELTA_EXTENSION not in extensions:
            extensions.append(DELTA_EXTENSION)
        conf["spark.sql.extensions"] = ",".join(extensions)
        conf.setdefault("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("LOGCRNN_SPARK_LOG_LEVEL", "WARN"))
    return spark


def delta_extension_loaded(spark: SparkSession) -> bool:
    """True when this session has the Delta SQL extension and its classes can be loaded."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_EXTENSION not in extensions:
        return False
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        jvm.java.lang.Class.forName(DELTA_EXTENSION)
    except Exception:  # any failure means "not usable"
        return False
    return True


@contextmanager
def spark_session(app_name: str, settings: SparkSettings) -> Iterator[SparkSession]:
    """A session for one job; stopped on exit unless it existed before (notebooks, tests)."""
    existed = SparkSession.getActiveSession() is not None
    spark = build_session(app_name, settings)
    try:
        yield spark
    finally:
        if not existed:
            spark.stop()
