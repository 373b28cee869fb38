"""The best F1 any detector can reach on a Loghub HDFS sample from a block's templates alone.

Usage: python tools/hdfs_ceiling.py HDFS_100k.log_structured.csv.zip HDFS_100k.anomaly_label.csv

Loghub's structured file gives each line's ground-truth template (EventId).  Blocks whose
template counts (or ordered template sequence) are identical cannot be told apart by a
detector that sees only those; the best such detector flags whole groups of identical
blocks, most anomalous groups first.  This is an oracle computed *with* the labels: a
ceiling to read the evaluation's F1 against, not a detector.
"""

from __future__ import annotations

import collections
import re
import sys
import zipfile

import pandas as pd


def best_f1(keys: list[tuple], labels: list[int]) -> float:
    groups: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    for key, y in zip(keys, labels, strict=True):
        groups[key][y] += 1
    positives, tp, fp, best = sum(labels), 0, 0, 0.0
    for normal, anomalous in sorted(groups.values(), key=lambda c: -c[1] / (c[0] + c[1])):
        tp, fp = tp + anomalous, fp + normal
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + (positives - tp)))
    return best


def main(structured: str, label_file: str) -> None:
    with zipfile.ZipFile(structured) as z:
        lines = pd.read_csv(z.open(z.namelist()[0]))
    labels = pd.read_csv(label_file)
    label = dict(zip(labels.BlockId, labels.Label, strict=True))
    seqs: dict[str, list[str]] = collections.defaultdict(list)
    first: dict[str, int] = {}
    for i, (content, event) in enumerate(zip(lines.Content, lines.EventId, strict=True)):
        for block in dict.fromkeys(re.findall(r"blk_-?\d+", content)):
            seqs[block].append(event)
            first.setdefault(block, i)
    blocks = sorted(seqs, key=first.__getitem__)
    cut = int(0.8 * len(blocks))
    parts = {"all": blocks, "chrono test (last 20% by first line)": blocks[cut:]}
    for name, part in parts.items():
        y = [int(label[b] == "Anomaly") for b in part]
        counts = [tuple(sorted(collections.Counter(seqs[b]).items())) for b in part]
        order = [tuple(seqs[b]) for b in part]
        print(
            f"{name}: {len(part)} blocks, {sum(y)} anomalous; best F1 from template counts "
            f"{best_f1(counts, y):.3f}, from ordered sequences {best_f1(order, y):.3f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
