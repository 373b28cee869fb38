"""Test F1 of the CRNN trained with Horovod at np=1 and at np=2, on the same windows.

Usage: .venv/bin/python tools/np_f1.py LOG [WORKDIR]   (e.g. ../shared/data/BGL/BGL_20k_sample.log)

A BGL-format log with line labels is dealt to three nights by line number (0-2 mod 5, 3 mod 5,
4 mod 5): nights 1 and 2 train (select-features fits on them), night 3 is the test.  Windows are
count windows of 20 events every 5 (a copy of the bgl source config named ``bglnp``).  The
pipeline is the nightly one (ingest, mine, windows, select-features, windows); ``logcrnn train``
runs with ``--engine horovod`` at np=1 and np=2 on local Spark, each model's threshold comes
from its own validation slice, and the test night is scored once per model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import yaml

from logcrnn import ingest, mining, selection, windows
from logcrnn.config import load_config
from logcrnn.features import vectors_by_id
from logcrnn.lake import Lake
from logcrnn.model import artifact, metrics
from logcrnn.model.crnn import crnn_score
from logcrnn.model.data import from_records
from logcrnn.model.fitting import predict_torch
from logcrnn.spark import spark_session
from logcrnn.train import job
from logcrnn.windows import load_stats

NIGHTS = {"2005-06-03": (0, 1, 2), "2005-06-04": (3,), "2005-06-05": (4,)}
SOURCE = "bglnp"


def main(log: Path, work: Path) -> None:
    cfg = load_config(None)
    folder = work / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((Path(cfg.sources_dir) / "bgl.yaml").read_text())
    spec.update(name=SOURCE, windows={"kind": "count", "by": "source", "size": 20, "step": 5})
    (folder / f"{SOURCE}.yaml").write_text(yaml.safe_dump(spec))
    cfg = dataclasses.replace(cfg, sources_dir=str(folder))
    n1, n2, n3 = NIGHTS
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    results = {}
    with spark_session("np_f1", cfg.spark) as spark:
        lake = Lake(spark, str(work / "lake"))
        for night, residues in NIGHTS.items():
            path = work / f"{night}.log"
            path.write_text("\n".join(x for i, x in enumerate(lines) if i % 5 in residues) + "\n")
            ingest.run(spark, cfg, SOURCE, [str(path)], night, lake=lake)
            mining.mine_night(spark, cfg, lake, SOURCE, night)
        for night in NIGHTS:
            windows.build_windows(spark, cfg, lake, SOURCE, night, use_stats=False)
        selection.select_features(spark, cfg, lake, SOURCE, n1, n2)
        for night in NIGHTS:
            windows.build_windows(spark, cfg, lake, SOURCE, night)
        rows = [r.asDict() for r in lake.read("gold.windows", n3, SOURCE).collect()]
        templates = lake.read("silver.templates", n3, SOURCE).collect()
        for n in (1, 2):
            report = job.train(spark, cfg, lake, SOURCE, n1, n2, np=n, engine="horovod",
                               out=work / f"models-np{n}")  # fmt: skip
            art = artifact.load_artifact(report.path)
            c = art.meta.config
            # each event's own template vector, as nightly scoring reads it
            stats = load_stats(lake, SOURCE, art.stats_night)
            assert stats is not None
            vectors = vectors_by_id(templates, stats) if c.event_vectors else None
            test = from_records(rows, art.feature_index, c.vocab_size, c.seq_len, vectors)
            known = test.label >= 0
            scores = predict_torch(art.model, test, score_fn=crnn_score)
            m = metrics.evaluate_scores(test.label[known], scores[known], art.threshold)
            results[f"np{n}"] = {
                "train_windows": report.train_windows,
                "valid_f1": round(report.valid_f1, 4),
                "test_windows": int(known.sum()),
                "test_anomalous": int(test.label[known].sum()),
                "test_f1": round(m["f1"], 4),
                "test_roc_auc": round(m["roc_auc"], 4),
                "epochs": report.epochs_run,
                "seconds": round(report.seconds, 1),
            }
            print(f"np={n}: {results[f'np{n}']}", flush=True)
    gap = abs(results["np1"]["test_f1"] - results["np2"]["test_f1"])
    print(json.dumps({"log": str(log), "results": results, "f1_gap": round(gap, 4)}))


if __name__ == "__main__":
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="np-f1-"))
    main(Path(sys.argv[1]), work)
