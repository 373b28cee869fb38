"""The one place that builds a SparkSession.

Nothing here hard-codes a master: ``spark.master`` comes from the config (``local[*]`` in
``conf/local.yaml``) and is left unset on clusters; under spark-submit its ``--master`` always
wins, whatever the config says.  When the
Delta Lake jars are on the classpath the Delta SQL extension and catalog are switched on, and
:mod:`logcrnn.lake` then uses native ``format("delta")``; otherwise the lake commits through
delta-rs.

The project's own Spark SQL functions, written in Java (``lib/logcrnn/jvm``, built into a jar
by ``make setup`` when a JDK is there), are added to ``spark.jars`` and registered with every
session (``spark.jvm_functions`` turns them off): SQL functions (``logcrnn_mask``, ...) and a
function catalog, ``logcrnn_fn``, whose functions Spark's generated code calls directly on its
own row types (``logcrnn_fn.cut_fields``, ...).  Without the jar the callers use Spark's
built-in functions, with the same results: see :func:`jvm_function`.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, DataType, StringType, StructField, StructType

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


#: The jar ``make setup`` builds from ``lib/logcrnn/jvm/*.java``.
JVM_JAR = "logcrnn-jvm.jar"

#: The project's Java functions: SQL name -> (class, return type).
JVM_FUNCTIONS: dict[str, tuple[str, DataType]] = {
    "logcrnn_mask_values": (
        "logcrnn.jvm.MaskValues",
        StructType([
            StructField("masked", StringType()),
            StructField("values", ArrayType(StringType())),
        ]),
    ),
    "logcrnn_mask": ("logcrnn.jvm.Mask", StringType()),
}  # fmt: skip

#: The project's function catalog (``lib/logcrnn/jvm/Functions.java``), registered as
#: ``spark.sql.catalog.logcrnn_fn``: functions on Spark's own row types that its generated
#: code calls directly (no conversion of every string to Java's and back, as for the
#: functions above), used as ``logcrnn_fn.<name>``.
JVM_CATALOG = "logcrnn_fn"
JVM_CATALOG_CLASS = "logcrnn.jvm.Functions"
JVM_CATALOG_FUNCTIONS = (
    f"{JVM_CATALOG}.utf8_ok",
    f"{JVM_CATALOG}.cut_fields",
    f"{JVM_CATALOG}.fixed_timestamp",
    f"{JVM_CATALOG}.extract_all",
)
_CATALOG_CONF = f"spark.sql.catalog.{JVM_CATALOG}"


def functions_jar() -> Path | None:
    """The path of the project's jar of Java functions, or None when it was not built.

    When the package is imported from an archive (``--py-files`` on a cluster), the jar is
    copied out once to the temporary folder, under a name that carries its content hash.
    """
    resource = importlib.resources.files("logcrnn") / "jvm" / JVM_JAR
    if not resource.is_file():
        return None
    if isinstance(resource, Path):
        return resource
    data = resource.read_bytes()
    target = Path(tempfile.gettempdir()) / f"logcrnn-jvm-{hashlib.sha1(data).hexdigest()[:12]}.jar"
    if not target.is_file():
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def register_jvm_functions(spark: SparkSession) -> list[str]:
    """Register :data:`JVM_FUNCTIONS` and the catalog of :data:`JVM_CATALOG_FUNCTIONS` where
    the driver can load their classes; the names registered."""
    registered: list[str] = []
    spark.conf.set(_CATALOG_CONF, JVM_CATALOG_CLASS)
    try:  # analysing a call loads the catalog and binds the function (no job runs)
        spark.sql(f"SELECT {JVM_CATALOG_FUNCTIONS[0]}('') AS ok").schema  # noqa: B018
        registered += JVM_CATALOG_FUNCTIONS
    except Exception as exc:  # the class is not on the classpath: built-ins stand in
        spark.conf.unset(_CATALOG_CONF)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.info("catalog %s not registered (%s): Spark's built-ins stand in", JVM_CATALOG, reason)
    for name, (class_name, return_type) in JVM_FUNCTIONS.items():
        try:
            spark.udf.registerJavaFunction(name, class_name, return_type)
        except Exception as exc:  # the class is not on the classpath: built-ins stand in
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.info("Java function %s not registered (%s): Spark's built-ins stand in",
                     name, reason)  # fmt: skip
            continue
        registered.append(name)
    return registered


#: Session conf key recording ``spark.jvm_functions`` (a reused session keeps functions an
#: earlier build registered; this says whether to use them).
JVM_FUNCTIONS_CONF = "spark.logcrnn.jvmFunctions"


def jvm_function(spark: SparkSession, name: str) -> bool:
    """True when the session has the project's Java function ``name`` registered (a name of
    :data:`JVM_FUNCTIONS` or :data:`JVM_CATALOG_FUNCTIONS`) and the last
    :func:`build_session` for it did not turn the Java functions off."""
    if spark.conf.get(JVM_FUNCTIONS_CONF, "true") == "false":
        return False
    if name in JVM_CATALOG_FUNCTIONS:
        return spark.conf.get(_CATALOG_CONF, None) == JVM_CATALOG_CLASS
    return bool(spark.catalog.functionExists(name))


def row_cache(df: DataFrame) -> tuple[DataFrame, Callable[[], None]] | None:
    """``df`` kept on the executors as its rows' own bytes by the project's Java
    ``logcrnn.jvm.RowCache`` (built by the first action that reads it; lineage kept), and
    the function that drops it; ``None`` where the session cannot load the class (no jar, or
    the Java functions turned off), and the caller computes ``df`` again instead.

    ``DataFrame.persist()`` builds compressed columns with statistics, value by value, which
    costs more than the masking it would save mining; this copies each row's bytes into
    chunks the block manager stores serialised (compressed when ``spark.rdd.compress`` is on,
    as PySpark sets it).
    """
    spark = df.sparkSession
    if not jvm_function(spark, "logcrnn_mask"):
        return None
    try:
        handle = spark._jvm.logcrnn.jvm.RowCache.of(df._jdf)  # type: ignore[union-attr]
    except Exception as exc:  # the class is not on the driver's class path (ADD JAR)
        log.info("no row cache (%s): the masked lines are computed twice", exc)
        return None
    return DataFrame(handle.dataset(), spark), handle.unpersist


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
    jar = functions_jar() if settings.jvm_functions else None
    if jar is not None and not under_spark_submit():
        # pyspark launches the JVM with the session's conf: the jar is on its classpath
        jars = [j for j in conf.get("spark.jars", "").split(",") if j]
        conf["spark.jars"] = ",".join([*jars, str(jar)])
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("LOGCRNN_SPARK_LOG_LEVEL", "WARN"))
    spark.conf.set(JVM_FUNCTIONS_CONF, _as_conf_value(settings.jvm_functions))
    if settings.jvm_functions and not register_jvm_functions(spark) and jar is not None:
        # the JVM was running already (spark-submit, a notebook's session): ADD JAR puts the
        # jar on the driver's class loader and ships it to the executors
        quoted = str(jar).replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(f"ADD JAR '{quoted}'")
        register_jvm_functions(spark)
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
