"""Window features: one pass of numpy over each Arrow batch of grouped windows.

Spark shuffles one flat row per (window, event), hash-partitioned by window
(:func:`logcrnn.windows.window_events`), so a window's rows are all in one partition;
:func:`partition_features` groups a partition's rows by window with one numpy sort and
:func:`event_rows_features` orders the events of many windows at once and computes every
feature from that one array with segmented numpy reductions, with no Python loop over
windows or events.  :func:`window_features` does the same for windows given as lists of event
structs.  All are pure functions of Arrow batches and a :class:`FeatureContext`, tested
without Spark.

The features (Eq. 1-3 and 5 of the seed paper):

* ``template_ids`` / ``sequence``: the template sequence in event order, truncated to
  ``seq_len``; ``sequence`` holds vocabulary indices padded with 0 (1 = a template outside the
  training vocabulary);
* ``counts``: events per vocabulary index;
* ``semantic``: the mean over the window's events of their template vectors, each template
  vector the IDF-weighted mean of its tokens' Word2Vec embeddings (Eq. 1-2);
* ``features``: the numeric statistics named by :func:`feature_names`, including the
  multi-scale ones over consecutive sub-windows of 5/10/20/50 events;
* ``features_std``: the same standardised with the training period's mean and standard
  deviation (Eq. 3).

The vocabulary, token vectors and means are fitted on a training period only
(:func:`fit_stats`) and stored in ``gold.feature_stats``; until they exist, the four
vocabulary-dependent columns are empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from logcrnn.errors import DataError

#: Numeric statistics of a whole window, in this order, before the multi-scale ones.
BASE_FEATURES = (
    "n_events",  # events in the window
    "n_templates",  # distinct templates
    "template_ratio",  # distinct templates / events
    "duration_s",  # last - first timestamp
    "events_per_s",  # events / max(duration, 1 s)
    "error_ratio",  # share of ERROR/FATAL/SEVERE/... levels
    "warn_ratio",  # share of WARN/WARNING
    "gap_mean_s",  # inter-arrival times
    "gap_std_s",
    "gap_max_s",
    "params_mean",  # parameters (masked values) per event
    "params_max",
    "rarity_mean",  # -log p(template) over all nights mined so far
    "rarity_max",
)
#: Per sub-window scale k: statistics over the window's consecutive chunks of k events.
SCALE_FEATURES = (
    "max_templates",  # most distinct templates in one chunk
    "max_alert_ratio",  # highest share of non-INFO levels in one chunk
    "min_span_s",  # shortest time k consecutive events took (bursts)
)

TS_TYPE = pa.timestamp("us", tz="UTC")


def feature_names(scales: Sequence[int]) -> tuple[str, ...]:
    """Names of the numeric features, in the order of ``gold.windows.features``."""
    return BASE_FEATURES + tuple(f"s{k}_{name}" for k in scales for name in SCALE_FEATURES)


_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


def tokenize(template: str) -> list[str]:
    """Word tokens of a template: letters only, camelCase split, lower case, ``<*>`` dropped.

    >>> tokenize("PacketResponder <*> for block <*> terminating")
    ['packet', 'responder', 'for', 'block', 'terminating']
    """
    text = template.replace("<*>", " ")
    return [t.lower() for t in _TOKEN.findall(text) if len(t) > 1]


# --------------------------------------------------------------------------------------------
# fitted statistics


@dataclass(frozen=True)
class FeatureStats:
    """What is fitted on the training period (stored as ``gold.feature_stats`` rows).

    ``vocab`` maps a template id to its index (2 and up, by training count); ``tokens`` maps a
    token to its Word2Vec vector and IDF weight; ``mean`` / ``std`` standardise ``features``.
    """

    night: date
    train_from: date
    train_to: date
    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    vocab: Mapping[str, int]
    vocab_counts: Mapping[str, int]
    tokens: Mapping[str, tuple[np.ndarray, float]] = field(default_factory=dict)

    @property
    def vector_size(self) -> int:
        first = next(iter(self.tokens.values()), None)
        return 0 if first is None else len(first[0])

    @property
    def counts_size(self) -> int:
        """Length of a count vector: padding (0), unknown (1) and the vocabulary."""
        return len(self.vocab) + 2

    def template_vector(self, template: str, size: int) -> np.ndarray:
        """Eq. 2: the IDF-weighted mean of the template's token vectors (zeros if none known)."""
        acc = np.zeros(size)
        weight = 0.0
        for token in tokenize(template):
            entry = self.tokens.get(token)
            if entry is not None:
                acc += entry[1] * entry[0]
                weight += entry[1]
        return acc / weight if weight > 0 else acc

    def to_rows(self) -> list[tuple[Any, ...]]:
        """``kind, name, idx, mean, std, count, idf, vector, train_from, train_to`` rows."""
        rows: list[tuple[Any, ...]] = []
        for i, name in enumerate(self.names):
            rows.append(
                ("feature", name, i, float(self.mean[i]), float(self.std[i]), None, None, None)
            )
        for tid, idx in sorted(self.vocab.items(), key=lambda kv: kv[1]):
            rows.append(("template", tid, idx, None, None, int(self.vocab_counts[tid]), None, None))
        for i, (token, (vec, idf)) in enumerate(sorted(self.tokens.items())):
            rows.append(("token", token, i, None, None, None, float(idf), [float(v) for v in vec]))
        return [(*r, self.train_from, self.train_to) for r in rows]

    @classmethod
    def from_rows(cls, night: date, rows: Iterable[Any]) -> FeatureStats:
        feats: list[tuple[int, str, float, float]] = []
        vocab: dict[str, int] = {}
        counts: dict[str, int] = {}
        tokens: dict[str, tuple[np.ndarray, float]] = {}
        train: tuple[date, date] | None = None
        for r in rows:
            train = (r.train_from, r.train_to)
            if r.kind == "feature":
                feats.append((r.idx, r.name, r.mean, r.std))
            elif r.kind == "template":
                vocab[r.name] = r.idx
                counts[r.name] = r["count"]
            elif r.kind == "token":
                tokens[r.name] = (np.asarray(r.vector, dtype=np.float64), float(r.idf))
        if train is None or not feats:
            raise DataError(f"gold.feature_stats night {night} holds no feature statistics")
        feats.sort()
        return cls(
            night=night,
            train_from=train[0],
            train_to=train[1],
            names=tuple(f[1] for f in feats),
            mean=np.array([f[2] for f in feats], dtype=np.float64),
            std=np.array([f[3] for f in feats], dtype=np.float64),
            vocab=vocab,
            vocab_counts=counts,
            tokens=tokens,
        )


