"""The numeric core of window features and the selection arithmetic, without Spark."""

from __future__ import annotations

import math
import zlib
from datetime import date
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from logcrnn import features
from logcrnn.features import (
    FeatureContext,
    FeatureStats,
    build_context,
    feature_names,
    one_edit_apart,
    partition_features,
    tokenize,
    vocabulary_indices,
    window_features,
)
from logcrnn.selection import _mi, combine

EVENT = pa.struct(
    [
        ("ts", pa.int64()),
        ("night", pa.int32()),
        ("seq", pa.int64()),
        ("tid", pa.string()),
        ("lvl", pa.int8()),
        ("np", pa.int32()),
        ("bad", pa.bool_()),
    ]
)
NIGHT = (date(2008, 11, 9) - date(1970, 1, 1)).days
S = 1_000_000  # microseconds


def _ev(ts: int | None, seq: int, tid: str, lvl: int = 0, nparams: int = 0,
        bad: bool | None = None, night: int = NIGHT) -> dict[str, Any]:  # fmt: skip
    return {"ts": None if ts is None else ts * S, "night": night, "seq": seq, "tid": tid,
            "lvl": lvl, "np": nparams, "bad": bad}  # fmt: skip


def _batch(windows: list[tuple[str, list[dict[str, Any]]]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array(["session"] * len(windows)),
            pa.array([k for k, _ in windows]),
            pa.array([0] * len(windows), pa.int64()),
            pa.array([evs for _, evs in windows], pa.list_(EVENT)),
        ],
        names=["kind", "key", "grid_start", "events"],
    )


def _ctx(**kw: Any) -> FeatureContext:
    base: dict[str, Any] = {
        "seq_len": 4,
        "scales": (2,),
        "known_ids": ["a", "b", "c"],
        "rarity": np.array([1.0, 2.0, 3.0, 9.0]),
        "night": NIGHT,
    }
    base.update(kw)
    return FeatureContext(**base)


def _features(out: pa.RecordBatch, row: int) -> dict[str, float]:
    names = feature_names((2,))
    return dict(zip(names, out.column("features")[row].as_py(), strict=True))


def test_events_are_sorted_and_every_feature_is_exact() -> None:
    # given out of order: by time, ties by night then file/line (seq)
    events = [
        _ev(130, 7, "b", lvl=2, nparams=3),
        _ev(100, 5, "a", nparams=1),
        _ev(130, 3, "a", lvl=1),
        _ev(110, 9, "c", nparams=2),
        _ev(100, 6, "zzz"),  # a template the night does not know
    ]
    out = window_features(_batch([("blk_1", events)]), _ctx())
    assert out.num_rows == 1
    assert out.column("template_ids")[0].as_py() == ["a", "zzz", "c", "a"]  # seq_len 4
    assert out.column("length")[0].as_py() == 5
    f = _features(out, 0)
    assert f["n_events"] == 5 and f["n_templates"] == 4 and f["template_ratio"] == 0.8
    assert f["duration_s"] == 30 and f["events_per_s"] == 5 / 30
    assert f["error_ratio"] == 0.2 and f["warn_ratio"] == 0.2
    gaps = [0, 10, 20, 0]
    assert f["gap_mean_s"] == pytest.approx(np.mean(gaps))
    assert f["gap_std_s"] == pytest.approx(np.std(gaps))
    assert f["gap_max_s"] == 20
    assert f["params_mean"] == pytest.approx(6 / 5) and f["params_max"] == 3
    # rarity by template: a=1, zzz=unknown 9, c=3, a=1, b=2
    assert f["rarity_mean"] == pytest.approx(16 / 5) and f["rarity_max"] == 9
    # chunks of 2 in order [a zzz] [c a] [b]: the short last chunk does not count
    assert f["s2_max_templates"] == 2
    assert f["s2_max_alert_ratio"] == 0.5  # [c a]: a at 130 s has WARN
    assert f["s2_min_span_s"] == 0  # [a zzz] both at 100 s
    assert out.column("start_ts")[0].as_py().timestamp() == 100
    assert out.column("end_ts")[0].as_py().timestamp() == 130
    assert not out.column("line_order")[0].as_py()
    assert out.column("sequence")[0].as_py() == []  # no fitted statistics yet
    assert out.column("line_label")[0].as_py() is None  # no line carries a label


