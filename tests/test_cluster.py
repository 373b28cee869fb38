"""A real multi-node run: a Spark standalone master and two workers on localhost, the pipeline
submitted with ``spark-submit --master spark://...`` and the package shipped with
``--py-files``, training with Horovod on Spark over 2 processes, then the anomalies table.

The bundled BGL 2k sample is dealt to three nights as in ``test_train.py`` (count windows of
20 lines).  Three applications run on the cluster, each its own driver process, so the only
thing handed from one stage to the next is the lake:

1. nights 1 and 2: ``nightly`` (ingest, mine, windows), ``select-features``, ``windows``
   again with the fitted statistics (one application through a small entry script, see
   :data:`ENTRY`: ``jobs/`` has no ``nightly`` job);
2. ``jobs/train_model.py --np 2 --engine horovod``;
3. ``nightly`` for night 3: ingest, mine, windows of nights 2 and 3, scoring with the model.

What this proves:

* spark-submit's ``--master`` wins (``conf/cluster.yaml`` sets none): every application has
  executors on both workers, and the two Horovod ranks run on different workers;
* executors and the Horovod worker processes run only the shipped archive: a
  ``sitecustomize`` on every process's ``PYTHONPATH`` drops the checkout's ``lib/`` (the
  editable install) from ``sys.path`` everywhere, and the drivers' folder (where the archive
  is) in every process that runs in a worker's folder, as if that were another host; the
  Horovod ranks record the ``logcrnn`` they imported (they inherit the driver's environment,
  so a driver path on their ``PYTHONPATH`` would otherwise go unnoticed);
* nothing a later stage needs lives in a driver's memory.

What it cannot prove on one machine: that no stage reads a driver-only *file*.  The lake, the
raw logs and the models are on the local disk every process sees, as a shared file system or
object store would be on a real cluster.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest
import yaml
from deltalake import DeltaTable

from logcrnn.spark import functions_jar
from logcrnn.train import engines

REPO = Path(__file__).resolve().parents[1]
BGL_2K = REPO / "data" / "sample" / "loghub_2k" / "BGL" / "BGL_2k.log.gz"
SPARK_HOME = Path(pyspark.__file__).parent
PYTHON = sys.executable  # the venv's: executors and Horovod workers run it too
N1, N2, N3 = "2005-06-03", "2005-06-04", "2005-06-05"
SOURCE = "bglc"
WORKERS = 2
#: seconds to wait for the master and workers, and for one spark-submit
START_TIMEOUT = 180
SUBMIT_TIMEOUT = 900

#: spark-submit entry for ``logcrnn`` subcommands, like ``jobs/*.py``; several commands
#: separated by ``::`` run in order in one application (one session kept open across them)
ENTRY = """\
import sys

from pyspark.sql import SparkSession

from logcrnn.cli import main


def run(argv):
    commands = [[]]
    for arg in argv:
        if arg == "::":
            commands.append([])
        else:
            commands[-1].append(arg)
    spark = SparkSession.builder.getOrCreate()
    try:
        for command in commands:
            code = main(command)
            if code:
                return code
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
"""

#: on every process's PYTHONPATH (driver, executors, Horovod workers)
SITECUSTOMIZE = """\
import atexit
import os
import sys

CHECKOUT_LIB = {lib!r}
DRIVER_DIR = {driver!r}
WORKERS_DIR = {workers!r}
RANKS_LOG = {ranks!r}


def _under(path, folder):
    path = os.path.realpath(path or os.curdir)
    return path == folder or path.startswith(folder + os.sep)


_cwd = os.path.realpath(os.getcwd())
_hidden = [CHECKOUT_LIB] + ([DRIVER_DIR] if _under(_cwd, WORKERS_DIR) else [])
sys.path[:] = [p for p in sys.path if not any(_under(p, h) for h in _hidden)]
sys.meta_path[:] = [
    f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")
]

if "HOROVOD_RANK" in os.environ:

    def _record():
        module = sys.modules.get("logcrnn")
        with open(RANKS_LOG, "a") as out:
            out.write(" ".join([os.environ["HOROVOD_RANK"], _cwd,
                                getattr(module, "__file__", None) or "-"]) + "\\n")

    atexit.register(_record)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """A running standalone cluster and the folders its processes use."""

    url: str
    root: Path
    driver: Path  # the drivers' working directory (where the archive is)
    workers: list[Path]  # each worker's --work-dir
    ranks_log: Path
    env: dict[str, str]
    logs: list[Path]

    def apps(self, worker: Path) -> set[str]:
        return {p.name for p in worker.glob("app-*")}