# --------------------------------------------------------------------------------------------
# the per-night context shipped to the executors


@dataclass(frozen=True)
class FeatureContext:
    """Everything :func:`window_features` needs besides the events (small, driver-built).

    ``known_ids``: every template id of the night (aliases included); arrays indexed like it,
    plus one last entry for an id not in it: ``rarity``, and with fitted stats
    ``vocab_idx`` (vocabulary index, 1 = unknown) and ``semantic`` (template vectors).
    ``night``: days since the epoch; windows whose first event is in another night are
    dropped (None keeps all).
    """

    seq_len: int
    scales: tuple[int, ...]
    known_ids: list[str]
    rarity: np.ndarray
    night: int | None = None
    vocab_idx: np.ndarray | None = None
    counts_size: int = 0
    semantic: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


#: the wildcard of a Drain3 template (logcrnn.templates.WILDCARD, not imported: no drain3 here)
_WILDCARD = "<*>"

#: an unseen template shorter than this never borrows a learned template's index
NEAREST_MIN_TOKENS = 4


def _same(a: str, b: str) -> bool:
    return a in (b, _WILDCARD) or b == _WILDCARD


def one_edit_apart(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when token lists ``a`` and ``b`` differ by at most one edit: a token replaced,
    inserted or deleted, or two neighbouring tokens swapped (a wildcard matches any token)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _same(x, y)]
        if len(diff) <= 1:
            return True
        i = diff[0]
        return diff == [i, i + 1] and _same(a[i], b[i + 1]) and _same(a[i + 1], b[i])
    long, short = (a, b) if len(a) > len(b) else (b, a)
    i = 0
    while i < len(short) and _same(long[i], short[i]):
        i += 1
    return all(_same(x, y) for x, y in zip(long[i + 1 :], short[i:], strict=True))