def test_a_window_missing_a_timestamp_is_in_line_order_and_marked() -> None:
    events = [_ev(300, 2, "b"), _ev(None, 1, "a"), _ev(100, 3, "c", night=NIGHT + 1)]
    out = window_features(_batch([("blk_1", events)]), _ctx())
    assert out.column("line_order")[0].as_py()
    assert out.column("template_ids")[0].as_py() == ["a", "b", "c"]  # night, then line
    assert out.column("start_ts")[0].as_py() is None
    f = _features(out, 0)
    assert f["duration_s"] == 0 and f["gap_max_s"] == 0 and f["s2_min_span_s"] == 0


def test_windows_starting_in_another_night_are_dropped() -> None:
    before = [_ev(10, 1, "a", night=NIGHT - 1), _ev(20, 2, "b")]
    inside = [_ev(20, 2, "b"), _ev(30, 1, "a", night=NIGHT + 1)]
    out = window_features(_batch([("early", before), ("mine", inside)]), _ctx())
    assert out.column("key").to_pylist() == ["mine"]
    assert out.column("length").to_pylist() == [2]


def test_line_labels_any_bad_line_makes_the_window_anomalous() -> None:
    batch = _batch(
        [
            ("w1", [_ev(1, 1, "a", bad=False), _ev(2, 2, "b", bad=True)]),
            ("w2", [_ev(1, 3, "a", bad=False), _ev(2, 4, "a", bad=None)]),
            ("w3", [_ev(1, 5, "a")]),
        ]
    )
    out = window_features(batch, _ctx())
    assert out.column("line_label").to_pylist() == [1, 0, None]


def _event_rows(windows: list[tuple[str, list[dict[str, Any]]]],
                labels: dict[str, int]) -> pa.RecordBatch:  # fmt: skip
    """Rows shaped like windows.window_events': a label row amid its window's event rows."""
    rows: list[dict[str, Any]] = []
    keys = [k for k, _ in windows] + [k for k in labels if k not in dict(windows)]
    for key in keys:
        evs = [{**e, "file_label": None} for e in dict(windows).get(key, [])]
        if key in labels:
            label_row = {**dict.fromkeys(f.name for f in EVENT), "file_label": labels[key]}
            evs.insert(len(evs) // 2, label_row)
        rows += [{"kind": "session", "key": key, "grid_start": 0, "untimed": False, **e}
                 for e in evs]  # fmt: skip
    schema = pa.schema([("kind", pa.string()), ("key", pa.string()), ("grid_start", pa.int64()),
                        ("untimed", pa.bool_()), *EVENT, ("file_label", pa.int32())])  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=schema)


@pytest.mark.parametrize("collide", [False, True])
def test_flat_event_rows_in_any_order_and_batches_give_the_windows_of_event_lists(
    monkeypatch: pytest.MonkeyPatch, collide: bool
) -> None:
    windows = [
        ("w1", [_ev(5, 1, "a"), _ev(1, 2, "b", lvl=2), _ev(3, 3, "c"), _ev(2, 4, "a")]),
        ("w2", [_ev(7, 5, "b", bad=True)]),
        (
            "w3",
            [
                _ev(4, 6, "c", nparams=2),
                _ev(None, 7, "a"),
                _ev(9, 8, "b"),
                _ev(1, 9, "b"),
                _ev(6, 10, "a"),
                _ev(2, 11, "c"),
            ],
        ),  # fmt: skip
        ("w4", [_ev(3, 12, "a"), _ev(3, 13, "zzz")]),
    ]
    labels = {"w1": 1, "w3": 0, "only_a_label": 1}
    lists = _batch(windows)
    nested = pa.RecordBatch.from_arrays(
        [*lists.columns, pa.array([labels.get(k) for k, _ in windows], pa.int32())],
        names=[*lists.schema.names, "file_label"],
    )
    expected = window_features(nested, _ctx()).to_pylist()
    rows = _event_rows(windows, labels)
    # the window hash Spark computes; with ``collide`` every window has the same one
    keys = zip(*(rows.column(name).to_pylist() for name in features.WINDOW_KEY), strict=True)
    hashes = [0 if collide else zlib.crc32(repr(k).encode()) for k in keys]
    rows = pa.RecordBatch.from_arrays(
        [*rows.columns, pa.array(hashes, pa.int64())],
        names=[*rows.schema.names, features.WINDOW_HASH],
    )
    # a partition's rows come in any order, in Arrow batches of any size; few rows per
    # features call force cuts too
    monkeypatch.setattr(features, "BATCH_ROWS", 3)
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 5, rows.num_rows):
        shuffled = rows.take(pa.array(rng.permutation(rows.num_rows)))
        batches = [shuffled.slice(i, size) for i in range(0, rows.num_rows, size)]
        out = [r for b in partition_features(_ctx())(iter(batches)) for r in b.to_pylist()]
        assert sorted(out, key=lambda r: r["key"]) == expected, size