def _wait_for(what: str, done: Any, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not done():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
            pytest.fail(f"{what}: {'a process exited' if dead else 'timed out'}\n{tails}")
        time.sleep(0.5)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    root = tmp_path.resolve() / "cluster"
    driver, conf_dir, site = root / "driver", root / "spark-conf", root / "site"
    workers = [root / "workers" / f"worker{i}" for i in range(1, WORKERS + 1)]
    for folder in (driver, conf_dir, site, *workers):
        folder.mkdir(parents=True)
    ranks_log = root / "horovod-ranks.log"
    (site / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(lib=str((REPO / "lib").resolve()), driver=str(driver),
                             workers=str(root / "workers"), ranks=str(ranks_log))
    )  # fmt: skip
    inherited = ("SPARK_", "PYSPARK_", "HOROVOD_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_CONF_DIR=str(conf_dir),  # empty: no spark-defaults.conf from elsewhere
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=PYTHON,
        PYSPARK_DRIVER_PYTHON=PYTHON,
        PYTHONPATH=str(site),
    )
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(name: str, args: list[str]) -> None:
        log = root / f"{name}.log"
        logs.append(log)
        with log.open("wb") as out:  # spark-class execs java: the pid is the JVM's
            procs.append(subprocess.Popen([spark_class, *args], env=env, cwd=root, stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", "0"])  # fmt: skip
        master_log = logs[0]
        _wait_for("master", lambda: "elected leader" in master_log.read_text(), procs, logs)
        for i, work in enumerate(workers, start=1):
            start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", url, "--host",
                                 "127.0.0.1", "--cores", "1", "--memory", "2g", "--work-dir",
                                 str(work), "--webui-port", "0"])  # fmt: skip
        _wait_for(
            "workers",
            lambda: master_log.read_text().count("Registering worker") >= WORKERS,
            procs,
            logs,
        )
        yield Cluster(url, root, driver, workers, ranks_log, env, logs)
    finally:
        _stop(procs[::-1])  # workers first (they stop their executors), then the master


def _archive(driver: Path, work: Path) -> Path:
    """The package as a wheel built from a copy of the checkout, shipped as a ``.zip``.

    PySpark 3.5 puts only ``.zip``, ``.egg`` and ``.jar`` ``--py-files`` on the executors'
    ``sys.path`` (a ``.whl`` is fetched but not importable); a pure wheel is a zip with the
    package at its root, so the same bytes under a ``.zip`` name are importable everywhere.
    """
    src = work / "src"
    shutil.copytree(REPO / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "setup.py", src / "setup.py")
    built = work / "wheel"
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--wheel-dir", str(built), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = built.glob("logcrnn-*.whl")
    archive = driver / f"{wheel.name.split('-py3')[0]}.zip"
    shutil.copy2(wheel, archive)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    assert {"logcrnn/cli.py", "logcrnn/train/engines.py", "logcrnn/model/crnn.py"} <= names
    # the Java functions travel in the wheel when make setup built them
    assert ("logcrnn/jvm/logcrnn-jvm.jar" in names) == (functions_jar() is not None)
    return archive


def _submit(cluster: Cluster, archive: Path, name: str, app: Path, args: list[str]) -> Any:
    """``spark-submit`` ``app`` on the cluster; the JSON object its last command printed."""
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master", cluster.url,
        "--name", f"logcrnn-{name}",
        "--py-files", str(archive),
        "--conf", f"spark.pyspark.python={PYTHON}",
        "--conf", "spark.driver.memory=1g",
        "--conf", "spark.executor.memory=1g",
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.ui.showConsoleProgress=false",
        str(app), *args,
    ]  # fmt: skip
    log = cluster.root / f"submit-{name}.log"
    cluster.logs.append(log)
    with log.open("wb") as out:
        # its own process group: on a timeout the driver's Python goes too
        proc = subprocess.Popen(command, env=cluster.env, cwd=cluster.driver, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=SUBMIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"spark-submit {name}: no result in {SUBMIT_TIMEOUT}s\n{_tail(log)}")
    # the driver's stderr (logging) is merged into stdout: the JSON is the last such line
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("{")]
    assert code == 0 and lines, f"spark-submit {name} exited {code}\n{_tail(log)}"
    return json.loads(lines[-1])


def _night(lake: Path, table: str, night: str) -> pa.Table:
    """One night of ``SOURCE`` in a Delta table, read with delta-rs and pyarrow (no Spark)."""
    dt = DeltaTable(str(lake / table.replace(".", "/")))
    files = dt.file_uris(partition_filters=[("night", "=", night), ("source", "=", SOURCE)])
    assert files, f"{table} has no files for {SOURCE} {night}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _split_sample(raw: Path) -> None:
    """Lines 0-1 mod 5 -> night 1, 2-3 -> night 2, 4 -> night 3 (as test_train.py)."""
    lines = gzip.decompress(BGL_2K.read_bytes()).decode().splitlines()
    for night, residues in ((N1, (0, 1)), (N2, (2, 3)), (N3, (4,))):
        folder = raw / SOURCE / night
        folder.mkdir(parents=True)
        kept = (x for i, x in enumerate(lines) if i % 5 in residues)
        (folder / "bgl.log").write_text("\n".join(kept) + "\n")


