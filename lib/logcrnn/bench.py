"""Benchmarks: commands that print their figures next to a same-run baseline.

``bench ingest``: ``synth`` writes N lines of the source's format (split into several files),
then, alternating, a raw copy of those files (``spark.read.text(...).write.parquet(...)``, no
parsing) and the full ingest (line numbering, parsing, bronze write and Delta commit) run
``repeat`` times each in one Spark session.  Rates use the median run.

``bench score``: the real scoring UDF (:func:`logcrnn.score.score_windows`, what
``score_night`` runs) on synthetic windows against plain batched torch inference over the
same windows in one process.  ``bench nightly``: the whole night (ingest -> mine -> windows
-> score, :func:`logcrnn.nightly.run`) in a fresh process, with per-stage seconds and peak
memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from logcrnn.config import Config, load_config, load_source
from logcrnn.errors import UsageError
from logcrnn.synth import synth

log = logging.getLogger(__name__)


def _bench_data(
    cfg: Config, source: str, sample: Path, lines: int, files: int, workdir: Path, seed: int
) -> Path:
    """Synthesised input, reused across runs with the same parameters."""
    folder = workdir / f"data-{source}-{lines}-{files}-{seed}"
    marker = folder / "_DONE"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    synth(load_source(cfg, source), sample, lines, folder, files=files, seed=seed)
    marker.write_text(json.dumps({"sample": str(sample), "lines": lines}))
    log.info("synthesised %d lines in %.1fs", lines, time.perf_counter() - started)
    return folder


def bench_ingest(
    cfg: Config,
    source: str,
    sample: Path,
    lines: int,
    files: int,
    repeat: int,
    workdir: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the ingest benchmark and return its figures."""
    from logcrnn import ingest
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    data = _bench_data(cfg, source, sample, lines, files, workdir, seed)
    inputs = sorted(str(p) for p in data.glob("part-*.log"))
    raw_out = workdir / "raw-copy"
    lake_root = workdir / "lake"
    raw_s: list[float] = []
    ingest_s: list[float] = []
    reports = []
    with spark_session("bench_ingest", cfg.spark) as spark:
        lake = Lake(spark, str(lake_root), cfg.lake.backend)
        for _ in range(repeat):
            shutil.rmtree(raw_out, ignore_errors=True)
            started = time.perf_counter()
            spark.read.text(inputs).write.parquet(str(raw_out))
            raw_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = ingest.run(spark, cfg, source, inputs, "2008-11-09", lake=lake)
            ingest_s.append(time.perf_counter() - started)
            reports.append(report)
            log.info("raw copy %.1fs, ingest %.1fs", raw_s[-1], ingest_s[-1])
        cores = spark.sparkContext.defaultParallelism
    shutil.rmtree(raw_out, ignore_errors=True)
    shutil.rmtree(lake_root, ignore_errors=True)
    raw_med, ingest_med = statistics.median(raw_s), statistics.median(ingest_s)
    last = reports[-1]
    return {
        "benchmark": "ingest",
        "source": source,
        "lines": lines,
        "files": len(inputs),
        "bytes": last.bytes,
        "cores": cores,
        "repeat": repeat,
        "raw_copy_seconds": [round(s, 2) for s in raw_s],
        "ingest_seconds": [round(s, 2) for s in ingest_s],
        "raw_copy_lines_per_s": round(lines / raw_med),
        "ingest_lines_per_s": round(lines / ingest_med),
        "ratio_ingest_to_raw": round(raw_med / ingest_med, 3),
        "lines_read": last.lines_read,
        "malformed": last.malformed,
    }


def format_ingest(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"ingest benchmark: {result['lines']:,} {result['source']} lines in "
            f"{result['files']} files ({result['bytes'] / 1e6:.0f} MB), "
            f"{result['cores']} cores, median of {result['repeat']}",
            f"  raw copy (read.text -> parquet): {result['raw_copy_lines_per_s']:>12,} lines/s"
            f"   runs {result['raw_copy_seconds']}",
            f"  ingest (parse -> bronze, commit): {result['ingest_lines_per_s']:>11,} lines/s"
            f"   runs {result['ingest_seconds']}",
            f"  ingest / raw copy: {result['ratio_ingest_to_raw']:.2f}"
            f"   (lines read {result['lines_read']:,}, malformed {result['malformed']:,})",
        ]
    )


def _drain3_baseline(spec: Any, messages: list[str]) -> float:
    """Seconds one Drain3 process takes to learn ``messages`` with the same mask rules."""
    import re

    from drain3 import TemplateMiner as Drain3Miner
    from drain3.masking import MaskingInstruction
    from drain3.memory_buffer_persistence import MemoryBufferPersistence

    from logcrnn.masking import masks_for
    from logcrnn.mining import miner_for

    config = miner_for(spec)._config()
    instructions = []
    for rule in masks_for(spec):
        re.compile(rule.regex)  # Java and Python agree on the syntax our rules use
        token = (
            rule.token[1:-1]
            if rule.token.startswith("<") and rule.token.endswith(">")
            else rule.token
        )
        instructions.append(MaskingInstruction(rule.regex, token))
    config.masking_instructions = instructions
    drain = Drain3Miner(MemoryBufferPersistence(), config)
    started = time.perf_counter()
    for message in messages:
        drain.add_log_message(message)
    return time.perf_counter() - started