def vocabulary_indices(
    ids: Sequence[str],
    current: Sequence[str],
    vocab: Mapping[str, int],
    texts: Mapping[str, str] | None = None,
) -> list[int]:
    """The vocabulary index of each template id (1: unknown), through generalisations.

    ``current[i]`` is the id ``ids[i]`` resolves to today.  An id the model learned keeps its
    index even after Drain3 generalised its template; a newer id takes the index of the
    learned id it now stands for (the lowest index, i.e. the most frequent in training, when
    several learned templates were merged into one).  Without this, every line of a template
    generalised after training would read as unknown to the model.

    ``texts`` (template id -> template text), when given, lets a template still unknown
    after that borrow the index of a learned template one token edit away
    (:func:`one_edit_apart`; the most frequent in training if several are), when it has at
    least :data:`NEAREST_MIN_TOKENS` tokens: a message whose text changed by a word (a new
    version's wording, a corrupted line) reads as the event it is, not as a new kind of event.
    """
    by_current: dict[str, int] = {}
    for tid, cur in zip(ids, current, strict=True):
        idx = vocab.get(tid)
        if idx is not None:
            by_current[cur] = min(idx, by_current.get(cur, idx))
    out = [
        vocab.get(tid) or vocab.get(cur) or by_current.get(cur, 1)
        for tid, cur in zip(ids, current, strict=True)
    ]
    if texts is None:
        return out
    learned = sorted(
        (idx, texts[tid].split()) for tid, idx in vocab.items() if texts.get(tid) is not None
    )
    nearest: dict[str, int] = {}
    for i, (tid, cur) in enumerate(zip(ids, current, strict=True)):
        if out[i] != 1:
            continue
        text = texts.get(cur) or texts.get(tid)
        if text is None:
            continue
        if text not in nearest:
            tokens = text.split()
            nearest[text] = 1
            if len(tokens) >= NEAREST_MIN_TOKENS:
                for idx, other in learned:
                    if one_edit_apart(tokens, other):
                        nearest[text] = idx
                        break
        out[i] = nearest[text]
    return out


def build_context(
    templates: Iterable[Any],
    seq_len: int,
    scales: Sequence[int],
    night: date | None,
    stats: FeatureStats | None,
    nearest: bool = False,
) -> FeatureContext:
    """The context for one night from its ``silver.templates`` rows and the fitted stats.

    A template id that Drain3 generalised since (``current_id`` differs) takes its current
    template's count, vocabulary index and vector.  Rarity is ``-log p`` with add-one
    smoothing over the counts of all nights mined so far.  ``nearest``: a template outside
    the vocabulary may read as a learned one a token edit away (:func:`vocabulary_indices`).
    """
    rows = list(templates)
    by_id = {r.template_id: r for r in rows}
    live = [r for r in rows if r.current_id == r.template_id]
    total = sum(int(r.total_count) for r in live) + len(live) + 1

    def current(r: Any) -> Any:
        seen = set()
        while r.current_id != r.template_id and r.current_id in by_id and r.template_id not in seen:
            seen.add(r.template_id)
            r = by_id[r.current_id]
        return r

    ids = sorted(by_id)
    cur = [current(by_id[t]) for t in ids]
    rarity = np.array(
        [-math.log((int(c.total_count) + 1) / total) for c in cur] + [math.log(total)]
    )
    ctx: dict[str, Any] = {}
    if stats is not None:
        size = stats.vector_size
        ctx["vocab_idx"] = np.array(
            [
                *vocabulary_indices(
                    ids,
                    [c.template_id for c in cur],
                    stats.vocab,
                    {r.template_id: r.template or "" for r in rows} if nearest else None,
                ),
                1,
            ],
            dtype=np.int32,
        )
        ctx["counts_size"] = stats.counts_size
        ctx["semantic"] = np.vstack(
            [stats.template_vector(c.template or "", size) for c in cur] + [np.zeros(size)]
        )
        ctx["mean"] = stats.mean
        ctx["std"] = np.where(stats.std > 0, stats.std, 1.0)
    return FeatureContext(
        seq_len=seq_len,
        scales=tuple(scales),
        known_ids=ids,
        rarity=rarity,
        night=(night - date(1970, 1, 1)).days if night is not None else None,
        **ctx,
    )


