"""Windows over silver.events: exact contents for all three kinds on real samples, labels,
the midnight rule, keyless and timeless events, train-only statistics, bad label files.

Expected windows are computed here from the raw log text (timestamps, block ids, labels read
with plain Python) and the template id silver.events gave each line, independently of the
windowing code.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from logcrnn import ingest, mining, selection, windows
from logcrnn.cli import main
from logcrnn.config import Config
from logcrnn.errors import DataError
from logcrnn.features import feature_names
from logcrnn.lake import Lake

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED = REPO.parent / "shared" / "data"
HDFS_2K = SAMPLE / "loghub_2k" / "HDFS" / "HDFS_2k.log.gz"
BGL_2K = SAMPLE / "loghub_2k" / "BGL" / "BGL_2k.log.gz"
HDFS_20K = SAMPLE / "hdfs" / "HDFS_20000.log.gz"
HDFS_20K_LABELS = SAMPLE / "hdfs" / "HDFS_20000.anomaly_label.csv"
N1, N2, N3 = "2008-11-09", "2008-11-10", "2008-11-11"
BLOCK = re.compile(r"blk_-?\d+")


def _lines(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode().splitlines()


def _cfg(cfg: Config, tmp: Path, seq_len: int = 1000, **sources: dict[str, Any]) -> Config:
    """``cfg`` with long sequences and extra sources ``name: {base: hdfs, windows: {...}}``."""
    folder = tmp / "sources"
    folder.mkdir(exist_ok=True)
    for name, spec in sources.items():
        data = yaml.safe_load((Path(cfg.sources_dir) / f"{spec['base']}.yaml").read_text())
        data.update(name=name, windows=spec["windows"])
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    for base in ("hdfs", "bgl"):
        if base not in sources:
            (folder / f"{base}.yaml").write_text(
                (Path(cfg.sources_dir) / f"{base}.yaml").read_text()
            )
    features = dataclasses.replace(cfg.features, seq_len=seq_len)
    return dataclasses.replace(cfg, sources_dir=str(folder), features=features)


def _load(spark: SparkSession, cfg: Config, lake: Lake, tmp: Path, source: str, night: str,
          lines: list[str]) -> None:  # fmt: skip
    path = tmp / f"{source}-{night}.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest.run(spark, cfg, source, [str(path)], night, lake=lake)
    mining.mine_night(spark, cfg, lake, source, night)


def _tids(lake: Lake, source: str, night: str) -> dict[int, str]:
    rows = lake.read("silver.events", night, source).select("line_no", "template_id").collect()
    return {r.line_no: r.template_id for r in rows}


def _windows(lake: Lake, source: str, night: str, kind: str | None = None) -> list[Any]:
    df = lake.read("gold.windows", night, source)
    if kind:
        df = df.where(F.col("kind") == kind)
    return df.collect()


def _hdfs_ts(line: str) -> int:
    return int(datetime.strptime(line[:13], "%y%m%d %H%M%S").replace(tzinfo=UTC).timestamp())


# --------------------------------------------------------------------------------------------
# session windows


@pytest.fixture(scope="module")
def hdfs_2k(spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hdfs2k")
    conf = _cfg(cfg, tmp)
    lake = Lake(spark, str(tmp / "lake"))
    lines = _lines(HDFS_2K)
    _load(spark, conf, lake, tmp, "hdfs", N1, lines)
    report = windows.build_windows(spark, conf, lake, "hdfs", N1)
    return conf, lake, lines, report


def test_session_windows_hold_every_line_of_their_block_in_time_order(hdfs_2k: Any) -> None:
    conf, lake, lines, report = hdfs_2k
    tids = _tids(lake, "hdfs", N1)
    expected: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for no, line in enumerate(lines, start=1):
        for block in dict.fromkeys(BLOCK.findall(line)):
            expected[block].append((_hdfs_ts(line), no))
    got = {w.key: w for w in _windows(lake, "hdfs", N1)}
    assert report.windows == {"session": len(expected)} and set(got) == set(expected)
    assert report.events == 2000 and report.unkeyed_events == 0
    for block, events in expected.items():
        events.sort()
        w = got[block]
        assert w.template_ids == [tids[no] for _, no in events], block
        assert w.length == len(events) and w.kind == "session" and not w.line_order
        assert int(w.start_ts.replace(tzinfo=UTC).timestamp()) == events[0][0]
        assert int(w.end_ts.replace(tzinfo=UTC).timestamp()) == events[-1][0]
        assert w.label is None and w.sequence == [] and w.stats_night is None
        # where an analyst finds the first and last event
        assert w.first_file.endswith("hdfs-2008-11-09.log") and w.last_file == w.first_file
        assert (w.first_line, w.last_line) == (events[0][1], events[-1][1])
    # the longest session's numeric features, from the raw lines
    block = max(expected, key=lambda b: (len(expected[b]), b))
    events = sorted(expected[block])
    feats = dict(zip(feature_names(conf.features.scales), got[block].features, strict=True))
    stamps = [t for t, _ in events]
    assert feats["n_events"] == len(events)
    assert feats["n_templates"] == len({tids[no] for _, no in events})
    assert feats["duration_s"] == stamps[-1] - stamps[0]
    assert feats["gap_max_s"] == max(np.diff(stamps))
    levels = [lines[no - 1].split()[3] for _, no in events]
    assert feats["warn_ratio"] == pytest.approx(levels.count("WARN") / len(levels))


def test_hdfs_sample_one_window_per_block_and_every_label_kept(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path, seq_len=50)
    lake = Lake(spark, str(tmp_path / "lake"))
    lines = _lines(HDFS_20K)
    _load(spark, conf, lake, tmp_path, "hdfs", N1, lines)
    report = windows.build_windows(spark, conf, lake, "hdfs", N1, labels=HDFS_20K_LABELS)
    blocks = {b for line in lines for b in BLOCK.findall(line)}
    with HDFS_20K_LABELS.open() as fh:
        truth = {r["BlockId"]: int(r["Label"] == "Anomaly") for r in csv.DictReader(fh)}
    got = {w.key: (w.label, w.label_source) for w in _windows(lake, "hdfs", N1)}
    assert len(got) == len(blocks) == report.windows["session"] == 1782
    assert got == {b: (truth[b], "file") for b in blocks}
    assert report.anomalous_windows == sum(truth.values()) == 43
    assert report.labels_not_in_night == 0 and report.unlabelled_session_windows == 0
    sequences = [w.sequence for w in _windows(lake, "hdfs", N1)]
    assert all(s == [] for s in sequences)  # nothing fitted yet


def test_shared_hdfs_100k_one_window_per_block_and_labels(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    log_path, label_path = (
        SHARED / "HDFS" / "HDFS_100k.log.gz",
        SHARED / "HDFS" / "HDFS_100k.anomaly_label.csv",
    )
    if not log_path.is_file():
        pytest.skip("shared HDFS sample not present")
    lake = Lake(spark, str(tmp_path / "lake"))
    ingest.run(spark, cfg, "hdfs", [str(log_path)], N1, lake=lake)
    mining.mine_night(spark, cfg, lake, "hdfs", N1)
    report = windows.build_windows(spark, cfg, lake, "hdfs", N1, labels=label_path)
    blocks = {b for line in _lines(log_path) for b in BLOCK.findall(line)}
    with label_path.open() as fh:
        truth = {r["BlockId"]: int(r["Label"] == "Anomaly") for r in csv.DictReader(fh)}
    got = {w.key: w.label for w in lake.read("gold.windows", N1, "hdfs").collect()}
    assert len(got) == len(blocks) == 7940
    assert got == {b: truth[b] for b in blocks}
    assert report.anomalous_windows == 313


# --------------------------------------------------------------------------------------------
# time and count windows on BGL


@pytest.fixture(scope="module")
def bgl_2k(spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("bgl2k")
    conf = _cfg(
        cfg,
        tmp,
        bgl_count={
            "base": "bgl",
            "windows": {"kind": "count", "by": "source", "size": 20, "step": 5},
        },
        bgl_node={"base": "bgl", "windows": {"kind": "count", "by": "node", "size": 3, "step": 3}},
    )
    lake = Lake(spark, str(tmp / "lake"))
    lines = _lines(BGL_2K)
    events: dict[str, list[dict[str, Any]]] = {}
    for source in ("bgl", "bgl_count", "bgl_node"):
        _load(spark, conf, lake, tmp, source, N1, lines)
        tids = _tids(lake, source, N1)  # template ids hash the source name too
        events[source] = []
        for no, line in enumerate(lines, start=1):
            f = line.split()
            events[source].append({"no": no, "ts": int(f[1]), "node": f[3], "bad": f[0] != "-",
                                   "tid": tids[no]})  # fmt: skip
    return conf, lake, events


def test_time_windows_exact(spark: SparkSession, bgl_2k: Any) -> None:
    conf, lake, per_source = bgl_2k
    events = per_source["bgl"]
    spec = conf.features
    size, step = 21600, 1800  # conf/sources/bgl.yaml
    report = windows.build_windows(spark, conf, lake, "bgl", N1)
    expected: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        base = e["ts"] // step * step
        for start in range(base - size + step, base + 1, step):
            expected[start].append(e)
    got = {w.grid_start: w for w in _windows(lake, "bgl", N1)}
    assert set(got) == set(expected) and report.windows == {"time": len(expected)}
    for start, evs in expected.items():
        evs.sort(key=lambda e: (e["ts"], e["no"]))
        w = got[start]
        assert w.kind == "time" and w.key == "bgl"
        assert w.template_ids == [e["tid"] for e in evs][: spec.seq_len]
        assert w.length == len(evs)
        assert w.label == int(any(e["bad"] for e in evs)) and w.label_source == "lines"
        assert start <= evs[0]["ts"] and evs[-1]["ts"] < start + size
    assert report.anomalous_windows == sum(int(any(e["bad"] for e in v)) for v in expected.values())


def test_count_windows_exact_per_source_and_per_node(spark: SparkSession, bgl_2k: Any) -> None:
    conf, lake, per_source = bgl_2k
    windows.build_windows(spark, conf, lake, "bgl_count", N1)
    ordered = sorted(per_source["bgl_count"], key=lambda e: (e["ts"], e["no"]))
    got = {w.grid_start: w for w in _windows(lake, "bgl_count", N1)}
    assert sorted(got) == list(range(0, len(ordered), 5))
    for start, w in got.items():
        part = ordered[start : start + 20]
        assert w.template_ids == [e["tid"] for e in part] and w.length == len(part)
        assert w.label == int(any(e["bad"] for e in part)) and w.kind == "count"

    windows.build_windows(spark, conf, lake, "bgl_node", N1)
    per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(per_source["bgl_node"], key=lambda e: (e["ts"], e["no"])):
        per_node[e["node"]].append(e)
    expected = {
        (node, start): [e["tid"] for e in evs[start : start + 3]]
        for node, evs in per_node.items()
        for start in range(0, len(evs), 3)
    }
    got_node = {(w.key, w.grid_start): w.template_ids for w in _windows(lake, "bgl_node", N1)}
    assert got_node == expected


# --------------------------------------------------------------------------------------------
# midnight, keyless and timeless events

HEAD = "{ts} 148 INFO dfs.DataNode$PacketResponder: "


def _line(ts: str, text: str) -> str:
    return HEAD.format(ts=ts) + text


def test_a_session_spanning_midnight_is_one_whole_window_of_its_first_night(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path)
    lake = Lake(spark, str(tmp_path / "lake"))
    night1 = [
        _line("081109 235950", "Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:5"),
        _line("081109 235955", "Receiving block blk_2 src: /10.0.0.1:1 dest: /10.0.0.2:5"),
        _line("081109 235958", "PacketResponder 1 for block blk_2 terminating"),
    ]
    night2 = [
        _line("081110 000003", "PacketResponder 0 for block blk_1 terminating"),
        _line("081110 000004", "PacketResponder 2 for block blk_1 terminating"),
        _line("081110 000010", "Receiving block blk_3 src: /10.0.0.1:1 dest: /10.0.0.2:5"),
    ]
    _load(spark, conf, lake, tmp_path, "hdfs", N1, night1)
    # night 1 on its own: blk_1 is still running, and is written as far as it is known
    early = windows.build_windows(spark, conf, lake, "hdfs", N1)
    assert early.neighbour_nights == [] and {
        w.key: w.length for w in _windows(lake, "hdfs", N1)
    } == {"blk_1": 1, "blk_2": 2}
    _load(spark, conf, lake, tmp_path, "hdfs", N2, night2)
    first = windows.build_windows(spark, conf, lake, "hdfs", N1)  # re-run once N2 is mined
    second = windows.build_windows(spark, conf, lake, "hdfs", N2)
    assert first.neighbour_nights == [N2] and second.neighbour_nights == [N1]
    w1 = {w.key: w for w in _windows(lake, "hdfs", N1)}
    w2 = {w.key: w for w in _windows(lake, "hdfs", N2)}
    assert set(w1) == {"blk_1", "blk_2"} and set(w2) == {"blk_3"}
    assert w1["blk_1"].length == 3
    t1, t2 = _tids(lake, "hdfs", N1), _tids(lake, "hdfs", N2)
    assert w1["blk_1"].template_ids == [t1[1], t2[1], t2[2]]
    assert w1["blk_1"].end_ts == datetime(2008, 11, 10, 0, 0, 4)


def test_keyless_events_go_to_count_windows_and_timeless_ones_are_line_ordered(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path)
    lake = Lake(spark, str(tmp_path / "lake"))
    keyless = [_line(f"081109 2000{i:02d}", f"Roll edit log step {i}") for i in range(7)]
    lines = [
        *keyless[:3],
        _line("081109 200010", "Deleting blocks blk_7 blk_8 now"),  # two sessions
        "no header at all but it names blk_8",  # unparsable: no timestamp
        _line("081109 200012", "PacketResponder 1 for block blk_8 terminating"),
        *keyless[3:],
    ]
    _load(spark, conf, lake, tmp_path, "hdfs", N1, lines)
    report = windows.build_windows(spark, conf, lake, "hdfs", N1)
    tids = _tids(lake, "hdfs", N1)
    assert report.events == len(lines) and report.unkeyed_events == 7
    assert report.windows == {"session": 2, "count": 2}  # 7 keyless events: windows at 0 and 5
    got = {(w.kind, w.key, w.grid_start): w for w in _windows(lake, "hdfs", N1)}
    keyless_nos = [1, 2, 3, 7, 8, 9, 10]
    assert got[("count", "hdfs", 0)].template_ids == [tids[n] for n in keyless_nos]
    assert got[("count", "hdfs", 5)].template_ids == [tids[n] for n in keyless_nos[5:]]
    assert got[("session", "blk_7", 0)].template_ids == [tids[4]]
    blk8 = got[("session", "blk_8", 0)]
    assert blk8.line_order and blk8.start_ts is None  # line 5 has no timestamp
    assert blk8.template_ids == [tids[4], tids[5], tids[6]]  # in line order
    assert not got[("session", "blk_7", 0)].line_order
    assert report.line_order_windows == 1


def test_time_windows_put_timeless_events_in_line_ordered_count_windows(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path)
    lake = Lake(spark, str(tmp_path / "lake"))
    lines = _lines(BGL_2K)[:30] + ["broken line one", "broken line two"]
    _load(spark, conf, lake, tmp_path, "bgl", N1, lines)
    report = windows.build_windows(spark, conf, lake, "bgl", N1)
    timeless = [w for w in _windows(lake, "bgl", N1) if w.line_order]
    assert len(timeless) == 1 and timeless[0].kind == "count" and timeless[0].length == 2
    assert sum(report.windows.values()) == report.windows["time"] + 1


# --------------------------------------------------------------------------------------------
# train-only statistics


def _stats(lake: Lake, night: str) -> list[tuple[Any, ...]]:
    rows = lake.read("gold.feature_stats", night, "hdfs").drop("night", "source").collect()
    return sorted(tuple(r) for r in rows)


def test_statistics_are_fitted_on_the_training_nights_only(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path, seq_len=20)
    lake = Lake(spark, str(tmp_path / "lake"))
    # the 2k sample is drawn at random, so its blocks recur all over it: deal whole blocks
    # to the nights (lines naming blocks of two groups are left out)
    groups: dict[int, list[str]] = defaultdict(list)
    order = sorted({b for ln in _lines(HDFS_2K) for b in BLOCK.findall(ln)})
    rank = {b: i % 5 for i, b in enumerate(order)}
    for ln in _lines(HDFS_2K):
        found = {rank[b] for b in BLOCK.findall(ln)}
        if len(found) == 1:
            groups[found.pop()].append(ln)
    slices = {N1: groups[0], N2: groups[1], N3: groups[2]}
    other_test = groups[3]
    replacement = groups[4]
    blocks = {n: {b for ln in s for b in BLOCK.findall(ln)} for n, s in slices.items()}
    # no session crosses from a training night into the test night (the midnight rule
    # would rightly put such a session's later events into its training window)
    assert not blocks[N2] & (blocks[N3] | {b for ln in other_test for b in BLOCK.findall(ln)})
    for night, part in slices.items():
        _load(spark, conf, lake, tmp_path, "hdfs", night, part)
    for night in slices:
        windows.build_windows(spark, conf, lake, "hdfs", night)
    selection.select_features(spark, conf, lake, "hdfs", N1, N2)
    fitted = _stats(lake, N2)
    names = feature_names(conf.features.scales)
    feats = [r for r in fitted if r[0] == "feature"]
    train = [w.features for n in (N1, N2) for w in _windows(lake, "hdfs", n)]
    assert [r[1] for r in sorted(feats, key=lambda r: r[2])] == list(names)
    assert [r[3] for r in sorted(feats, key=lambda r: r[2])] == pytest.approx(
        np.mean(train, axis=0).tolist()
    )

    # new test-period data, windows rebuilt everywhere: the statistics do not move
    _load(spark, conf, lake, tmp_path, "hdfs", N3, other_test)
    for night in slices:
        windows.build_windows(spark, conf, lake, "hdfs", night)
    selection.select_features(spark, conf, lake, "hdfs", N1, N2)
    assert _stats(lake, N2) == fitted
    # and the test night is standardised with them
    test_window = _windows(lake, "hdfs", N3)[0]
    means = np.array([r[3] for r in sorted(feats, key=lambda r: r[2])])
    stds = np.array([r[4] if r[4] > 0 else 1.0 for r in sorted(feats, key=lambda r: r[2])])
    assert test_window.features_std == pytest.approx(
        ((np.array(test_window.features) - means) / stds).tolist()
    )
    assert test_window.stats_night == date(2008, 11, 10) and len(test_window.sequence) == 20

    # control: changing a training night does move them
    _load(spark, conf, lake, tmp_path, "hdfs", N2, replacement)
    windows.build_windows(spark, conf, lake, "hdfs", N2)
    selection.select_features(spark, conf, lake, "hdfs", N1, N2)
    assert _stats(lake, N2) != fitted


def test_feature_selection_is_deterministic_and_keeps_top_k(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    conf = _cfg(cfg, tmp_path, seq_len=20)
    conf = dataclasses.replace(
        conf, features=dataclasses.replace(conf.features, rf_trees=10, top_k=5)
    )
    lake = Lake(spark, str(tmp_path / "lake"))
    _load(spark, conf, lake, tmp_path, "hdfs", N1, _lines(HDFS_20K)[:8000])
    windows.build_windows(spark, conf, lake, "hdfs", N1, labels=HDFS_20K_LABELS)
    first = selection.select_features(spark, conf, lake, "hdfs", N1, N1)
    scores1 = sorted(map(tuple, lake.read("gold.feature_scores", N1, "hdfs").collect()))
    second = selection.select_features(spark, conf, lake, "hdfs", N1, N1)
    scores2 = sorted(map(tuple, lake.read("gold.feature_scores", N1, "hdfs").collect()))
    assert first.scored and scores1 == scores2 and first.chosen == second.chosen
    assert (
        len(first.chosen)
        == 5
        == sum(r.chosen for r in lake.read("gold.feature_scores", N1, "hdfs").collect())
    )
    assert selection.chosen_features(lake, "hdfs") == first.chosen
    rows = {r.feature: r for r in lake.read("gold.feature_scores", N1, "hdfs").collect()}
    for r in rows.values():
        assert r.score == pytest.approx(0.6 * r.mi_rank + 0.4 * r.rf_rank)
    assert sum(r.rf_importance for r in rows.values()) == pytest.approx(1.0)
    # features constant over the windows carry no information
    assert rows["error_ratio"].mutual_information == 0.0


# --------------------------------------------------------------------------------------------
# bad label files


@pytest.fixture(scope="module")
def small_hdfs(spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("labels")
    conf = _cfg(cfg, tmp, seq_len=10)
    lake = Lake(spark, str(tmp / "lake"))
    lines = _lines(HDFS_20K)[:200]
    _load(spark, conf, lake, tmp, "hdfs", N1, lines)
    blocks = sorted({b for ln in lines for b in BLOCK.findall(ln)})
    return conf, lake, tmp, blocks


def _label_file(tmp: Path, name: str, rows: list[str]) -> Path:
    path = tmp / name
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["BlockId,Label", "{b0},Normal", "{b1},Abnormal"], "label other than Normal/Anomaly"),
        (["BlockId,Label", "{b0},Normal", "not_a_block,Anomaly"], "not a session key"),
        (["BlockId,Label", "{b0},Normal", "{b0},Anomaly"], "labelled both Normal and Anomaly"),
        # a key with no window this night is checked too, and the error names every conflict
        (
            [
                "BlockId,Label",
                "{b0},Normal",
                "blk_9,Normal",
                "{b1},anomaly",
                "blk_9,Anomaly",
                "{b1},Normal",
            ],
            r"2 ids labelled both Normal and Anomaly, e.g. {pair}",
        ),  # fmt: skip
        (["BlockId,Label", "{b0},Normal,extra"], "other than two fields"),
        (["Block;Label", "{b0};Normal"], "expected a header"),
        (["BlockId,Label"], "no label rows"),
    ],
)
def test_bad_label_files_are_clear_errors(
    spark: SparkSession, small_hdfs: Any, rows: list[str], message: str
) -> None:
    conf, lake, tmp, blocks = small_hdfs
    path = _label_file(tmp, "bad.csv", [r.format(b0=blocks[0], b1=blocks[1]) for r in rows])
    before = lake.version("gold.windows") if lake.exists("gold.windows") else None
    pair = ", ".join(sorted(["blk_9", blocks[1]]))  # in id order
    with pytest.raises(DataError, match=message.format(pair=pair)):
        windows.build_windows(spark, conf, lake, "hdfs", N1, labels=path)
    assert (lake.version("gold.windows") if lake.exists("gold.windows") else None) == before


def test_duplicates_missing_and_foreign_labels_are_counted(
    spark: SparkSession, small_hdfs: Any
) -> None:
    conf, lake, tmp, blocks = small_hdfs
    rows = ["BlockId,Label", f"{blocks[0]},Anomaly", f"{blocks[0]},anomaly", f"{blocks[1]},Normal",
            "blk_123456789,Normal"]  # fmt: skip
    path = _label_file(tmp, "partial.csv", [*rows[:1], *(r + "\r" for r in rows[1:])])  # CRLF
    report = windows.build_windows(spark, conf, lake, "hdfs", N1, labels=path)
    assert report.label_file == {"path": str(path), "rows": 4, "anomalies": 2, "duplicate_rows": 1}
    assert report.labels_not_in_night == 1  # blk_123456789
    assert report.unlabelled_session_windows == len(blocks) - 2
    got = {w.key: w.label for w in _windows(lake, "hdfs", N1)}
    assert got[blocks[0]] == 1 and got[blocks[1]] == 0
    assert all(got[b] is None for b in blocks[2:])


# --------------------------------------------------------------------------------------------
# the commands


def test_cli_windows_and_select_features(
    small_hdfs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, lake, tmp, blocks = small_hdfs
    labels = _label_file(
        tmp_path,
        "l.csv",
        ["BlockId,Label"]
        + [f"{b},{'Anomaly' if i % 4 == 0 else 'Normal'}" for i, b in enumerate(blocks)],
    )
    common = ["--lake", lake.root, "--set", "features.rf_trees=5", "--json"]
    assert (
        main(["windows", "--source", "hdfs", "--date", N1, "--labels", str(labels), *common]) == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["windows"] == {"session": len(blocks)} and out["stats_night"] is None
    assert main(["select-features", "--source", "hdfs", "--from", N1, "--to", N1, *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["scored"] and len(out["chosen"]) == 12
    assert main(["windows", "--source", "hdfs", "--date", N1, *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stats_night"] == N1
    assert main(["windows", "--source", "hdfs", "--date", N1, "--labels", "nope.csv", *common]) == 2


def test_window_partitions_hold_about_a_million_rows_when_shuffle_ones_would_hold_more() -> None:
    from types import SimpleNamespace

    from logcrnn.config import WindowsSpec

    spark: Any = SimpleNamespace(conf={"spark.sql.shuffle.partitions": "8"})
    session = WindowsSpec(kind="session", fallback="time", size_s=3600, step_s=600)
    assert windows.window_partitions(spark, session, 7_000_000, 0) is None  # 8 will do
    assert windows.window_partitions(spark, session, 10_500_000, 0) == 11
    # an unkeyed event is in size / step = 6 time windows
    assert windows.window_partitions(spark, session, 10_000_000, 1_000_000) == 15
    sliding = WindowsSpec(kind="count", size=20, step=5)
    assert windows.window_partitions(spark, sliding, 2_500_000, 0) == 10
