"""synth: deterministic replay with fresh session ids, later timestamps, the sample's rates."""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import pytest

from logcrnn.config import load_config, load_source
from logcrnn.errors import UsageError
from logcrnn.synth import read_sample, synth

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "hdfs" / "HDFS_20000.log.gz"
LABELS = REPO / "data" / "sample" / "hdfs" / "HDFS_20000.anomaly_label.csv"
BLK = re.compile(r"blk_-?\d+")


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return load_source(load_config(REPO / "conf" / "local.yaml"), "hdfs")


def _lines(folder: Path) -> list[str]:
    out: list[str] = []
    for part in sorted(folder.glob("part-*.log")):
        out.extend(part.read_text().splitlines())
    return out


def test_replay_is_deterministic_and_sized(spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = synth(spec, SAMPLE, 45_000, tmp_path / "a", files=3, seed=7, labels_path=LABELS)
    synth(spec, SAMPLE, 45_000, tmp_path / "b", files=3, seed=7, labels_path=LABELS)
    synth(spec, SAMPLE, 45_000, tmp_path / "c", files=3, seed=8, labels_path=LABELS)
    la, lb, lc = _lines(tmp_path / "a"), _lines(tmp_path / "b"), _lines(tmp_path / "c")
    assert len(la) == 45_000 and a["replays"] == 3
    assert la == lb
    assert la != lc
    assert [len(p.read_text().splitlines()) for p in sorted((tmp_path / "a").glob("*.log"))] == [
        15_000,
        15_000,
        15_000,
    ]


def test_fresh_ids_later_times_same_shape(spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    synth(spec, SAMPLE, 40_000, tmp_path / "a", files=1, seed=1, labels_path=LABELS)
    out = _lines(tmp_path / "a")
    sample = read_sample(SAMPLE)
    first, second = out[:20_000], out[20_000:]
    sample_ids = {m for line in sample for m in BLK.findall(line)}
    ids_1 = {m for line in first for m in BLK.findall(line)}
    ids_2 = {m for line in second for m in BLK.findall(line)}
    assert len(ids_1) == len(ids_2) == len(sample_ids) == 1782
    assert not (ids_1 & sample_ids) and not (ids_1 & ids_2)
    # same text once ids and times are masked
    mask = lambda s: BLK.sub("B", s[14:])  # noqa: E731
    assert [mask(s) for s in second] == [mask(s) for s in sample]
    t = lambda s: datetime.strptime(s[:13], "%y%m%d %H%M%S")  # noqa: E731
    span = t(sample[-1]) - t(sample[0])
    assert t(second[0]) - t(first[0]) > span  # the replay starts after the sample ends
    assert t(second[0]) >= t(first[-1])


def test_labels_follow_their_sessions(spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = synth(spec, SAMPLE, 60_000, tmp_path / "a", files=2, seed=3, labels_path=LABELS)
    with open(tmp_path / "a" / "anomaly_label.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 1782
    assert sum(r["Label"] == "Anomaly" for r in rows) == 3 * 43 == result["anomalous_sessions"]
    # every labelled id occurs in the output
    out_ids = {m for line in _lines(tmp_path / "a") for m in BLK.findall(line)}
    assert {r["BlockId"] for r in rows} == out_ids


def test_bad_arguments(spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="sample not found"):
        synth(spec, tmp_path / "none.log", 10, tmp_path / "o")
    with pytest.raises(UsageError, match="positive"):
        synth(spec, SAMPLE, 0, tmp_path / "o")