def test_event_order_sorts_only_the_windows_out_of_order_and_equals_a_full_lexsort() -> None:
    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        row = np.sort(rng.integers(0, 6, n))
        ts = rng.integers(0, 4, n) * S
        night = rng.integers(NIGHT, NIGHT + 2, n)
        seq = rng.integers(0, 5, n)
        if trial % 3 == 0:  # mostly in order, as Spark hands most windows over
            full = np.lexsort((seq, night, ts, row))
            ts, night, seq = ts[full], night[full], seq[full]
            if n > 3:
                i = int(rng.integers(0, n - 1))
                ts[[i, i + 1]] = ts[[i + 1, i]]
        order = features._event_order(row, ts, night, seq)
        assert order.tolist() == np.lexsort((seq, night, ts, row)).tolist()


def test_distinct_per_group_is_the_same_in_the_bitmap_and_the_sorting_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 50, 2000)
    codes = rng.integers(0, 7, 2000)
    expected = [len(set(codes[groups == g].tolist())) for g in range(52)]
    assert features._distinct(groups, codes, 52, 7).tolist() == expected
    monkeypatch.setattr(features, "BITMAP_CELLS", 10)
    assert features._distinct(groups, codes, 52, 7).tolist() == expected


def test_label_rows_are_tallied_and_a_key_labelled_both_ways_is_an_error() -> None:
    def rows(labels: list[tuple[str, int | None]]) -> pa.RecordBatch:
        n = len(labels)
        return pa.RecordBatch.from_pydict(
            {
                "kind": ["session"] * n,
                "key": [k for k, _ in labels],
                "grid_start": [0] * n,
                "untimed": [False] * n,
                "ts": [None if v is not None else (i + 1) * S for i, (_, v) in enumerate(labels)],
                "night": [NIGHT] * n,
                "seq": list(range(n)),
                "tid": [None if lab is not None else "t1" for _, lab in labels],
                "lvl": [0] * n,
                "np": [0] * n,
                "bad": [None] * n,
                "file_label": [lab for _, lab in labels],
            },
            schema=pa.schema(
                [("kind", pa.string()), ("key", pa.string()), ("grid_start", pa.int64()),
                 ("untimed", pa.bool_()), ("ts", pa.int64()), ("night", pa.int32()),
                 ("seq", pa.int64()), ("tid", pa.string()), ("lvl", pa.int8()),
                 ("np", pa.int32()), ("bad", pa.bool_()), ("file_label", pa.int32())]
            ),
        )  # fmt: skip

    tally: dict[str, int] = {}
    batch = rows([("a", 1), ("a", None), ("a", 1), ("b", None), ("c", 0), ("c", 0), ("c", 0)])
    out = features.event_rows_features(batch, _ctx(), tally=tally)
    assert out.column("key").to_pylist() == ["a", "b"]  # c: labels but no event
    assert out.column("file_label").to_pylist() == [1, None]
    assert tally == {"label_rows": 5, "label_keys": 2, "label_anomalies": 2}
    with pytest.raises(features.DataError, match=f"{features.LABEL_CONFLICT}: c"):
        features.event_rows_features(rows([("b", None), ("c", 0), ("c", 1)]), _ctx())