def vectors_by_id(templates: Iterable[Any], stats: FeatureStats) -> dict[str, np.ndarray]:
    """Template id -> the semantic vector the windows job gives its events (Eq. 2: its
    current template's, after generalisations), for every template of ``templates``
    (``silver.templates`` rows), those unseen in training included."""
    ctx = build_context(templates, 1, (), None, stats)
    assert ctx.semantic is not None
    return {tid: ctx.semantic[i] for i, tid in enumerate(ctx.known_ids)}


# --------------------------------------------------------------------------------------------
# the numeric core

#: Arrow schema of :func:`window_features`' output (Spark DDL in ``OUTPUT_DDL``).
OUTPUT_DDL = (
    "kind string, key string, grid_start long, start_ts timestamp, end_ts timestamp, "
    "line_order boolean, length int, template_ids array<string>, sequence array<int>, "
    "counts array<int>, semantic array<double>, features array<double>, "
    "features_std array<double>, line_label int, file_label int, first_seq long, last_seq long"
)


def _lists(values: pa.Array | np.ndarray, lengths: np.ndarray, typ: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    vals = values if isinstance(values, pa.Array) else pa.array(values, type=typ)
    return pa.ListArray.from_arrays(pa.array(offsets), vals)


def _fixed_lists(matrix: np.ndarray, typ: pa.DataType) -> pa.Array:
    rows, width = matrix.shape
    return _lists(matrix.reshape(-1), np.full(rows, width), typ)


def _empty_lists(rows: int, typ: pa.DataType) -> pa.Array:
    return _lists(np.zeros(0), np.zeros(rows, dtype=np.int64), typ)


def window_features(batch: pa.RecordBatch, ctx: FeatureContext) -> pa.RecordBatch:
    """Features of a batch of windows (Arrow in, Arrow out; see :data:`OUTPUT_DDL`).

    ``batch``: ``kind, key, grid_start``, optionally ``file_label`` (passed through), and
    ``events``, a list per window of structs with the fields of :data:`EVENT_FIELDS`, in any
    order.  Events are ordered by (ts, night, seq); a window with any event lacking a timestamp
    is ordered by (night, seq) and marked ``line_order``.  ``first_seq`` / ``last_seq``: the
    ``seq`` of the window's first and last event in that order (where an analyst finds them).
    """
    if batch.num_rows == 0:
        return _empty_output()
    events = batch.column("events")
    offs = np.asarray(events.offsets, dtype=np.int64)
    flat = events.flatten()
    fields = pa.RecordBatch.from_arrays(flat.flatten(), names=[f.name for f in flat.type])
    return _features(batch, offs - offs[0], fields, ctx)


def _numpy(col: pa.Array, fill: Any = 0) -> np.ndarray:
    """A column as numpy, nulls replaced by ``fill`` (zero-copy when it has none).

    ``pc.fill_null``, not ``Array.fill_null``: the method infers the fill's type anew on
    every call, which costs a millisecond a batch."""
    if col.null_count:
        col = pc.fill_null(col, fill)
    return col.to_numpy(zero_copy_only=False)


#: Up to this many (group, template) cells, distinct templates per group are counted in a
#: bitmap (one scatter); more fall back to sorting the pairs.
BITMAP_CELLS = 1 << 24


def _distinct(groups: np.ndarray, codes: np.ndarray, g: int, n_codes: int) -> np.ndarray:
    """Distinct ``codes`` per group (``groups`` in 0..g-1, ``codes`` in 0..n_codes-1)."""
    if g * n_codes <= BITMAP_CELLS:
        seen = np.zeros(g * n_codes, dtype=bool)
        seen[groups * n_codes + codes] = True
        return seen.reshape(g, n_codes).sum(axis=1)
    return np.bincount(np.unique(groups * n_codes + codes) // n_codes, minlength=g)


def _event_order(row: np.ndarray, ts: np.ndarray, night: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The stable permutation that orders events by (row, ts, night, seq), ``row`` being
    non-decreasing.  Spark hands most windows over in order already: only the windows with
    an event out of order are sorted."""
    n = len(row)
    order = np.arange(n)
    if n < 2:
        return order
    d_ts, d_night = np.diff(ts), np.diff(night)
    ok = (np.diff(row) > 0) | (d_ts > 0)
    ok |= (d_ts == 0) & ((d_night > 0) | ((d_night == 0) & (np.diff(seq) >= 0)))
    if ok.all():
        return order
    unsorted = np.zeros(int(row[-1]) + 1, dtype=bool)
    unsorted[row[1:][~ok]] = True
    picked = np.flatnonzero(unsorted[row])
    order[picked] = picked[np.lexsort((seq[picked], night[picked], ts[picked], row[picked]))]
    return order


def _features(
    windows: pa.RecordBatch,
    offs: np.ndarray,
    flat: pa.RecordBatch,
    ctx: FeatureContext,
    rows: np.ndarray | None = None,
) -> pa.RecordBatch:
    """:func:`window_features` of windows whose events are ``flat[offs[i]:offs[i + 1]]``
    (of ``flat.take(rows)`` when ``rows`` picks the event rows out of ``flat``)."""
    w = windows.num_rows
    n = np.diff(offs)
    if w == 0 or (n <= 0).any():
        if w == 0:
            return _empty_output()
        raise DataError("a window without events reached the feature step")
    starts = offs[:-1]
    ends = offs[1:] - 1
    total = int(offs[-1])
    row = np.repeat(np.arange(w), n)

    def column(name: str, fill: Any = 0) -> np.ndarray:
        values = _numpy(flat.column(name), fill)
        return values if rows is None else values[rows]

    ts_col = flat.column("ts")
    ts_null = ts_col.is_null().to_numpy(zero_copy_only=False)
    if rows is not None:
        ts_null = ts_null[rows]
    line_order = np.logical_or.reduceat(ts_null, starts)
    ts = column("ts").astype(np.int64)
    if line_order.any():
        ts = np.where(line_order[row], 0, ts)
    night = column("night").astype(np.int64)
    seq = column("seq").astype(np.int64)
    order = _event_order(row, ts, night, seq)
    ts, night, seq = ts[order], night[order], seq[order]
    picked = order if rows is None else rows[order]
    take = pa.array(picked)
    tid = flat.column("tid").take(take)
    lvl = column("lvl").astype(np.int8)[order]
    nparams = column("np").astype(np.float64)[order]
    bad_col = flat.column("bad")
    bad_known = bad_col.is_valid().to_numpy(zero_copy_only=False)[picked]
    bad_true = _numpy(bad_col, False)[picked]

    t = len(ctx.known_ids)
    known = pc.index_in(tid, value_set=pa.array(ctx.known_ids, type=pa.string()))
    k = _numpy(known, t).astype(np.int64)
    codes = pc.dictionary_encode(tid).indices.to_numpy().astype(np.int64)
    n_codes = int(codes.max()) + 1 if total else 1
    pos = np.arange(total) - starts[row]
    nf = n.astype(np.float64)

    def per_window(values: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=values, minlength=w)

    distinct = _distinct(row, codes, w, n_codes)
    duration = (ts[ends] - ts[starts]) / 1e6
    gaps = np.diff(ts, prepend=0) / 1e6
    gaps[starts] = 0.0
    pairs = np.maximum(nf - 1, 1)
    gap_mean = per_window(gaps) / pairs
    gap_var = per_window(gaps * gaps) / pairs - gap_mean**2
    rarity = ctx.rarity[k]
    cols = [
        nf,
        distinct,
        distinct / nf,
        duration,
        nf / np.maximum(duration, 1.0),
        per_window((lvl == 2).astype(np.float64)) / nf,
        per_window((lvl == 1).astype(np.float64)) / nf,
        gap_mean,
        np.sqrt(np.maximum(gap_var, 0.0)),
        np.maximum.reduceat(gaps, starts),
        per_window(nparams) / nf,
        np.maximum.reduceat(nparams, starts),
        per_window(rarity) / nf,
        np.maximum.reduceat(rarity, starts),
    ]
    alert = (lvl >= 1).astype(np.float64)
    for size in ctx.scales:
        chunk = pos // size
        n_chunks = (n + size - 1) // size
        coff = np.zeros(w + 1, dtype=np.int64)
        np.cumsum(n_chunks, out=coff[1:])
        gid = coff[:-1][row] + chunk
        g = int(coff[-1])
        sizes = np.bincount(gid, minlength=g)
        c_distinct = _distinct(gid, codes, g, n_codes)
        c_alert = np.bincount(gid, weights=alert, minlength=g) / sizes
        c_start = np.zeros(g, dtype=np.int64)
        np.cumsum(sizes[:-1], out=c_start[1:])
        c_span = (ts[c_start + sizes - 1] - ts[c_start]) / 1e6
        # Chunks of fewer than k events only count in windows shorter than k.
        valid = (sizes == size) | np.repeat(n < size, n_chunks)
        cols.append(np.maximum.reduceat(np.where(valid, c_distinct, -np.inf), coff[:-1]))
        cols.append(np.maximum.reduceat(np.where(valid, c_alert, -np.inf), coff[:-1]))
        cols.append(np.minimum.reduceat(np.where(valid, c_span, np.inf), coff[:-1]))
    feats = np.column_stack(cols).astype(np.float64, copy=False)

    head = pos < ctx.seq_len
    kept = np.minimum(n, ctx.seq_len)
    template_ids = _lists(tid.filter(pa.array(head)), kept, pa.string())
    if (
        ctx.vocab_idx is not None
        and ctx.semantic is not None
        and ctx.mean is not None
        and ctx.std is not None
    ):
        vidx = ctx.vocab_idx[k]
        seq_mat = np.zeros((w, ctx.seq_len), dtype=np.int32)
        seq_mat[row[head], pos[head]] = vidx[head]
        sequence = _fixed_lists(seq_mat, pa.int32())
        cs = ctx.counts_size
        count_mat = np.bincount(row * cs + vidx, minlength=w * cs).astype(np.int32)
        counts = _fixed_lists(count_mat.reshape(w, cs), pa.int32())
        # per dimension, each window's vectors summed in event order
        dims = np.ascontiguousarray(ctx.semantic.T)
        sem = np.zeros((w, len(dims)))
        for d, dim in enumerate(dims):
            sem[:, d] = np.bincount(row, weights=dim[k], minlength=w)
        sem /= nf[:, None]
        semantic = _fixed_lists(sem, pa.float64())
        std_mat = (feats - ctx.mean) / ctx.std
        features_std = _fixed_lists(std_mat, pa.float64())
    else:
        sequence = _empty_lists(w, pa.int32())
        counts = _empty_lists(w, pa.int32())
        semantic = _empty_lists(w, pa.float64())
        features_std = _empty_lists(w, pa.float64())

    any_known = np.logical_or.reduceat(bad_known, starts)
    any_bad = np.logical_or.reduceat(bad_true & bad_known, starts)
    out = pa.RecordBatch.from_arrays(
        [
            windows.column("kind"),
            windows.column("key"),
            windows.column("grid_start"),
            pa.array(ts[starts], type=pa.int64(), mask=line_order).cast(TS_TYPE),
            pa.array(ts[ends], type=pa.int64(), mask=line_order).cast(TS_TYPE),
            pa.array(line_order),
            pa.array(n.astype(np.int32)),
            template_ids,
            sequence,
            counts,
            semantic,
            _fixed_lists(feats, pa.float64()),
            features_std,
            pa.array(any_bad.astype(np.int32), mask=~any_known),
            (
                windows.column("file_label").cast(pa.int32())
                if "file_label" in windows.schema.names
                else pa.nulls(w, pa.int32())
            ),
            pa.array(seq[starts], type=pa.int64()),
            pa.array(seq[ends], type=pa.int64()),
        ],
        names=OUTPUT_NAMES,
    )
    if ctx.night is not None:
        in_night = night[starts] == ctx.night
        if not in_night.all():
            out = out.filter(pa.array(in_night))
    return out


OUTPUT_NAMES = [part.strip().split(" ")[0] for part in OUTPUT_DDL.split(", ")]


def _empty_output() -> pa.RecordBatch:
    types = {
        "kind": pa.string(),
        "key": pa.string(),
        "grid_start": pa.int64(),
        "start_ts": TS_TYPE,
        "end_ts": TS_TYPE,
        "line_order": pa.bool_(),
        "length": pa.int32(),
        "template_ids": pa.list_(pa.string()),
        "sequence": pa.list_(pa.int32()),
        "counts": pa.list_(pa.int32()),
        "semantic": pa.list_(pa.float64()),
        "features": pa.list_(pa.float64()),
        "features_std": pa.list_(pa.float64()),
        "line_label": pa.int32(),
        "file_label": pa.int32(),
        "first_seq": pa.int64(),
        "last_seq": pa.int64(),
    }
    return pa.RecordBatch.from_pylist([], schema=pa.schema(list(types.items())))


#: The fields of an event, flat in the rows of :func:`logcrnn.windows.window_events` and a
#: struct in :func:`window_features`' lists: ``ts`` (int64 µs since the epoch, null if
#: unknown), ``night`` (int32 days), ``seq`` (int64: file rank << 40 | line number), ``tid``
#: (template id), ``lvl`` (int8: 2 error, 1 warning, 0 other), ``np`` (int32 parameters),
#: ``bad`` (bool, null if unlabelled).
EVENT_FIELDS = ("ts", "night", "seq", "tid", "lvl", "np", "bad")

#: The columns whose values tell one window's rows from the next one's.
WINDOW_KEY = ("kind", "key", "grid_start", "untimed")

#: Rows per call of :func:`event_rows_features` (at least; cut at a window start): few numpy
#: calls per window, and numpy's temporaries stay small.
BATCH_ROWS = 1 << 16


def _window_starts(batch: pa.RecordBatch) -> np.ndarray:
    """True at each row of ``batch`` that starts a window: the first row, and every row whose
    ``WINDOW_KEY`` differs from the row before it."""
    n = batch.num_rows
    new = np.ones(n, dtype=bool)
    if n < 2:
        return new
    same = None
    for name in WINDOW_KEY:
        col = batch.column(name)
        a, b = col.slice(1), col.slice(0, n - 1)
        equal = pc.equal(a, b)
        if a.null_count or b.null_count:
            equal = pc.or_kleene(equal, pc.and_(a.is_null(), b.is_null()))
        same = equal if same is None else pc.and_kleene(same, equal)
    # one conversion of the combined comparison (null: a null against a value)
    new[1:] = ~_numpy(same, False)
    return new


#: The start of the error a window's key labelled both ways raises on the executor
#: (:func:`logcrnn.windows.build_windows` turns it into the label file's own error).
LABEL_CONFLICT = "a session key labelled both Normal and Anomaly"


def event_rows_features(
    batch: pa.RecordBatch,
    ctx: FeatureContext,
    starts: np.ndarray | None = None,
    tally: dict[str, int] | None = None,
) -> pa.RecordBatch:
    """Features of the windows whose rows make up ``batch`` (see :data:`OUTPUT_DDL`).

    ``batch``: rows of :func:`logcrnn.windows.window_events`, each window's rows next to each
    other and all of them in the batch: ``WINDOW_KEY`` columns, the :data:`EVENT_FIELDS` and
    ``file_label``.  A row with a ``file_label`` (0 normal, 1 anomaly) is a line of the
    label file, not an event: the window takes its label, a key with labels but no event
    gives no window, and a key labelled both ways raises :class:`DataError`
    (:data:`LABEL_CONFLICT`).  ``tally`` (when given) counts the ``label_rows``, the
    distinct ``label_keys`` and the ``label_anomalies`` (rows labelled Anomaly) seen.
    Events are ordered as in :func:`window_features`.  ``starts``: the rows that start a
    window (:func:`_window_starts`), when the caller has them already.
    """
    if batch.num_rows == 0:
        return _empty_output()
    new = _window_starts(batch) if starts is None else starts
    gid = np.cumsum(new) - 1
    g = int(gid[-1]) + 1
    label_col = batch.column("file_label")
    is_label = label_col.is_valid().to_numpy(zero_copy_only=False)
    label = np.full(g, -1, dtype=np.int64)
    if is_label.any():
        at = gid[is_label]
        rows = np.bincount(at, minlength=g)
        anomalies = np.bincount(at, weights=_numpy(label_col)[is_label], minlength=g)
        labelled = rows > 0
        label[labelled] = anomalies[labelled] > 0
        both = labelled & (anomalies > 0) & (anomalies < rows)
        if both.any():
            first_row = int(np.flatnonzero(new)[np.flatnonzero(both)[0]])
            raise DataError(f"{LABEL_CONFLICT}: {batch.column('key')[first_row].as_py()}")
        if tally is not None:
            tally["label_rows"] = tally.get("label_rows", 0) + int(is_label.sum())
            tally["label_keys"] = tally.get("label_keys", 0) + int(labelled.sum())
            tally["label_anomalies"] = tally.get("label_anomalies", 0) + int(anomalies.sum())
    n = np.bincount(gid[~is_label], minlength=g)
    keep = n > 0
    if not keep.any():
        return _empty_output()
    first = pa.array(np.flatnonzero(new)[keep])
    windows = pa.RecordBatch.from_arrays(
        [
            *(batch.column(name).take(first) for name in ("kind", "key", "grid_start")),
            pa.array(label[keep], type=pa.int32(), mask=label[keep] < 0),
        ],
        names=["kind", "key", "grid_start", "file_label"],
    )
    events = batch.select(list(EVENT_FIELDS))
    rows_picked = np.flatnonzero(~is_label) if is_label.any() else None
    offs = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(n[keep], out=offs[1:])
    return _features(windows, offs, events, ctx, rows_picked)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


#: The column of :func:`logcrnn.windows.window_events` rows holding a hash of the window key.
WINDOW_HASH = "wh"


def group_windows(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
    """``batch``'s rows with each window's rows together, and the rows that start a window.

    Rows are sorted by :data:`WINDOW_HASH` (stable: a window's events keep their order);
    when two windows share a hash (64 bits: about once in 10^19 pairs), by the window key
    columns after it.
    """
    if batch.num_rows == 0:
        return batch, np.zeros(0, dtype=bool)
    wh = _numpy(batch.column(WINDOW_HASH))
    order = np.argsort(wh, kind="stable")
    if (np.diff(order) != 1).any():
        batch, wh = batch.take(pa.array(order)), wh[order]
    starts = _window_starts(batch)
    changed = np.ones(len(wh), dtype=bool)
    changed[1:] = wh[1:] != wh[:-1]
    if (starts & ~changed).any():  # a hash shared by two windows: their rows may interleave
        keys = [(WINDOW_HASH, "ascending"), *((name, "ascending") for name in WINDOW_KEY)]
        batch = batch.take(pc.sort_indices(batch, sort_keys=keys))
        starts = _window_starts(batch)
    return batch, starts


def partition_features(
    ctx: FeatureContext, on_done: Callable[[dict[str, int]], None] | None = None
) -> Any:
    """The ``mapInArrow`` function: a partition of :func:`logcrnn.windows.window_events` rows
    (whole windows, in any order) in, one row of features per window out.

    The partition's rows are gathered, grouped by window (:func:`group_windows`, a numpy
    sort on a hash instead of Spark's row sort) and go through :func:`event_rows_features`
    in slices of at least :data:`BATCH_ROWS` rows cut at window starts.  The windows job
    sizes partitions from the night's event counts, so a partition fits in memory.
    ``on_done`` receives the partition's label-row tally once all its rows are through.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tally = {"label_rows": 0, "label_keys": 0, "label_anomalies": 0}
        parts = [b for b in batches if b.num_rows]
        if parts:
            batch, starts = group_windows(_concat(parts))
            del parts
            cuts = np.flatnonzero(starts)
            at, n = 0, batch.num_rows
            while at < n:
                nxt = int(np.searchsorted(cuts, at + BATCH_ROWS))
                end = int(cuts[nxt]) if nxt < len(cuts) else n
                yield event_rows_features(batch.slice(at, end - at), ctx, starts[at:end], tally)
                at = end
        if on_done is not None:
            on_done(tally)

    return run
