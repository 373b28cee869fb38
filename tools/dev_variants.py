"""Compare CRNN settings on a dev hold-out over several seeds, the test part left unread.

Builds one log's windows and split exactly as ``logcrnn evaluate --dev`` does (the split
follows ``--split-seed``), once, then fits each model of ``--models`` with every seed of
``--seeds``; the CRNN once per ``--variant NAME=JSON``: overrides of ``train.crnn``, or of
the training loop's ``FitSettings`` for its other keys (e.g. ``unknown_rate``), or
``threshold_shrink``; every other setting is the config's (``--conf``).
Prints per seed F1 / ROC-AUC / PR-AUC on the dev hold-out, then each row's mean and range.
``--edge`` sets the best-F1 thresholds at the edge of the validation gap, not its middle.
``--oracle`` also prints, for diagnosis only, the best F1 any threshold could reach on the
dev hold-out (found *with its labels*) and the median score of its normal windows.

    .venv/bin/python tools/dev_variants.py --source bgl \\
        --log ../shared/data/loghub_2k/BGL/BGL_2k.log --window sliding:20:5 --protocol chrono \\
        --seeds 42,1,2 --models crnn,lr --variant base='{}' \\
        --variant no_window_vector='{"head_semantic": false}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from logcrnn import evaluate
from logcrnn.config import load_config
from logcrnn.model import metrics
from logcrnn.model.fitting import FitSettings
from logcrnn.spark import spark_session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", default="conf/local.yaml")
    ap.add_argument("--source", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--protocol", default="chrono", choices=evaluate.PROTOCOLS)
    ap.add_argument("--window")
    ap.add_argument("--split-seed", type=int, default=42)
    ap.add_argument("--seeds", default="42,1,2")
    ap.add_argument("--models", default="crnn")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--edge", action="store_true")
    ap.add_argument("--oracle", action="store_true")
    args = ap.parse_args()

    cfg = load_config(args.conf)
    base = dataclasses.asdict(cfg.train.crnn)
    variants: dict[str, dict[str, Any]] = {"config": {}} if not args.variant else {}
    for item in args.variant:
        name, _, text = item.partition("=")
        try:
            variants[name] = dict(json.loads(text or "{}"))
        except (ValueError, TypeError) as exc:
            ap.error(f"--variant {item!r}: expected NAME=JSON object ({exc})")
    fit_base = cfg.train.fit_settings()
    known = set(base) | {f.name for f in dataclasses.fields(FitSettings)} - {"seed", "threads"}
    known.add("threshold_shrink")
    for name, chosen in variants.items():
        unknown = sorted(set(chosen) - known)
        if unknown:
            ap.error(f"--variant {name}: unknown setting(s) {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    spec = evaluate.EvalSpec(
        source=args.source,
        log=Path(args.log),
        labels=Path(args.labels) if args.labels else None,
        protocol=args.protocol,
        window=args.window,
        models=tuple(models),
        seed=args.split_seed,
        dev=True,
    )
    work = Path(tempfile.mkdtemp(prefix="logcrnn-dev-"))
    try:
        with spark_session("dev_variants", cfg.spark) as spark:
            prep = evaluate.prepare(spark, cfg, spec, work)
        print(f"dev hold-out: {len(prep.test)} windows ({int((prep.test.label == 1).sum())} "
              f"anomalous); training {len(prep.train)}, validation {len(prep.valid)}")  # fmt: skip
        runs = [(m, v) for m in models for v in (variants if m == "crnn" else {"-": {}})]
        for model, variant in runs:
            f1s = []
            for seed in seeds:
                chosen = variants.get(variant, {})
                settings = {**base, **{k: v for k, v in chosen.items() if k in base}}
                shrink = float(chosen.get("threshold_shrink", cfg.train.threshold_shrink))
                fit = {**fit_base, **{k: v for k, v in chosen.items() if k not in base}}
                fit.pop("threshold_shrink", None)
                result, scores = evaluate.fit_model(
                    model, prep, settings, seed, not args.edge, fit, shrink
                )
                f1s.append(result.f1)
                extra = ""
                if args.oracle:
                    label = prep.test.label
                    oracle = metrics.best_f1_threshold(label, scores, middle=False)
                    best = metrics.evaluate_scores(label, scores, oracle)["f1"]
                    normal = np.median(scores[label == 0])
                    extra = (f" threshold {result.threshold:.3g} | oracle F1 {best:.3f}, "
                             f"median normal score {normal:.3g}")  # fmt: skip
                print(f"{model:8} {variant:20} seed {seed:4}: F1 {result.f1:.3f} ROC-AUC "
                      f"{result.roc_auc} PR-AUC {result.pr_auc}{extra}", flush=True)  # fmt: skip
            print(f"{model:8} {variant:20} mean F1 {np.mean(f1s):.3f} "
                  f"(min {min(f1s):.3f}, max {max(f1s):.3f})", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