def test_horovod_workers_get_the_shipped_archives_first_on_their_path() -> None:
    env = engines.worker_env(["logcrnn-0.1.0.zip", "deps.zip"])
    rest = os.environ.get("PYTHONPATH")
    expected = ["logcrnn-0.1.0.zip", "deps.zip", *([rest] if rest else [])]
    assert env["PYTHONPATH"] == os.pathsep.join(expected)
    assert engines.worker_env().get("PYTHONPATH") == rest


@pytest.mark.slow
def test_nightly_pipeline_on_a_standalone_cluster(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    archive = _archive(cluster.driver, tmp_path / "build")
    entry = cluster.driver / "logcrnn_entry.py"
    entry.write_text(ENTRY)
    raw, lake, sources = tmp_path / "raw", tmp_path / "lake", tmp_path / "sources"
    _split_sample(raw)
    sources.mkdir()
    spec = yaml.safe_load((REPO / "conf" / "sources" / "bgl.yaml").read_text())
    spec.update(name=SOURCE, windows={"kind": "count", "by": "source", "size": 20, "step": 5})
    (sources / f"{SOURCE}.yaml").write_text(yaml.safe_dump(spec))
    common = [
        "--conf", str(REPO / "conf" / "cluster.yaml"),  # no spark.master: spark-submit's wins
        "--lake", str(lake),
        "--set", f"sources_dir={sources}",
        "--set", "spark.conf.spark.sql.shuffle.partitions=2",
        "--set", "mining.shards=2",
        # small feature models: this run is about where the code runs, not about its figures
        "--set", "features.rf_trees=10",
        "--set", "features.word2vec_iterations=1",
        "--source", SOURCE,
    ]  # fmt: skip
    nightly = ["--input", str(raw / "{source}" / "{date}" / "*"), "--json"]

    # 1. the training nights, windows with statistics fitted on them
    _submit(cluster, archive, "prepare", entry, [
        "nightly", *common, "--date", N1, *nightly, "::",
        "nightly", *common, "--date", N2, *nightly, "::",
        "select-features", *common, "--from", N1, "--to", N2, "::",
        "windows", *common, "--date", N1, "::",
        "windows", *common, "--date", N2, "--json",
    ])  # fmt: skip

    # 2. Horovod on Spark, 2 processes (one task slot per worker)
    trained = _submit(cluster, archive, "train", REPO / "jobs" / "train_model.py", [
        *common, "--set", "train.valid_share=0.3", "--set", "train.epochs=3",
        "--from", N1, "--to", N2, "--np", "2", "--engine", "horovod", "--json",
    ])  # fmt: skip
    assert trained["engine"] == "horovod" and trained["np"] == 2
    assert [r["rank"] for r in trained["ranks"]] == [0, 1]
    assert len({r["params_sha256"] for r in trained["ranks"]}) == 1
    assert sum(r["train_windows"] for r in trained["ranks"]) == trained["train_windows"]
    ranks = sorted(line.split(" ") for line in cluster.ranks_log.read_text().splitlines())
    assert [r[0] for r in ranks] == ["0", "1"], ranks
    # each rank on its own worker, importing the archive Spark fetched into its folder
    hosts = {w for _, cwd, _ in ranks for w in cluster.workers if Path(cwd).is_relative_to(w)}
    assert hosts == set(cluster.workers), ranks
    assert all(Path(module).is_relative_to(Path(cwd) / archive.name) for _, cwd, module in ranks)

    # 3. the nightly run of night 3 scores with that model
    night = _submit(cluster, archive, "nightly", entry, ["nightly", *common, "--date", N3,
                                                         *nightly])  # fmt: skip
    stages = night["sources"][SOURCE]
    assert stages["ingest"]["lines_read"] == 400 and stages["ingest"]["malformed"] == 0
    assert stages[f"score {N3}"]["model_version"] == trained["version"]

    windows = _night(lake, "gold.windows", N3)
    anomalies = _night(lake, "gold.anomalies", N3)
    assert windows.num_rows == anomalies.num_rows == stages[f"score {N3}"]["windows"] == 80
    assert sorted(anomalies.column("window_id").to_pylist()) == sorted(
        windows.column("window_id").to_pylist()
    )
    scores = anomalies.column("score").to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1
    assert set(anomalies.column("model_version").to_pylist()) == {trained["version"]}
    assert set(anomalies.column("threshold").to_pylist()) == {trained["threshold"]}
    flagged = anomalies.column("is_anomaly").to_pylist()
    assert flagged == [s >= trained["threshold"] for s in scores]
    assert sum(flagged) == stages[f"score {N3}"]["anomalies"]

    # every application ran on both workers (spark-submit's master, not local[*])
    apps = [cluster.apps(w) for w in cluster.workers]
    assert len(apps[0]) == 3 and apps[0] == apps[1], apps
    print(f"\ncluster run: {time.monotonic() - started:.0f}s, model {trained['version']}, "
          f"{sum(flagged)}/{len(flagged)} windows of {N3} anomalous")  # fmt: skip