def test_fitted_statistics_give_sequence_counts_semantics_and_z_scores() -> None:
    names = feature_names((2,))
    stats = FeatureStats(
        night=date(2008, 11, 9),
        train_from=date(2008, 11, 9),
        train_to=date(2008, 11, 9),
        names=names,
        mean=np.arange(len(names), dtype=float),
        std=np.full(len(names), 2.0),
        vocab={"a": 2, "c": 3},
        vocab_counts={"a": 10, "c": 1},
        tokens={"packet": (np.array([1.0, 0.0]), 1.0), "block": (np.array([0.0, 1.0]), 3.0)},
    )
    templates = [
        SimpleNamespace(template_id="a", current_id="a", template="packet <*>", total_count=3),
        SimpleNamespace(template_id="b", current_id="b", template="block <*>", total_count=1),
        SimpleNamespace(template_id="c", current_id="c", template="Packet block", total_count=0),
        # a template Drain3 generalised into "a" later: it resolves to a
        SimpleNamespace(template_id="old", current_id="a", template="packet 1", total_count=2),
    ]
    ctx = build_context(templates, 3, (2,), date(2008, 11, 9), stats)
    events = [_ev(1, 1, "a"), _ev(2, 2, "b"), _ev(3, 3, "c"), _ev(4, 4, "old")]
    out = window_features(_batch([("w", events)]), ctx)
    assert out.column("sequence")[0].as_py() == [2, 1, 3]  # b is not in the vocabulary
    assert out.column("counts")[0].as_py() == [0, 1, 2, 1]  # pad, unknown, a, c
    # template vectors (Eq. 2): a=[1,0], b=[0,1], c=(1*[1,0]+3*[0,1])/4, old=a
    expected = (np.array([1, 0]) + np.array([0, 1]) + np.array([0.25, 0.75]) + [1, 0]) / 4
    assert out.column("semantic")[0].as_py() == pytest.approx(expected.tolist())
    raw = np.array(out.column("features")[0].as_py())
    std = np.array(out.column("features_std")[0].as_py())
    assert std == pytest.approx((raw - stats.mean) / 2.0)
    # rarity: -log((count + 1) / (sum of live counts + live templates + 1))
    total = 3 + 1 + 0 + 3 + 1
    assert ctx.rarity[:3] == pytest.approx([-math.log(4 / total), -math.log(2 / total),
                                            -math.log(1 / total)])  # fmt: skip
    assert ctx.known_ids[3] == "old" and ctx.rarity[3] == ctx.rarity[0]
    # statistics survive their table rows
    cols = ["kind", "name", "idx", "mean", "std", "count", "idf", "vector", "train_from",
            "train_to"]  # fmt: skip
    back = FeatureStats.from_rows(
        stats.night, [_Row(zip(cols, r, strict=True)) for r in stats.to_rows()]
    )
    assert back.names == names and back.vocab == stats.vocab
    assert back.mean == pytest.approx(stats.mean) and back.tokens.keys() == stats.tokens.keys()
    # each template's own vector, as the window mean above reads it: b, outside the
    # vocabulary, keeps its own; old reads as the template it was generalised into
    by_id = features.vectors_by_id(templates, stats)
    assert sorted(by_id) == ["a", "b", "c", "old"]
    assert by_id["a"] == pytest.approx([1, 0]) and by_id["b"] == pytest.approx([0, 1])
    assert by_id["c"] == pytest.approx([0.25, 0.75]) and by_id["old"] == pytest.approx([1, 0])


def test_a_template_generalised_after_training_keeps_its_vocabulary_index() -> None:
    # the model learned "x" (index 2) and "y" (3); on a later night Drain3 generalised "x"
    # into "x2" and merged "y" and "y_b" into "y2"; "z" is new
    vocab = {"x": 2, "y": 3, "y_b": 4}
    ids = ["x", "x2", "y", "y2", "y_b", "z"]
    current = ["x2", "x2", "y2", "y2", "y2", "z"]
    assert vocabulary_indices(ids, current, vocab) == [2, 2, 3, 3, 4, 1]
    # through build_context: events carrying the new id read as the learned template
    names = feature_names((2,))
    stats = FeatureStats(
        night=date(2008, 11, 9), train_from=date(2008, 11, 9), train_to=date(2008, 11, 9),
        names=names, mean=np.zeros(len(names)), std=np.ones(len(names)),
        vocab={"x": 2}, vocab_counts={"x": 5}, tokens={},
    )  # fmt: skip
    templates = [
        SimpleNamespace(template_id="x", current_id="x2", template="a b", total_count=5),
        SimpleNamespace(template_id="x2", current_id="x2", template="a <*>", total_count=7),
    ]
    ctx = build_context(templates, 3, (2,), date(2008, 11, 9), stats)
    out = window_features(_batch([("w", [_ev(1, 1, "x2"), _ev(2, 2, "x")])]), ctx)
    assert out.column("sequence")[0].as_py() == [2, 2, 0]
    assert out.column("counts")[0].as_py() == [0, 0, 2]


def test_one_edit_apart_counts_a_replace_insert_delete_or_swap_as_one_edit() -> None:
    t = "Receiving block <*> src: <*> dest: <*>".split()
    assert one_edit_apart("Receiving block <*> src: <*> dest: <*>".split(), t)
    assert one_edit_apart("Receiving bloxk <*> src: <*> dest: <*>".split(), t)  # replaced
    assert one_edit_apart("Receiving block <*> src: qq <*> dest: <*>".split(), t)  # inserted
    assert one_edit_apart("Receiving <*> src: <*> dest: <*>".split(), t)  # deleted
    assert one_edit_apart("block Receiving <*> src: <*> dest: <*>".split(), t)  # swapped
    assert one_edit_apart("Receiving block 12 src: a dest: b".split(), t)  # wildcards
    assert not one_edit_apart("Deleting blocks <*> src: <*> dest: <*>".split(), t)
    assert not one_edit_apart("Receiving block <*> src: <*>".split(), t)
    assert not one_edit_apart("src: Receiving block <*> <*> dest: <*>".split(), t)


