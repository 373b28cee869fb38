"""The ``logcrnn`` command: one subcommand per job, plus sql, synth, bench and demo.

Every subcommand takes ``--conf FILE``, ``--lake DIR`` and ``--set key=value``.  Commands that
report figures accept ``--json`` and then print exactly one JSON object as the last line of
stdout.  Exit status: 0 on success; 2 for a usage error (missing input, unknown source, bad
SQL); 3 for unreadable data (a corrupt file); 1 otherwise; always with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from logcrnn.errors import LogcrnnError, UsageError

log = logging.getLogger("logcrnn")

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "data" / "sample"
#: ``logcrnn evaluate``'s default models (logcrnn.evaluate.ALL_MODELS, not imported here:
#: it pulls in Spark).
EVAL_MODELS = "crnn,cnn,lstm,pca,iforest,ae,lr,rf,profile"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default=None, help="config file (default conf/local.yaml)")
    parser.add_argument("--lake", default=None, help="lake root, overriding lake.root")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set spark.conf.spark.sql.shuffle.partitions=4",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )


def _night(text: str) -> str:
    """A night argument: an ISO date (YYYY-MM-DD), or a usage error naming it."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logcrnn", description="Nightly log anomaly detection on Spark and Delta Lake."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="raw log files -> bronze.raw_lines")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--input", required=True, nargs="+", help="files, folders or globs")
    p.add_argument("--date", type=_night, required=True, help="the night, YYYY-MM-DD")

    p = sub.add_parser("mine", help="bronze.raw_lines -> silver.events, silver.templates")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--date", type=_night, required=True, help="the night, YYYY-MM-DD")
    p.add_argument("--shards", type=int, default=None, help="Drain3 shards (mining.shards)")

    p = sub.add_parser("windows", help="silver.events -> gold.windows (windows + features)")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--date", type=_night, required=True, help="the night, YYYY-MM-DD")
    p.add_argument("--labels", default=None, help="session labels, e.g. BlockId,Label csv")
    p.add_argument(
        "--stats", default=None, help="gold.feature_stats night to apply (default: newest)"
    )
    p.add_argument(
        "--no-stats", action="store_true", help="write raw features only, apply no fitted stats"
    )

    p = sub.add_parser(
        "select-features",
        aliases=["select"],
        help="fit feature statistics and score features on a training period",
    )
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument(
        "--from", dest="train_from", type=_night, required=True, help="first training night"
    )
    p.add_argument("--to", dest="train_to", type=_night, required=True, help="last training night")

    p = sub.add_parser("train", help="train the CRNN on gold.windows of a period -> model")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument(
        "--from", dest="train_from", type=_night, required=True, help="first training night"
    )
    p.add_argument("--to", dest="train_to", type=_night, required=True, help="last training night")
    p.add_argument("--np", type=int, default=None, help="workers (default train.np)")
    p.add_argument(
        "--engine",
        choices=("horovod", "local", "torch_distributor"),
        default=None,
        help="distributed engine (default train.engine)",
    )
    p.add_argument("--out", default=None, help="models folder (default models_dir/SOURCE)")
    p.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="save the model without making it current (see logcrnn models --use)",
    )

    p = sub.add_parser("models", help="a source's model versions: list, roll back, prune")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--dir", default=None, help="models folder (default models_dir/SOURCE)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--use", metavar="VERSION", help="make VERSION the current model")
    act.add_argument(
        "--keep", type=int, metavar="N", help="delete all but the newest N (never the current)"
    )
    p.add_argument("--dry-run", action="store_true", help="with --keep: only list them")

    p = sub.add_parser("sql", help="Spark SQL over the lake's tables by name")
    _common(p)
    p.add_argument("query")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--limit", type=int, default=1000, help="rows to print at most")

    p = sub.add_parser("history", help="a table's Delta versions")
    _common(p)
    _json_flag(p)
    p.add_argument("table", help="e.g. bronze.raw_lines")

    p = sub.add_parser(
        "status", help="each source's nights per stage, their gaps, and its current model"
    )
    _common(p)
    _json_flag(p)
    p.add_argument("--source", action="append", default=None, help="only this source")
    p.add_argument(
        "--check", action="store_true", help="exit 1 when any problem is found (monitoring)"
    )

    p = sub.add_parser("synth", help="scale-up data by replaying a real sample")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True)
    p.add_argument("--from", dest="sample", required=True, help="sample log (plain or .gz)")
    p.add_argument("--lines", type=int, required=True)
    p.add_argument("--out", required=True, help="a .log/.gz file, or a folder for --files")
    p.add_argument("--files", type=int, default=1, help="split the output into N files")
    p.add_argument("--labels", default=None, help="BlockId,Label file of the sample")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("bench", help="benchmarks that print their figures")
    _common(p)
    _json_flag(p)
    p.add_argument("what", choices=("ingest", "mine", "windows", "train", "score", "nightly"))
    p.add_argument(
        "--lines", type=int, default=None, help="default 10M; train: 200k (0: the sample)"
    )
    p.add_argument("--source", default="hdfs")
    p.add_argument("--from", dest="sample", default=None, help="sample to replay")
    p.add_argument(
        "--files", type=int, default=8, help="input files the lines (score: windows) are split into"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs of each variant (default 3; score, nightly: 1)",
    )
    p.add_argument("--windows", type=int, default=1_000_000, help="score: windows to score")
    p.add_argument("--batch-size", type=int, default=1024, help="score: windows per forward pass")
    p.add_argument(
        "--threads",
        default=None,
        help="score: torch thread counts of the plain baseline (default: 1 and torch's default)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="nightly: a trained model (its gold.feature_stats in the --lake lake); default: "
        "train one, untimed, on a synthetic labelled night of --train-lines lines",
    )
    p.add_argument(
        "--train-lines", type=int, default=200_000, help="nightly: lines of the training night"
    )
    p.add_argument("--workdir", default=".bench", help="scratch space for data and lakes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--baseline-lines", type=int, default=1_000_000, help="mine: lines for one Drain3"
    )
    p.add_argument(
        "--labels",
        default=None,
        help="windows, nightly: the sample's label file (default: bundled)",
    )
    p.add_argument(
        "--epochs", type=int, default=3, help="train: epochs per run; nightly: of its model"
    )
    p.add_argument("--np", default="1,2", help="train: worker counts to compare")
    p.add_argument("--engine", default="horovod", help="train: the distributed engine")

    p = sub.add_parser("parse-eval", help="template-mining accuracy (GA, PA) and speed")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", help="source name (with --log and --truth)")
    p.add_argument("--log", help="a Loghub-style log file (plain or .gz)")
    p.add_argument("--truth", help="its *_structured.csv ground truth")
    p.add_argument("--all", dest="all_dir", help="a Loghub 2k folder: every system in it")

    p = sub.add_parser(
        "evaluate", help="the CRNN against its baselines on a labelled log (scratch lake)"
    )
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--log", required=True, help="the labelled log (plain or .gz)")
    p.add_argument("--labels", default=None, help="session labels (BlockId,Label csv)")
    p.add_argument("--protocol", choices=("chrono", "random"), default="chrono")
    p.add_argument(
        "--window", default=None, help="session, sliding:SIZE:STEP or time:SIZE_S:STEP_S"
    )
    p.add_argument("--models", default=EVAL_MODELS, help="comma-separated (default: all)")
    p.add_argument("--noise", type=float, default=0.0, help="noise rate in the test logs")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None, help="folder for the report, curves, matrices")
    p.add_argument("--workdir", default=None, help="keep the scratch lake here")
    p.add_argument(
        "--dev",
        action="store_true",
        help="leave the test part out unread; report on the training part's own last 20%%",
    )

    p = sub.add_parser("score", help="gold.windows of a night -> gold.anomalies")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, help="source name, e.g. hdfs, bgl")
    p.add_argument("--date", type=_night, required=True, help="the night, YYYY-MM-DD")
    p.add_argument("--model", default=None, help="a model artifact (default: the current)")

    p = sub.add_parser("nightly", help="every nightly stage in order: ingest, mine, windows, score")
    _common(p)
    _json_flag(p)
    p.add_argument("--source", required=True, nargs="+", help="one or more sources")
    p.add_argument("--date", type=_night, required=True, help="the night, YYYY-MM-DD")
    p.add_argument(
        "--input",
        default=None,
        help="raw files of the night: a glob with {source} and {date}, e.g. "
        "'/logs/{source}/{date}/*.gz' (default: lake.raw_root/{source}/{date})",
    )
    p.add_argument("--labels", default=None, help="session labels, if known")

    p = sub.add_parser(
        "maintain", help="lake upkeep: drop nights past their retention, vacuum unused files"
    )
    _common(p)
    _json_flag(p)
    p.add_argument(
        "--date",
        type=_night,
        required=True,
        help="the night retention counts back from, YYYY-MM-DD",
    )
    p.add_argument("--table", action="append", default=None, help="only this table (repeatable)")
    p.add_argument("--source", default=None, help="drop only this source's old nights")
    p.add_argument(
        "--retain-hours",
        type=int,
        default=None,
        help="delete unused files older than this (default retention.vacuum_hours)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be dropped and deleted"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="vacuum below the tables' minimum retention (a week)",
    )

    p = sub.add_parser("demo", help="the pipeline on the bundled sample, local Spark")
    _common(p)
    _json_flag(p)
    p.add_argument("--date", type=_night, default="2008-11-09")
    return parser


