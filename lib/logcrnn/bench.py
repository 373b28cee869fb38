"""Benchmarks: commands that print their figures next to a same-run baseline.

``bench ingest``: ``synth`` writes N lines of the source's format (split into several files),
then, alternating, a raw copy of those files (``spark.read.text(...).write.parquet(...)``, no
parsing) and the full ingest (line numbering, parsing, bronze write and Delta commit) run
``repeat`` times each in one Spark session.  Rates use the median run.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from logcrnn.config import Config, load_source
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