def test_an_unseen_template_one_edit_from_a_learned_one_borrows_its_index() -> None:
    vocab = {"recv": 2, "del": 3}
    texts = {
        "recv": "Receiving block <*> src: <*> dest: <*>",
        "del": "Deleting block <*> file <*>",
        "noisy": "Receiving block <*> qwzk src: <*> dest: <*>",
        "new": "Verification succeeded for <*>",
        "short": "Deleting <*> file",
    }
    ids = ["recv", "noisy", "new", "short"]
    assert vocabulary_indices(ids, ids, vocab) == [2, 1, 1, 1]
    # "short" is one edit from "del" too, but has fewer than 4 tokens
    assert vocabulary_indices(ids, ids, vocab, texts) == [2, 2, 1, 1]


class _Row(dict):  # type: ignore[type-arg]
    """A dict that also reads as attributes, like a Spark Row."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def test_tokenize_splits_camel_case_and_drops_wildcards() -> None:
    assert tokenize("BLOCK* NameSystem.addStoredBlock: blockMap updated: <*> is added to <*>") == [
        "block", "name", "system", "add", "stored", "block", "block", "map", "updated", "is",
        "added", "to",
    ]  # fmt: skip


def test_mutual_information_and_rank_combination() -> None:
    # a feature whose bin decides the label: MI = H(Y) = log 2 for balanced classes
    assert _mi({(0, 0): 50, (1, 1): 50}) == pytest.approx(math.log(2))
    assert _mi({(0, 0): 25, (0, 1): 25, (1, 0): 25, (1, 1): 25}) == pytest.approx(0.0)
    rows = combine(["x", "y", "z"], mi=[0.1, 0.3, 0.2], rf=[0.5, 0.1, 0.4], top_k=2)
    by = {r["feature"]: r for r in rows}
    assert [by[f]["mi_rank"] for f in "xyz"] == [3, 1, 2]
    assert [by[f]["rf_rank"] for f in "xyz"] == [1, 3, 2]
    assert [by[f]["score"] for f in "xyz"] == pytest.approx([2.2, 1.8, 2.0])
    assert [by[f]["rank"] for f in "xyz"] == [3, 1, 2]
    assert [by[f]["chosen"] for f in "xyz"] == [False, True, True]


def test_scores_equal_but_for_float_noise_rank_by_feature_position() -> None:
    # the same scores summed in another row order differ in the last bits only
    mi = [0.0008, 0.0008 + 1e-16, 0.002]
    rf = [0.1, 0.1 - 1e-15, 0.3]
    by = {r["feature"]: r for r in combine(["a", "b", "c"], mi=mi, rf=rf, top_k=2)}
    assert [by[f]["mi_rank"] for f in "abc"] == [2, 3, 1]
    assert [by[f]["rf_rank"] for f in "abc"] == [2, 3, 1]
    assert [by[f]["rank"] for f in "abc"] == [2, 3, 1]
    # a real difference still orders them
    by = {r["feature"]: r for r in combine(["a", "b", "c"], mi=[0.001, 0.0011, 0.002],
                                           rf=rf, top_k=2)}  # fmt: skip
    assert by["b"]["mi_rank"] == 2


def test_feature_moments_merge_partitions_in_a_fixed_order(spark: Any) -> None:
    from logcrnn.selection import feature_moments

    rng = np.random.default_rng(5)
    x = rng.normal(loc=[0.0, 1e6, -3.0], scale=[1.0, 1e-3, 50.0], size=(997, 3))
    x[:, 2] = np.round(x[:, 2])
    rows = [([float(v) for v in row],) for row in x]
    frame = spark.createDataFrame(rows, "features array<double>")
    expected = (x.mean(axis=0), x.std(axis=0))
    runs = [feature_moments(frame.repartition(k, F.rand(seed=k))) for k in (1, 4, 4, 7)]
    for got in runs:
        assert sorted(got) == [0, 1, 2]
        assert [got[i][0] for i in range(3)] == pytest.approx(expected[0], rel=1e-12, abs=1e-12)
        # (a std of 1e-3 around 1e6 keeps about 7 significant digits in doubles)
        assert [got[i][1] for i in range(3)] == pytest.approx(expected[1], rel=1e-6)
    # the same partitions give the same bits, whichever task finishes first
    assert runs[1] == runs[2]