# ------------------------------------------------------------------------------------------
# commands


def _config(args: argparse.Namespace) -> Any:
    from logcrnn.config import load_config

    return load_config(args.conf, overrides=args.set, lake=args.lake)


@contextmanager
def _source_lake(args: argparse.Namespace, app: str) -> Iterator[tuple[Any, Any, Any]]:
    """(config, spark, lake) for a per-source job; an unknown source fails before Spark starts."""
    from logcrnn.config import load_source
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    cfg = _config(args)
    load_source(cfg, args.source)
    with spark_session(app, cfg.spark) as spark:
        yield cfg, spark, Lake.from_settings(spark, cfg.lake)


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import ingest
    from logcrnn.config import load_source
    from logcrnn.spark import spark_session

    cfg = _config(args)
    load_source(cfg, args.source)  # fail on an unknown source before starting Spark
    with spark_session("ingest_logs", cfg.spark) as spark:
        report = ingest.run(spark, cfg, args.source, args.input, args.date)
    if not args.json:
        print(
            f"{report.source} {report.night}: {report.lines_read} lines from "
            f"{report.files} files ({report.bytes} bytes), {report.parsed} parsed, "
            f"{report.malformed} malformed ({100 * report.malformed_share:.1f}%) "
            f"{report.malformed_by_reason or ''}, "
            f"{report.seconds:.1f}s -> bronze.raw_lines v{report.table_version}"
        )
    return report.as_dict()