def bench_mine(
    cfg: Config,
    source: str,
    sample: Path,
    lines: int,
    files: int,
    workdir: Path,
    seed: int = 0,
    baseline_lines: int = 1_000_000,
) -> dict[str, Any]:
    """Distributed mining (mask -> mine -> match -> silver.events) at lines/10 and lines.

    Each scale is ingested into its own lake (untimed), then mined (timed).  The baseline is
    one Drain3 process with the same mask rules learning the messages of ``baseline_lines``
    of the same data, its rate extrapolated to ``lines``.
    """
    from pyspark.sql import functions as F

    from logcrnn import ingest, mining
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    spec = load_source(cfg, source)
    scales = sorted({max(1, lines // 10), lines})
    runs = []
    with spark_session("bench_mine", cfg.spark) as spark:
        cores = spark.sparkContext.defaultParallelism
        for n in scales:
            data = _bench_data(cfg, source, sample, n, files, workdir, seed)
            inputs = sorted(str(p) for p in data.glob("part-*.log"))
            lake_root = workdir / f"lake-mine-{n}"
            shutil.rmtree(lake_root, ignore_errors=True)
            lake = Lake(spark, str(lake_root), cfg.lake.backend)
            ingest.run(spark, cfg, source, inputs, "2008-11-09", lake=lake)
            report = mining.mine_night(spark, cfg, lake, source, "2008-11-09")
            log.info("mined %d lines in %.1fs", n, report.seconds)
            runs.append(report)
            if n == lines:
                k = min(baseline_lines, lines)
                rows = (
                    lake.read("bronze.raw_lines", "2008-11-09", source)
                    .select(F.coalesce("content", "line").alias("m"))
                    .limit(k)
                    .collect()
                )
                messages = [r.m for r in rows]
            shutil.rmtree(lake_root, ignore_errors=True)
    drain_s = _drain3_baseline(spec, messages)
    drain_rate = len(messages) / drain_s
    small, big = runs[0], runs[-1]
    return {
        "benchmark": "mine",
        "source": source,
        "lines": lines,
        "cores": cores,
        "shards": big.shards,
        "runs": [
            {
                "lines": r.lines,
                "seconds": r.seconds,
                "lines_per_s": r.lines_per_s,
                "distinct_messages": r.distinct_messages,
                "templates": r.templates,
            }
            for r in runs
        ],
        "mine_lines_per_s": big.lines_per_s,
        "drain3_single_lines": len(messages),
        "drain3_single_seconds": round(drain_s, 2),
        "drain3_single_lines_per_s": round(drain_rate, 1),
        "drain3_single_extrapolated_seconds": round(lines / drain_rate, 1),
        "speedup_vs_drain3": round(big.lines_per_s / drain_rate, 2),
        "growth_10x_lines": round(big.seconds / small.seconds, 2) if len(runs) > 1 else None,
    }


def format_mine(result: dict[str, Any]) -> str:
    out = [
        f"mine benchmark: {result['source']}, {result['cores']} cores, "
        f"{result['shards']} shards (mask -> distinct -> shard Drain3 -> merge -> match "
        "-> silver.events)"
    ]
    for run in result["runs"]:
        out.append(
            f"  {run['lines']:>11,} lines: {run['seconds']:>7.1f}s {run['lines_per_s']:>11,.0f} "
            f"lines/s  ({run['distinct_messages']:,} distinct masked, "
            f"{run['templates']} templates)"
        )
    out.append(
        f"  one Drain3 process, same masks, {result['drain3_single_lines']:,} lines: "
        f"{result['drain3_single_lines_per_s']:,.0f} lines/s (extrapolated to "
        f"{result['lines']:,}: {result['drain3_single_extrapolated_seconds']:,.0f}s)"
    )
    out.append(
        f"  speed-up vs one Drain3: {result['speedup_vs_drain3']:.2f}x   "
        f"time for 10x the lines: {result['growth_10x_lines']}x"
    )
    return "\n".join(out)


def bench_windows(
    cfg: Config,
    source: str,
    sample: Path,
    labels: Path | None,
    lines: int,
    files: int,
    repeat: int,
    workdir: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Windows + features against a plain sessionisation of the same events, same run.

    ``synth`` replays the sample (with its label file) to ``lines`` lines; ingest, mining, a
    first windows pass and select-features (which fits the statistics the timed passes apply)
    run untimed.  Then, alternating ``repeat`` times: the baseline reads silver.events and
    writes ``groupBy(session).agg(collect_list(template_id))`` as Parquet; the windows job
    builds the night's windows with every feature, labels from the label file, and commits
    gold.windows.  Medians are compared.
    """
    from pyspark.sql import functions as F

    from logcrnn import ingest, mining, selection, windows
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    night = "2008-11-09"
    folder = workdir / f"data-{source}-{lines}-{files}-{seed}-labelled"
    marker = folder / "_DONE"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        synth(load_source(cfg, source), sample, lines, folder, files=files, seed=seed,
              labels_path=labels)  # fmt: skip
        marker.write_text(json.dumps({"sample": str(sample), "lines": lines}))
    inputs = sorted(str(p) for p in folder.glob("part-*.log"))
    label_file = folder / "anomaly_label.csv" if labels is not None else None
    lake_root = workdir / f"lake-windows-{lines}"
    base_out = workdir / "sessions-baseline"
    base_s: list[float] = []
    win_s: list[float] = []
    with spark_session("bench_windows", cfg.spark) as spark:
        cores = spark.sparkContext.defaultParallelism
        shutil.rmtree(lake_root, ignore_errors=True)
        lake = Lake(spark, str(lake_root), cfg.lake.backend)
        ingest.run(spark, cfg, source, inputs, night, lake=lake)
        mined = mining.mine_night(spark, cfg, lake, source, night)
        started = time.perf_counter()
        windows.build_windows(spark, cfg, lake, source, night, labels=label_file)
        raw_s = time.perf_counter() - started
        selected = selection.select_features(spark, cfg, lake, source, night, night)
        log.info("first windows pass %.1fs, select-features %.1fs", raw_s, selected.seconds)
        for _ in range(repeat):
            shutil.rmtree(base_out, ignore_errors=True)
            started = time.perf_counter()
            (
                lake.read("silver.events", night, source)
                .select(F.explode("session_keys").alias("session"), "template_id")
                .groupBy("session")
                .agg(F.collect_list("template_id").alias("templates"))
                .write.parquet(str(base_out))
            )
            base_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = windows.build_windows(spark, cfg, lake, source, night, labels=label_file)
            win_s.append(time.perf_counter() - started)
            log.info("baseline %.1fs, windows + features %.1fs", base_s[-1], win_s[-1])
    shutil.rmtree(base_out, ignore_errors=True)
    shutil.rmtree(lake_root, ignore_errors=True)
    base_med, win_med = statistics.median(base_s), statistics.median(win_s)
    return {
        "benchmark": "windows",
        "source": source,
        "lines": lines,
        "events": report.events,
        "cores": cores,
        "repeat": repeat,
        "templates": mined.templates,
        "windows": report.windows,
        "anomalous_windows": report.anomalous_windows,
        "first_pass_seconds_no_stats": round(raw_s, 2),
        "baseline_seconds": [round(s, 2) for s in base_s],
        "windows_seconds": [round(s, 2) for s in win_s],
        "baseline_events_per_s": round(report.events / base_med),
        "windows_events_per_s": round(report.events / win_med),
        "ratio_windows_to_baseline": round(win_med / base_med, 3),
    }


def format_windows(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"windows benchmark: {result['events']:,} {result['source']} events, "
            f"{result['cores']} cores, {result['templates']} templates, windows "
            f"{result['windows']} ({result['anomalous_windows']:,} anomalous), "
            f"median of {result['repeat']}",
            f"  sessionisation (explode, groupBy, collect_list -> parquet): "
            f"{result['baseline_events_per_s']:>10,} events/s   runs {result['baseline_seconds']}",
            f"  windows + features + labels -> gold.windows:                "
            f"{result['windows_events_per_s']:>10,} events/s   runs {result['windows_seconds']}",
            f"  windows / sessionisation time: {result['ratio_windows_to_baseline']:.2f}x"
            f"   (first pass without fitted statistics: "
            f"{result['first_pass_seconds_no_stats']}s)",
        ]
    )


def bench_train(
    cfg: Config,
    source: str,
    sample: Path,
    labels: Path | None,
    lines: int,
    files: int,
    workdir: Path,
    seed: int = 0,
    epochs: int = 3,
    nps: tuple[int, ...] = (1, 2),
    engine: str = "horovod",
) -> dict[str, Any]:
    """CRNN training throughput at each of ``nps`` workers, on the same windows, same run.

    ``synth`` replays the sample (with its label file) to ``lines`` lines (0: the sample as
    it is); ingest, mining, windows, select-features and windows again build one night of
    ``gold.windows`` (kept in ``workdir`` for the next run).  Then ``logcrnn train`` runs
    ``epochs`` epochs (no early stop) once with the in-process ``local`` engine on one thread
    (no distribution: the baseline) and once per worker count with ``engine``, whose workers
    share the machine's cores (``train.threads`` 0).  Throughput is
    fit_torch's: training windows of all workers per second of the epochs' wall time; the
    end-to-end seconds (workers' launch, Petastorm reads, calibration, artifact) are
    reported next to it.
    """
    import dataclasses

    from logcrnn import ingest, mining, selection, windows
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session
    from logcrnn.train import job

    night = "2008-11-09"
    lake_root = workdir / f"lake-train-{source}-{lines}-{seed}"
    marker = lake_root / "_READY"
    settings = dataclasses.replace(cfg.train, epochs=epochs, patience=epochs, threads=0)
    conf = dataclasses.replace(cfg, train=settings)
    # the baseline: one process, one thread (what one core does without any distribution)
    one_core = dataclasses.replace(cfg, train=dataclasses.replace(settings, threads=1))
    runs: list[dict[str, Any]] = []
    with spark_session("bench_train", cfg.spark) as spark:
        cores = spark.sparkContext.defaultParallelism
        lake = Lake(spark, str(lake_root), cfg.lake.backend)
        if not marker.is_file():
            shutil.rmtree(lake_root, ignore_errors=True)
            inputs, label_file = [str(sample)], labels
            if lines > 0:
                folder = workdir / f"data-{source}-{lines}-{files}-{seed}-labelled"
                if not (folder / "_DONE").is_file():
                    shutil.rmtree(folder, ignore_errors=True)
                    synth(load_source(cfg, source), sample, lines, folder, files=files,
                          seed=seed, labels_path=labels)  # fmt: skip
                    (folder / "_DONE").write_text(json.dumps({"sample": str(sample)}))
                inputs = sorted(str(p) for p in folder.glob("part-*.log"))
                label_file = folder / "anomaly_label.csv" if labels is not None else None
            started = time.perf_counter()
            ingest.run(spark, cfg, source, inputs, night, lake=lake)
            mining.mine_night(spark, cfg, lake, source, night)
            windows.build_windows(spark, cfg, lake, source, night, labels=label_file)
            selection.select_features(spark, cfg, lake, source, night, night)
            windows.build_windows(spark, cfg, lake, source, night, labels=label_file)
            marker.write_text(json.dumps({"seconds": time.perf_counter() - started}))
            log.info("windows built in %.0fs", time.perf_counter() - started)
        plan = [("local", 1)] + [(engine, n) for n in nps]
        for run_engine, n in plan:
            out = workdir / f"models-{run_engine}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            report = job.train(spark, one_core if run_engine == "local" else conf, lake,
                               source, night, night, np=n, engine=run_engine,
                               out=out)  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
            runs.append(
                {
                    "engine": run_engine,
                    "np": n,
                    "threads_per_worker": report.ranks[0]["threads"],
                    "windows_per_s": report.windows_per_s,
                    "workers_seconds": report.train_seconds,
                    "seconds": report.seconds,
                    "epochs": report.epochs_run,
                    "valid_f1": report.valid_f1,
                }
            )
            log.info("%s np=%d: %.0f windows/s", run_engine, n, report.windows_per_s)
    base = next(r for r in runs if r["engine"] == engine and r["np"] == min(nps))
    single = runs[0]
    return {
        "benchmark": "train",
        "source": source,
        "lines": lines,
        "windows": report.windows,
        "train_windows": report.train_windows,
        "valid_windows": report.valid_windows,
        "cores": cores,
        "epochs": epochs,
        "batch_size": settings.batch_size,
        "runs": runs,
        "speedup": {
            f"np{r['np']}": round(r["windows_per_s"] / base["windows_per_s"], 3)
            for r in runs
            if r["engine"] == engine
        },
        "speedup_vs_one_core": {
            f"np{r['np']}": round(r["windows_per_s"] / single["windows_per_s"], 3)
            for r in runs
            if r["engine"] == engine
        },
    }


def format_train(result: dict[str, Any]) -> str:
    out = [
        f"train benchmark: {result['train_windows']:,} training windows ({result['source']}, "
        f"{result['lines'] or 'sample'} lines), {result['cores']} cores, {result['epochs']} "
        f"epochs, batch {result['batch_size']} per worker",
    ]
    for r in result["runs"]:
        out.append(
            f"  {r['engine']:<17} np={r['np']} x {r['threads_per_worker']} threads: "
            f"{r['windows_per_s']:>8,.0f} windows/s   workers {r['workers_seconds']:.1f}s, "
            f"end to end {r['seconds']:.1f}s"
        )
    speed = ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup"].items())
    core = ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup_vs_one_core"].items())
    engine, smallest = result["runs"][1]["engine"], min(r["np"] for r in result["runs"][1:])
    out.append(f"  {engine} speed-up over np={smallest}: {speed}; over one local thread: {core}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# scoring: the scoring UDF against plain torch inference

#: Templates in the synthetic vocabulary of ``bench score`` (Loghub HDFS has 48 event types).
SCORE_TEMPLATES = 48
#: Median events per synthetic window (a Loghub HDFS block logs 19.4 events on average).
SCORE_MEDIAN_LENGTH = 19
#: Rows per Parquet file of the synthetic windows.
_SCORE_ROWS_PER_FILE = 125_000


def score_vocabulary(source: str, n: int = SCORE_TEMPLATES) -> dict[str, str]:
    """``n`` template ids (the real ids of made-up texts) -> their texts."""
    from logcrnn.templates import template_id

    texts = [f"Bench event {k} of <*> for block <*> at <*>" for k in range(n)]
    return {template_id(source, t): t for t in texts}


def synth_windows(
    n: int,
    seq_len: int,
    n_features: int,
    template_ids: list[str],
    seed: int = 0,
    first: int = 0,
    sem_dim: int = 16,
) -> Any:
    """``n`` random rows shaped like gold.windows' :data:`logcrnn.score.INPUT_COLUMNS`.

    Returns a ``pyarrow.Table``.  Lengths are log-normal around :data:`SCORE_MEDIAN_LENGTH`
    events (clipped to 2..300, so a few windows are truncated at ``seq_len``); each event is
    one of ``template_ids`` drawn with Zipf frequencies; ``sequence`` holds their vocabulary
    indices (2 + position in ``template_ids``) padded with 0 to ``seq_len``; ``features_std``
    is ``n_features`` and ``semantic`` ``sem_dim`` standard normals.  ``first`` numbers the
    windows (ids, keys, lines).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    v = len(template_ids)
    length = np.clip(np.rint(rng.lognormal(np.log(SCORE_MEDIAN_LENGTH), 0.35, n)), 2, 300)
    length = length.astype(np.int32)
    kept = np.minimum(length, seq_len)
    weights = 1.0 / np.arange(1, v + 1)
    events = rng.choice(v, size=(n, seq_len), p=weights / weights.sum())
    valid = np.arange(seq_len)[None, :] < kept[:, None]
    sequence = np.where(valid, events + 2, 0).astype(np.int32)

    def lists(values: Any, offsets: np.ndarray) -> Any:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)

    def fixed(values: np.ndarray, width: int) -> Any:
        return lists(pa.array(values.ravel()), np.arange(n + 1) * width)

    number = np.arange(first, first + n, dtype=np.int64)
    start = np.datetime64("2008-11-09T00:00:00", "us") + rng.integers(0, 86_400, n).astype(
        "timedelta64[s]"
    )
    end = start + (length.astype(np.int64) * rng.integers(1, 60, n)).astype("timedelta64[s]")
    ts = pa.timestamp("us", tz="UTC")
    columns = {
        "window_id": pa.array([f"{i:016x}" for i in number]),
        "kind": pa.array(["session"] * n),
        "key": pa.array([f"blk_{i}" for i in number]),
        "start_ts": pa.array(start).cast(ts),
        "end_ts": pa.array(end).cast(ts),
        "length": pa.array(length),
        "template_ids": lists(
            pc.take(pa.array(template_ids), pa.array(events[valid])),
            np.concatenate([[0], np.cumsum(kept)]),
        ),
        "sequence": fixed(sequence, seq_len),
        "semantic": fixed(rng.standard_normal((n, sem_dim)), sem_dim),
        "features_std": fixed(rng.standard_normal((n, n_features)), n_features),
        "label": pa.nulls(n, pa.int32()),
        "first_file": pa.array(["bench.log"] * n),
        "first_line": pa.array(number * 20 + 1),
        "last_file": pa.array(["bench.log"] * n),
        "last_line": pa.array(number * 20 + length),
    }
    return pa.table(columns)


def _score_data(cfg: Config, source: str, n: int, files: int, workdir: Path, seed: int) -> Path:
    """Synthetic windows as Parquet files, reused across runs with the same parameters."""
    import pyarrow.parquet as pq

    from logcrnn.features import feature_names

    seq_len, n_all = cfg.features.seq_len, len(feature_names(cfg.features.scales))
    sem_dim = cfg.features.word2vec_size
    folder = workdir / f"score-windows-{source}-{n}-{files}-{seq_len}-{n_all}-{sem_dim}-{seed}"
    marker = folder / "_DONE"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ids = list(score_vocabulary(source))
    per_file = [n // files + (1 if i < n % files else 0) for i in range(files)]
    first = 0
    for i, count in enumerate(per_file):
        # chunks bound the memory of a big file; each chunk has its own random stream
        schema = _score_schema(seq_len, sem_dim)
        with pq.ParquetWriter(folder / f"part-{i:04d}.parquet", schema) as out:
            for lo in range(0, count, _SCORE_ROWS_PER_FILE):
                k = min(_SCORE_ROWS_PER_FILE, count - lo)
                out.write_table(synth_windows(k, seq_len, n_all, ids, seed=seed * 1_000_003 +
                                              first + lo, first=first + lo,
                                              sem_dim=sem_dim))  # fmt: skip
        first += count
    marker.write_text(json.dumps({"windows": n, "files": files}))
    return folder


def _score_schema(seq_len: int, sem_dim: int) -> Any:
    return synth_windows(1, seq_len, 1, ["x"], sem_dim=sem_dim).schema


def bench_model(cfg: Config, vocab_size: int, seed: int = 0) -> Any:
    """An untrained CRNN of the configured sizes (``train.crnn``; ``features.seq_len``,
    ``top_k`` features, ``word2vec_size`` semantic dimensions) and random template vectors:
    scoring does the same work whatever the weights are."""
    import torch

    from logcrnn.model.crnn import CRNN, CRNNConfig

    torch.manual_seed(seed)
    sem_dim = cfg.features.word2vec_size
    vectors = np.random.default_rng(seed).standard_normal((vocab_size, sem_dim))
    vectors[:2] = 0  # padding and unknown
    config = CRNNConfig.from_dict(
        {
            **dataclasses.asdict(cfg.train.crnn),
            "vocab_size": vocab_size,
            "seq_len": cfg.features.seq_len,
            "n_features": cfg.features.top_k,
            "sem_dim": sem_dim,
        }
    )
    return CRNN(config, vectors.astype(np.float32)).eval()


def plain_arrays(
    folder: Path, vocab_size: int, feature_index: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model inputs of the windows in ``folder``, prepared as :func:`score.score_frame`
    does: (N, L) int64 indices (unseen -> 1), (N,) int64 lengths, (N, F) float32 features,
    (N, D) float32 semantic vectors."""
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["sequence", "length", "semantic", "features_std"])
    n = table.num_rows

    def rows(column: str) -> np.ndarray:  # (N, width) of a fixed-width list column
        return table[column].combine_chunks().flatten().to_numpy().reshape(n, -1)

    seq = rows("sequence").astype(np.int64)
    seq = np.where(seq >= vocab_size, 1, seq)
    length = table["length"].to_numpy().astype(np.int64)
    std = rows("features_std")
    sem = rows("semantic").astype(np.float32)
    return seq, length, std[:, list(feature_index)].astype(np.float32), sem


def plain_scores(
    model: Any,
    sequence: np.ndarray,
    length: np.ndarray,
    features: np.ndarray,
    semantic: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """Plain batched inference: (N, L), (N,), (N, F), (N, D) -> (N,) float64 P(anomalous).

    Batches of windows of similar length, as :func:`score.score_frame` forms them.
    """
    import torch

    from logcrnn.score import batches_by_length

    out = np.empty(len(length), dtype=np.float64)
    with torch.no_grad():
        for rows in batches_by_length(length, sequence.shape[1], batch_size):
            logit = model(
                torch.from_numpy(sequence[rows]),
                torch.from_numpy(length[rows]),
                torch.from_numpy(features[rows]),
                torch.from_numpy(semantic[rows]),
            ).logit
            out[rows] = torch.sigmoid(logit).double().numpy()
    return out


def bench_score(
    cfg: Config,
    source: str,
    windows: int,
    files: int,
    repeat: int,
    workdir: Path,
    seed: int = 0,
    batch_size: int = 1024,
    plain_threads: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Scoring throughput of the scoring UDF against plain torch inference, same windows.

    ``windows`` synthetic windows (:func:`synth_windows`, written once as ``files`` Parquet
    files) and an untrained CRNN of the configured sizes (:func:`bench_model`).  Then,
    alternating ``repeat`` times: plain batched inference in this process over the windows'
    arrays, read beforehand, once per torch thread count in ``plain_threads`` (default: 1 and
    torch's default, the cores; on a machine shared with other jobs torch's own threads can
    be many times slower than one thread, busy-waiting for a descheduled peer), and the UDF
    path: ``spark.read.parquet`` -> :func:`score.score_windows` (the broadcast model,
    ``mapInPandas`` over :func:`score.score_frame`, exactly what ``score_night`` runs) ->
    the ``noop`` sink, which materialises every output row.  An observation on the output
    counts the rows and sums the scores, checked against the plain scores.  The ratio is the
    UDF's median rate over the faster plain variant's.
    """
    import torch
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from logcrnn import score
    from logcrnn.features import feature_names
    from logcrnn.model.crnn import CRNN
    from logcrnn.model.data import TemplateVectors
    from logcrnn.spark import spark_session

    if windows <= 0 or files <= 0 or repeat <= 0:
        raise UsageError("bench score: --windows, --files and --repeat must be positive")
    load_source(cfg, source)
    data = _score_data(cfg, source, windows, files, workdir, seed)
    texts = score_vocabulary(source)
    model = bench_model(cfg, len(texts) + 2, seed)
    n_all = len(feature_names(cfg.features.scales))
    rng = np.random.default_rng(seed)
    pick = tuple(int(i) for i in sorted(rng.choice(n_all, cfg.features.top_k, replace=False)))
    vectors = None
    if model.config.event_vectors:
        # each event's own template vector, looked up by id in the UDF as score_night does;
        # the same rows as the model's table, so both paths give the same scores
        table = model.template_vectors.numpy()
        vectors = TemplateVectors.of({t: table[2 + k] for k, t in enumerate(texts)})
    scorer = score.Scorer(
        model_blob=model.to_bytes(),
        version=f"bench-untrained-{seed}",
        threshold=0.5,
        feature_index=pick,
        texts=texts,
        batch_size=batch_size,
        vectors=vectors,
    )
    plain_model = CRNN.from_bytes(scorer.model_blob)  # what every Python worker loads
    load_before = os.getloadavg()
    sequence, length, feats, sem = plain_arrays(data, model.config.vocab_size, pick)
    n = len(length)
    default_threads = torch.get_num_threads()
    if plain_threads is None:
        plain_threads = (1, default_threads)
    if not plain_threads or min(plain_threads) < 1:
        raise UsageError("bench score: --threads must be positive thread counts")
    variants = sorted(set(plain_threads))
    plain_s: dict[int, list[float]] = {t: [] for t in variants}
    udf_s: list[float] = []
    observed: list[dict[str, Any]] = []
    plain_sum = 0.0
    try:
        with spark_session("bench_score", cfg.spark) as spark:
            cores = spark.sparkContext.defaultParallelism
            frame = spark.read.parquet(str(data))
            partitions = frame.rdd.getNumPartitions()
            arrow_batch = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
            for i in range(repeat):
                for threads in variants:
                    torch.set_num_threads(threads)
                    started = time.perf_counter()
                    scores = plain_scores(plain_model, sequence, length, feats, sem, batch_size)
                    plain_s[threads].append(time.perf_counter() - started)
                    plain_sum = float(scores.sum())
                torch.set_num_threads(default_threads)
                seen = Observation(f"bench_score_{i}")
                rows = score.score_windows(spark, frame, scorer).observe(
                    seen,
                    F.count(F.lit(1)).alias("rows"),
                    F.sum("score").alias("score_sum"),
                    F.sum(F.col("is_anomaly").cast("long")).alias("anomalies"),
                )
                started = time.perf_counter()
                rows.write.format("noop").mode("overwrite").save()
                udf_s.append(time.perf_counter() - started)
                observed.append(dict(seen.get))
                log.info("plain %s, UDF %.1fs", {t: round(s[-1], 1) for t, s in plain_s.items()},
                         udf_s[-1])  # fmt: skip
    finally:
        torch.set_num_threads(default_threads)
    load_after = os.getloadavg()
    plain_rate = {t: n / statistics.median(s) for t, s in plain_s.items()}
    best = max(plain_rate, key=lambda t: plain_rate[t])
    udf_rate = n / statistics.median(udf_s)
    last = observed[-1]
    return {
        "benchmark": "score",
        "source": source,
        "windows": n,
        "files": files,
        "partitions": partitions,
        "cores": cores,
        "repeat": repeat,
        "seq_len": model.config.seq_len,
        "vocabulary": len(texts),
        "features": len(pick),
        "mean_length": round(float(length.mean()), 2),
        "truncated_share": round(float((length > model.config.seq_len).mean()), 4),
        "batch_size": batch_size,
        "arrow_batch": int(arrow_batch) if arrow_batch else None,
        "model_bytes": len(scorer.model_blob),
        # what the executors fetch once per night: the model and the template texts
        "broadcast_bytes": len(pickle.dumps(scorer)),
        "plain": [
            {
                "threads": t,
                "seconds": [round(s, 2) for s in plain_s[t]],
                "windows_per_s": round(plain_rate[t]),
            }
            for t in variants
        ],
        "plain_threads": best,
        "plain_windows_per_s": round(plain_rate[best]),
        "udf_seconds": [round(s, 2) for s in udf_s],
        "udf_windows_per_s": round(udf_rate),
        "ratio_udf_to_plain": round(udf_rate / plain_rate[best], 3),
        "rows_scored": [int(o["rows"]) for o in observed],
        "anomalies": int(last["anomalies"] or 0),
        "score_sum_udf": float(last["score_sum"]),
        "score_sum_plain": plain_sum,
        "load_average": {"before": _load(load_before), "after": _load(load_after)},
    }


def _load(avg: tuple[float, float, float]) -> list[float]:
    """1-, 5- and 15-minute load averages (the machine may be shared)."""
    return [round(a, 2) for a in avg]


def _format_load(result: dict[str, Any]) -> str:
    load = result["load_average"]
    return f"load average before {load['before']}, after {load['after']}"


def format_score(result: dict[str, Any]) -> str:
    out = [
        f"score benchmark: {result['windows']:,} synthetic windows ({result['source']}, mean "
        f"length {result['mean_length']}, {result['truncated_share']:.1%} truncated at "
        f"{result['seq_len']}; {result['vocabulary']} templates, {result['features']} "
        f"features), untrained CRNN, {result['cores']} cores, batch {result['batch_size']}, "
        f"median of {result['repeat']}; broadcast {result['broadcast_bytes'] / 1024:,.0f} KiB "
        f"(model {result['model_bytes'] / 1024:,.0f} KiB)",
    ]
    for p in result["plain"]:
        out.append(
            f"  plain torch, one process, {p['threads']} thread(s): "
            f"{p['windows_per_s']:>9,} windows/s   runs {p['seconds']}"
        )
    out.append(
        f"  scoring UDF (parquet -> mapInPandas -> noop), {result['partitions']} partitions: "
        f"{result['udf_windows_per_s']:>9,} windows/s   runs {result['udf_seconds']}"
    )
    out.append(
        f"  UDF / plain ({result['plain_threads']} thread(s)): "
        f"{result['ratio_udf_to_plain']:.2f}   (rows scored {result['rows_scored']}, "
        f"score sums UDF {result['score_sum_udf']:.4f} / plain {result['score_sum_plain']:.4f})"
    )
    out.append(f"  {_format_load(result)}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# the whole night

#: ``bench nightly``'s target for the whole night, session start included.
NIGHTLY_TARGET_S = 600
#: The night the bench times, and the synthetic training night: a week earlier, so the timed
#: run neither rebuilds nor scores it (``nightly.run`` redoes the night before only).
NIGHTLY_NIGHT = "2008-11-09"
TRAIN_NIGHT = "2008-11-01"


def _in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a new interpreter (spawn): its own driver and JVM, both gone after."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _child_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _plain_config(value: Any) -> Any:
    """A config tree as plain YAML-able values (the loader's ``path`` left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain_config(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "path"
        }
    if isinstance(value, Mapping):
        return {str(k): _plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_config(v) for v in value]
    return value


def write_config(cfg: Config, path: Path) -> Path:
    """``cfg`` as a config file that :func:`load_config` reads back into an equal config (the
    child processes get their config this way: the frozen tree does not pickle)."""
    import yaml

    path.write_text(yaml.safe_dump(_plain_config(cfg), sort_keys=False), encoding="utf-8")
    return path


def _vm_hwm(pid: int) -> int | None:
    """The peak resident set size (bytes) the kernel recorded for ``pid``; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class PeakMemory:
    """Samples every ``every`` seconds the memory of the driver, the JVM and the JVM's
    descendants (the Python workers) and keeps the peaks.

    Workers are counted twice: by RSS (pages shared between forked workers counted once per
    process, an upper bound) and by PSS (shared pages split between their users, what they
    take together).  ``total_`` is driver RSS + JVM RSS + workers' PSS.
    """

    def __init__(self, driver_pid: int, jvm_pid: int, every: float = 0.5) -> None:
        self.driver_pid = driver_pid
        self.jvm_pid = jvm_pid
        self.every = every
        self.workers_rss_ = 0
        self.workers_pss_ = 0
        self.workers_at_peak_ = 0
        self.total_ = 0
        self.samples_ = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        import psutil

        try:
            jvm = psutil.Process(self.jvm_pid)
            base = psutil.Process(self.driver_pid).memory_info().rss + jvm.memory_info().rss
            children = jvm.children(recursive=True)
        except psutil.Error:
            return
        rss = pss = count = 0
        for child in children:
            try:
                full = child.memory_full_info()
            except psutil.Error:  # a worker that just ended
                continue
            rss += full.rss
            pss += getattr(full, "pss", full.rss)
            count += 1
        self.samples_ += 1
        self.workers_rss_ = max(self.workers_rss_, rss)
        if pss > self.workers_pss_:
            self.workers_pss_, self.workers_at_peak_ = pss, count
        self.total_ = max(self.total_, base + pss)


def _train_model(
    conf_file: str,
    lake_root: str,
    source: str,
    inputs: list[str],
    labels: str,
    night: str,
    epochs: int,
    level: int,
) -> dict[str, Any]:
    """A scratch lake with one labelled night and a small model trained on it (the local
    engine, one thread): ingest, mine, windows, select-features, windows, train."""
    from logcrnn import ingest, mining, selection, windows
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session
    from logcrnn.train import job

    _child_logging(level)
    cfg = load_config(conf_file, lake=lake_root)
    settings = dataclasses.replace(cfg.train, engine="local", np=1, epochs=epochs,
                                   patience=epochs, threads=1, models_dir="")  # fmt: skip
    cfg = dataclasses.replace(cfg, train=settings)
    started = time.perf_counter()
    with spark_session("bench_nightly_model", cfg.spark) as spark:
        lake = Lake.from_settings(spark, cfg.lake)
        ingest.run(spark, cfg, source, inputs, night, lake=lake)
        mining.mine_night(spark, cfg, lake, source, night)
        windows.build_windows(spark, cfg, lake, source, night, labels=labels)
        selection.select_features(spark, cfg, lake, source, night, night)
        windows.build_windows(spark, cfg, lake, source, night, labels=labels)
        report = job.train(spark, cfg, lake, source, night, night)
    return {
        "version": report.version,
        "trained_on": f"{source} {night}, {report.train_windows:,} windows, "
        f"{report.epochs_run} epochs (validation F1 {report.valid_f1:.2f})",
        "prepare_seconds": round(time.perf_counter() - started, 1),
    }


def _install_model(
    conf_file: str, lake_root: str, source: str, model: str, level: int
) -> dict[str, Any]:
    """A scratch lake holding a given model (as its current one) and the gold.feature_stats
    it was trained with, read from the lake of the config (``--lake``)."""
    from logcrnn.lake import Lake
    from logcrnn.model import artifact
    from logcrnn.spark import spark_session

    _child_logging(level)
    cfg = load_config(conf_file)
    art = artifact.load_artifact(model)
    if art.source != source:
        raise UsageError(f"--model {model}: a model of {art.source}, not of {source}")
    started = time.perf_counter()
    with spark_session("bench_nightly_model", cfg.spark) as spark:
        home = Lake.from_settings(spark, cfg.lake)
        stats_table = "gold.feature_stats"
        stats = (
            home.read(stats_table, art.stats_night, source) if home.exists(stats_table) else None
        )
        if stats is None or stats.isEmpty():
            raise UsageError(
                f"--model {model}: the lake {home.root} has no {stats_table} of {source} "
                f"{art.stats_night}: point --lake at the lake the model was trained in"
            )
        Lake(spark, lake_root, cfg.lake.backend).write(stats, stats_table, art.stats_night, source)
    folder = artifact.models_folder(lake_root, source)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(art.path, folder / art.version)
    artifact.set_current(folder, art.version)
    return {
        "version": art.version,
        "trained_on": f"given: {art.path}",
        "prepare_seconds": round(time.perf_counter() - started, 1),
    }


def _detail(stage: str, rep: Mapping[str, Any]) -> str:
    if stage == "ingest":
        return f"{rep.get('lines_read', 0):,} lines, {rep.get('malformed', 0):,} malformed"
    if stage == "mine":
        return f"{rep['templates']} templates ({rep['new_templates']} new)"
    if stage == "windows":
        return f"{sum(rep['windows'].values()):,} windows"
    return f"{rep['windows']:,} scored, {rep['anomalies']:,} anomalous"


def _run_night(
    conf_file: str, lake_root: str, source: str, pattern: str, night: str, level: int
) -> dict[str, Any]:
    """The timed night, alone in this (fresh) process: session start, ``nightly.run``, the
    peaks of the driver, the JVM and the Python workers, and the row counts it left."""
    import resource

    from logcrnn import nightly
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    _child_logging(level)
    cfg = load_config(conf_file, lake=lake_root)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, models_dir=""))
    started = time.perf_counter()
    with spark_session("bench_nightly", cfg.spark) as spark:
        session_s = time.perf_counter() - started
        jvm = spark.sparkContext._jvm
        if jvm is None:  # pragma: no cover - a started session always has its gateway
            raise UsageError("bench nightly: the Spark session has no JVM gateway")
        jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
        with PeakMemory(os.getpid(), jvm_pid) as peak:
            result = nightly.run(spark, cfg, [source], night, pattern=pattern)
        jvm_peak = _vm_hwm(jvm_pid)
        lake = Lake.from_settings(spark, cfg.lake)
        counts = {
            table: lake.read(table, night, source).count() if lake.exists(table) else 0
            for table in ("gold.windows", "gold.anomalies")
        }
        cores = spark.sparkContext.defaultParallelism
    stages = []
    for name, rep in result["sources"][source].items():
        stage, _, stage_night = name.partition(" ")
        stages.append({"stage": stage, "night": stage_night or result["night"],
                       "seconds": float(rep.get("seconds", 0.0)),
                       "detail": _detail(stage, rep)})  # fmt: skip
    mb = 1024 * 1024
    return {
        "cores": cores,
        "session_seconds": round(session_s, 1),
        "night_seconds": result["seconds"],
        "total_seconds": round(session_s + result["seconds"], 1),
        "stages": stages,
        "other_seconds": round(result["seconds"] - sum(s["seconds"] for s in stages), 1),
        "windows_rows": counts["gold.windows"],
        "anomalies_rows": counts["gold.anomalies"],
        "memory_mb": {
            # ru_maxrss is in KiB on Linux
            "driver_getrusage_self": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            ),
            # only children that ended and were waited for: the JVM still runs here
            "driver_getrusage_children": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            ),
            "jvm_peak_rss": round(jvm_peak / mb) if jvm_peak is not None else None,
            "python_workers_peak_pss": round(peak.workers_pss_ / mb),
            "python_workers_at_peak": peak.workers_at_peak_,
            "python_workers_peak_rss": round(peak.workers_rss_ / mb),
            "all_processes_peak": round(peak.total_ / mb),
            "samples": peak.samples_,
        },
    }


def bench_nightly(
    cfg: Config,
    source: str,
    sample: Path,
    labels: Path | None,
    lines: int,
    files: int,
    repeat: int,
    workdir: Path,
    seed: int = 0,
    train_lines: int = 200_000,
    epochs: int = 3,
    model: Path | None = None,
) -> dict[str, Any]:
    """The whole night, ingest -> mine -> windows -> score, timed per stage, with peak memory.

    ``synth`` replays the sample to ``lines`` unlabelled lines (cached in ``workdir``, as for
    ``bench ingest``).  A model is prepared untimed in a scratch lake: trained on a labelled
    synthetic night of ``train_lines`` (``labels`` is the sample's label file; local engine,
    ``epochs`` epochs; kept in ``workdir`` for the next run), or ``model``, installed with
    the ``gold.feature_stats`` it was trained with, from the config's lake.  Each of
    ``repeat`` runs copies that lake and runs :func:`logcrnn.nightly.run` for night
    :data:`NIGHTLY_NIGHT` in a fresh process (spawn), so the driver's and the JVM's peaks are
    the night's alone; the headline figures are the run with the median total.
    """
    if lines <= 0 or files <= 0 or repeat <= 0:
        raise UsageError("bench nightly: --lines, --files and --repeat must be positive")
    if model is None and labels is None:
        raise UsageError("bench nightly trains its model on a labelled night: give --labels "
                         "(the sample's label file) or --model")  # fmt: skip
    load_source(cfg, source)
    workdir.mkdir(parents=True, exist_ok=True)
    level = logging.getLogger().getEffectiveLevel()
    conf_file = write_config(cfg, workdir / f"nightly-conf-{os.getpid()}.yaml")
    try:
        data = _bench_data(cfg, source, sample, lines, files, workdir, seed)
        if model is None:
            base = workdir / f"nightly-model-{source}-{train_lines}-{epochs}-{seed}"
            marker = base / "_READY"
            if marker.is_file():
                prepared = {**json.loads(marker.read_text()), "prepare_seconds": 0.0}
            else:
                shutil.rmtree(base, ignore_errors=True)
                folder = workdir / f"data-{source}-{train_lines}-1-{seed + 1}-labelled"
                if not (folder / "_DONE").is_file():
                    shutil.rmtree(folder, ignore_errors=True)
                    synth(load_source(cfg, source), sample, train_lines, folder, files=1,
                          seed=seed + 1, labels_path=labels)  # fmt: skip
                    (folder / "_DONE").write_text(json.dumps({"sample": str(sample)}))
                inputs = sorted(str(p) for p in folder.glob("part-*.log"))
                prepared = _in_fresh_process(
                    _train_model, str(conf_file), str(base / "lake"), source, inputs,
                    str(folder / "anomaly_label.csv"), TRAIN_NIGHT, epochs, level,
                )  # fmt: skip
                marker.write_text(json.dumps(prepared))
        else:
            base = workdir / f"nightly-model-given-{os.getpid()}"
            shutil.rmtree(base, ignore_errors=True)
            prepared = _in_fresh_process(
                _install_model, str(conf_file), str(base / "lake"), source, str(model), level
            )
        log.info("model %s ready (%s)", prepared["version"], prepared["trained_on"])
        runs = []
        load_before = os.getloadavg()
        lake_root = workdir / f"nightly-lake-{source}-{lines}"
        for _ in range(repeat):
            shutil.rmtree(lake_root, ignore_errors=True)
            shutil.copytree(base / "lake", lake_root)
            try:
                runs.append(_in_fresh_process(_run_night, str(conf_file), str(lake_root),
                                              source, str(data / "part-*.log"), NIGHTLY_NIGHT,
                                              level))  # fmt: skip
            finally:
                shutil.rmtree(lake_root, ignore_errors=True)
            log.info("night run: %.1fs", runs[-1]["total_seconds"])
        load_after = os.getloadavg()
        if model is not None:
            shutil.rmtree(base, ignore_errors=True)
    finally:
        conf_file.unlink(missing_ok=True)
    median = sorted(runs, key=lambda r: r["total_seconds"])[(len(runs) - 1) // 2]
    return {
        "benchmark": "nightly",
        "source": source,
        "lines": lines,
        "files": files,
        "night": NIGHTLY_NIGHT,
        "cores": median["cores"],
        "repeat": repeat,
        "model": prepared,
        "runs_total_seconds": [r["total_seconds"] for r in runs],
        **median,
        "target_seconds": NIGHTLY_TARGET_S,
        "within_target": median["total_seconds"] <= NIGHTLY_TARGET_S,
        "load_average": {"before": _load(load_before), "after": _load(load_after)},
    }


def format_nightly(result: dict[str, Any]) -> str:
    out = [
        f"nightly benchmark: {result['lines']:,} {result['source']} lines in "
        f"{result['files']} files, night {result['night']}, {result['cores']} cores, fresh "
        f"process per run, median of {result['repeat']} (runs {result['runs_total_seconds']}s)",
        f"  model {result['model']['version']}: {result['model']['trained_on']} (untimed)",
        f"  {'spark session start':<22} {result['session_seconds']:>8.1f}s",
    ]
    for s in result["stages"]:
        out.append(f"  {s['stage'] + ' ' + s['night']:<22} {s['seconds']:>8.1f}s   {s['detail']}")
    out.append(f"  {'between stages':<22} {result['other_seconds']:>8.1f}s")
    verdict = "within" if result["within_target"] else "OVER"
    out.append(
        f"  {'total':<22} {result['total_seconds']:>8.1f}s   ({verdict} the "
        f"{result['target_seconds']}s target; gold.windows {result['windows_rows']:,} rows, "
        f"gold.anomalies {result['anomalies_rows']:,} rows)"
    )
    mem = result["memory_mb"]
    out.append(
        f"  peak memory (MB): driver {mem['driver_getrusage_self']:,} (getrusage self; "
        f"children {mem['driver_getrusage_children']:,}), JVM {mem['jvm_peak_rss']} (VmHWM), "
        f"Python workers {mem['python_workers_peak_pss']:,} PSS in "
        f"{mem['python_workers_at_peak']} processes ({mem['python_workers_peak_rss']:,} as "
        f"RSS sum), all processes {mem['all_processes_peak']:,} (sampled every 0.5s, "
        f"{mem['samples']} samples)"
    )
    out.append(f"  {_format_load(result)}")
    return "\n".join(out)