def cmd_mine(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import mining

    with _source_lake(args, "mine_templates") as (cfg, spark, lake):
        report = mining.mine_night(spark, cfg, lake, args.source, args.date, args.shards)
    if not args.json:
        print(
            f"{report.source} {report.night}: {report.lines} lines, "
            f"{report.distinct_messages} distinct masked messages in {report.shards} shards "
            f"-> {report.templates} templates ({report.new_templates} new, "
            f"{report.generalised} generalised), {report.seconds:.1f}s "
            f"({report.lines_per_s:,.0f} lines/s)"
        )
    return report.as_dict()


def cmd_windows(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import windows

    if args.labels and not Path(args.labels).is_file():
        raise UsageError(f"label file not found: {args.labels}")
    with _source_lake(args, "build_windows") as (cfg, spark, lake):
        report = windows.build_windows(
            spark, cfg, lake, args.source, args.date, labels=args.labels,
            stats_night=args.stats, use_stats=not args.no_stats,
        )  # fmt: skip
    if not args.json:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.windows.items()))
        print(
            f"{report.source} {report.night}: {report.events} events -> {kinds} windows "
            f"({report.labelled_windows} labelled, {report.anomalous_windows} anomalous, "
            f"{report.line_order_windows} in line order), stats "
            f"{report.stats_night or 'none'}, {report.seconds:.1f}s -> gold.windows "
            f"v{report.version}"
        )
    return report.as_dict()


def cmd_select(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import selection

    with _source_lake(args, "select_features") as (cfg, spark, lake):
        report = selection.select_features(
            spark, cfg, lake, args.source, args.train_from, args.train_to
        )
    if not args.json:
        print(
            f"{report.source} {report.train_from}..{report.train_to}: {report.windows} windows "
            f"({report.labelled_windows} labelled, {report.anomalous_windows} anomalous), "
            f"vocabulary {report.vocabulary}, {report.tokens} tokens; chosen: "
            f"{', '.join(report.chosen) or 'none (needs both classes)'}"
        )
    return report.as_dict()


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn.train import job

    with _source_lake(args, "train_model") as (cfg, spark, lake):
        report = job.train(
            spark, cfg, lake, args.source, args.train_from, args.train_to,
            np=args.np, engine=args.engine, out=args.out, promote=args.promote,
        )  # fmt: skip
    if not args.json:
        print(
            f"{report.source} {report.train_from}..{report.train_to}: {report.train_windows} "
            f"training + {report.valid_windows} validation windows, {report.np} "
            f"{report.engine} worker(s), {report.epochs_run} epochs (best {report.best_epoch}), "
            f"{report.windows_per_s:,.0f} windows/s; validation F1 {report.valid_f1:.3f} at "
            f"threshold {report.threshold:.3f}; {report.seconds:.1f}s -> model {report.version}"
            f" ({report.path}{'' if report.promoted else ', not made current'})"
        )
    return report.as_dict()


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn.config import load_source
    from logcrnn.model import artifact

    cfg = _config(args)
    load_source(cfg, args.source)
    folder = (
        Path(args.dir)
        if args.dir
        else artifact.models_folder(cfg.lake.root, args.source, cfg.train.models_dir)
    )
    if args.dry_run and args.keep is None:
        raise UsageError("--dry-run goes with --keep")
    result: dict[str, Any] = {"source": args.source, "folder": str(folder)}
    if args.use:
        meta = artifact.use_version(folder, args.use)
        result["current"] = meta.version
        if not args.json:
            print(f"{args.source}: model {meta.version} is now current ({folder})")
    elif args.keep is not None:
        gone = artifact.prune_versions(folder, args.keep, dry_run=args.dry_run)
        result["deleted"] = gone
        if not args.json:
            verb = "would delete" if args.dry_run else "deleted"
            print(f"{args.source}: {verb} {len(gone)} version(s){': ' if gone else ''}"
                  f"{', '.join(gone)}")  # fmt: skip
    versions = artifact.describe_versions(folder)
    result["versions"] = [v.as_dict() for v in versions]
    if not args.json and not args.use and args.keep is None:
        if not versions:
            print(f"{args.source}: no model in {folder} (run logcrnn train)")
        for v in versions:
            mark = "*" if v.current else " "
            if v.error:
                print(f"{mark} {v.version}  unreadable: {v.error}")
                continue
            auc = "-" if v.valid_roc_auc is None else f"{v.valid_roc_auc:.3f}"
            f1 = "-" if v.valid_f1 is None else f"{v.valid_f1:.3f}"
            print(f"{mark} {v.version}  created {v.created_at}  nights {v.train_from}.."
                  f"{v.train_to}  {v.train_windows} training windows  validation F1 {f1} "
                  f"ROC-AUC {auc}  threshold {v.threshold:.3f}")  # fmt: skip
    return result


def cmd_sql(args: argparse.Namespace) -> None:
    from pyspark.errors import PySparkException

    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    cfg = _config(args)
    with spark_session("sql", cfg.spark) as spark:
        lake = Lake.from_settings(spark, cfg.lake)
        try:
            df = lake.sql(args.query)
            rows: Any = df.limit(args.limit).toPandas()
        except PySparkException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise UsageError(f"SQL error: {first}") from exc
    if args.format == "csv":
        rows.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(rows.to_json(orient="records", date_format="iso", default_handler=str))
    else:
        print(rows.to_string(index=False) if len(rows) else "(no rows)")


def cmd_history(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    cfg = _config(args)
    with spark_session("history", cfg.spark) as spark:
        history = Lake.from_settings(spark, cfg.lake).history(args.table)
    if not args.json:
        for entry in history:
            extra = {k: v for k, v in entry.items() if k.startswith("logcrnn.")}
            print(f"v{entry.get('version')} {entry.get('operation')} {json.dumps(extra)}")
    return {"table": args.table, "versions": history}


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import status
    from logcrnn.config import load_source
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    cfg = _config(args)
    for source in args.source or ():
        load_source(cfg, source)  # a misspelt source is an error, not an empty "ok"
    with spark_session("status", cfg.spark) as spark:
        report = status.run(Lake.from_settings(spark, cfg.lake), cfg, args.source)
    if not args.json:
        if not report:
            print(f"no source in the lake at {cfg.lake.root}")
        for source in report:
            print("\n".join(source.lines()))
    problems = sum(len(s.problems) for s in report)
    result = {"sources": [s.as_dict() for s in report], "problems": problems}
    if args.check and problems:
        if args.json:  # the report still goes out, as the last line
            print(json.dumps(result, default=str))
        raise LogcrnnError(f"{problems} problem(s) found (see above)")
    return result


def cmd_synth(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn.config import load_source
    from logcrnn.synth import synth

    cfg = _config(args)
    spec = load_source(cfg, args.source)
    summary = synth(
        spec,
        Path(args.sample),
        args.lines,
        Path(args.out),
        files=args.files,
        seed=args.seed,
        labels_path=Path(args.labels) if args.labels else None,
    )
    if not args.json:
        print(f"wrote {summary['lines']} lines into {len(summary['files'])} file(s)")  # type: ignore[arg-type]
    return summary


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import bench

    cfg = _config(args)
    sample = Path(args.sample) if args.sample else SAMPLE_DIR / "hdfs" / "HDFS_20000.log.gz"
    if args.lines is None:
        args.lines = 200_000 if args.what == "train" else 10_000_000
    if args.repeat is None:
        args.repeat = 1 if args.what in ("score", "nightly") else 3
    if args.what == "score":
        result = bench.bench_score(
            cfg,
            source=args.source,
            windows=args.windows,
            files=args.files,
            repeat=args.repeat,
            workdir=Path(args.workdir),
            seed=args.seed,
            batch_size=args.batch_size,
            plain_threads=tuple(int(n) for n in args.threads.split(",") if n.strip())
            if args.threads
            else None,
        )
        if not args.json:
            print(bench.format_score(result))
        return result
    if args.what == "nightly":
        labels = Path(args.labels) if args.labels else None
        if labels is None and not args.sample:
            labels = SAMPLE_DIR / "hdfs" / "HDFS_20000.anomaly_label.csv"
        result = bench.bench_nightly(
            cfg,
            source=args.source,
            sample=sample,
            labels=labels,
            lines=args.lines,
            files=args.files,
            repeat=args.repeat,
            workdir=Path(args.workdir),
            seed=args.seed,
            train_lines=args.train_lines,
            epochs=args.epochs,
            model=Path(args.model) if args.model else None,
        )
        if not args.json:
            print(bench.format_nightly(result))
        return result
    if args.what == "train":
        labels = Path(args.labels) if args.labels else None
        if labels is None and not args.sample:
            labels = SAMPLE_DIR / "hdfs" / "HDFS_20000.anomaly_label.csv"
        result = bench.bench_train(
            cfg,
            source=args.source,
            sample=sample,
            labels=labels,
            lines=args.lines,
            files=args.files,
            workdir=Path(args.workdir),
            seed=args.seed,
            epochs=args.epochs,
            nps=tuple(int(n) for n in args.np.split(",") if n.strip()),
            engine=args.engine,
        )
        if not args.json:
            print(bench.format_train(result))
        return result
    if args.what == "windows":
        labels = Path(args.labels) if args.labels else None
        if labels is None and not args.sample:
            labels = SAMPLE_DIR / "hdfs" / "HDFS_20000.anomaly_label.csv"
        result = bench.bench_windows(
            cfg,
            source=args.source,
            sample=sample,
            labels=labels,
            lines=args.lines,
            files=args.files,
            repeat=args.repeat,
            workdir=Path(args.workdir),
            seed=args.seed,
        )
        if not args.json:
            print(bench.format_windows(result))
        return result
    if args.what == "mine":
        result = bench.bench_mine(
            cfg,
            source=args.source,
            sample=sample,
            lines=args.lines,
            files=args.files,
            workdir=Path(args.workdir),
            seed=args.seed,
            baseline_lines=args.baseline_lines,
        )
        if not args.json:
            print(bench.format_mine(result))
        return result
    result = bench.bench_ingest(
        cfg,
        source=args.source,
        sample=sample,
        lines=args.lines,
        files=args.files,
        repeat=args.repeat,
        workdir=Path(args.workdir),
        seed=args.seed,
    )
    if not args.json:
        print(bench.format_ingest(result))
    return result


def cmd_parse_eval(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import parse_eval
    from logcrnn.spark import spark_session

    cfg = _config(args)
    if args.all_dir:
        systems = parse_eval.find_systems(Path(args.all_dir))
    elif args.source and args.log and args.truth:
        systems = [(args.source, Path(args.log), Path(args.truth))]
    else:
        raise UsageError("parse-eval needs --source, --log and --truth, or --all DIR")
    results = []
    with spark_session("parse_eval", cfg.spark) as spark:
        for source, log_path, truth_path in systems:
            res = parse_eval.evaluate_file(spark, cfg, source, log_path, truth_path)
            results.append(res.as_dict())
            if not args.json:
                print(
                    f"{res.source:<12} GA {res.grouping_accuracy:.3f}  PA "
                    f"{res.parsing_accuracy:.3f}  templates {res.templates_found:>4} found / "
                    f"{res.templates_true:>4} true  {res.lines_per_s:>9,.0f} lines/s"
                )
    if len(results) == 1:
        return results[0]
    mean_ga = sum(r["grouping_accuracy"] for r in results) / len(results)
    mean_pa = sum(r["parsing_accuracy"] for r in results) / len(results)
    if not args.json:
        print(f"{'mean':<12} GA {mean_ga:.3f}  PA {mean_pa:.3f}  over {len(results)} systems")
    return {"systems": results, "mean_ga": round(mean_ga, 4), "mean_pa": round(mean_pa, 4)}


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import evaluate
    from logcrnn.spark import spark_session

    cfg = _config(args)
    spec = evaluate.EvalSpec(
        source=args.source,
        log=Path(args.log),
        labels=Path(args.labels) if args.labels else None,
        protocol=args.protocol,
        window=args.window,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        noise=args.noise,
        seed=args.seed,
        out=Path(args.out) if args.out else None,
        work=Path(args.workdir) if args.workdir else None,
        dev=args.dev,
    )
    with spark_session("evaluate", cfg.spark) as spark:
        report = evaluate.run(spark, cfg, spec)
    if not args.json:
        print(
            f"{report.source} {report.protocol} ({report.window}"
            f"{f', noise {report.noise}' if report.noise else ''}"
            f"{', dev hold-out' if report.dev else ''}): {report.lines} lines, "
            f"{report.windows} windows; train {report.train}, valid {report.valid}, test "
            f"{report.test} ({report.test_anomalies} anomalous); {report.seconds:.0f}s"
        )
        print(report.table())
        if args.out:
            print(f"report: {Path(args.out) / 'report.md'}")
    return report.as_dict()


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import score

    with _source_lake(args, "score_windows") as (cfg, spark, lake):
        report = score.score_night(spark, cfg, lake, args.source, args.date, args.model)
    if not args.json:
        print(
            f"{report.source} {report.night}: {report.windows} windows scored, "
            f"{report.anomalies} anomalous (threshold {report.threshold:.3f}, model "
            f"{report.model_version}), {100 * report.unseen_share:.1f}% of events unseen in "
            f"training, {report.seconds:.1f}s -> gold.anomalies v{report.version}"
        )
    return report.as_dict()


def cmd_nightly(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import nightly
    from logcrnn.spark import spark_session

    cfg = _config(args)
    with spark_session("nightly", cfg.spark) as spark:
        result = nightly.run(spark, cfg, args.source, args.date, args.input, args.labels)
    if not args.json:
        for line in nightly.summary(result):
            print(line)
    return result


def cmd_maintain(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import maintain
    from logcrnn.lake import Lake
    from logcrnn.spark import spark_session

    cfg = _config(args)
    if args.source is not None:
        from logcrnn.config import load_source

        load_source(cfg, args.source)
    with spark_session("maintain_lake", cfg.spark) as spark:
        report = maintain.run(
            Lake.from_settings(spark, cfg.lake),
            cfg,
            args.date,
            tables=args.table,
            source=args.source,
            vacuum_hours=args.retain_hours,
            dry_run=args.dry_run,
            force=args.force,
        )
    if not args.json:
        dry = " (dry run: nothing changed)" if report.dry_run else ""
        print(f"logcrnn maintain {report.night}: files unused for {report.vacuum_hours:g} h{dry}")
        for line in report.summary():
            print(line)
    return report.as_dict()


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from logcrnn import demo

    cfg = _config(args)
    result = demo.run(cfg, SAMPLE_DIR, args.date)
    if not args.json:
        print(demo.format_summary(result))
    return result


COMMANDS = {
    "ingest": cmd_ingest,
    "mine": cmd_mine,
    "windows": cmd_windows,
    "select-features": cmd_select,
    "select": cmd_select,
    "train": cmd_train,
    "sql": cmd_sql,
    "history": cmd_history,
    "status": cmd_status,
    "models": cmd_models,
    "synth": cmd_synth,
    "bench": cmd_bench,
    "parse-eval": cmd_parse_eval,
    "evaluate": cmd_evaluate,
    "score": cmd_score,
    "nightly": cmd_nightly,
    "maintain": cmd_maintain,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # py4j logs its shutdown at INFO after our last line; spark-submit merges stderr into
    # stdout, which would put that after the --json line.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        result = COMMANDS[args.command](args)
    except LogcrnnError as exc:
        print(f"logcrnn {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"logcrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
