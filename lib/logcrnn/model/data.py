"""Model inputs: the arrays every detector trains and scores on, and their batches.

One :class:`WindowArrays` holds ``n`` windows of ``gold.windows`` as numpy arrays; the CRNN,
the deep baselines and the classic ones all read from it, so every model of a comparison sees
exactly the same windows.  Plain numpy and PyTorch only (no Spark, Horovod or Petastorm here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from logcrnn.errors import DataError

#: Vocabulary index of padding and of a template unseen in the training period.
PAD, UNKNOWN = 0, 1


@dataclass(frozen=True)
class WindowArrays:
    """``n`` windows as arrays (row ``i`` of every field is window ``i``).

    ``sequence``: (n, L) int64 vocabulary indices, padded with :data:`PAD`;
    ``length``: (n,) int64 true number of events (may exceed L: the sequence is truncated);
    ``counts``: (n, V) float32 events per vocabulary index (V = vocabulary + 2);
    ``semantic``: (n, D) float32 mean template vector of the window (Eq. 1-2);
    ``features``: (n, F) float32 standardised numeric features (the chosen ones, Eq. 3);
    ``label``: (n,) int64 1 anomalous, 0 normal, -1 unknown;
    ``start_us``: (n,) int64 window start, microseconds since the epoch (line order if none);
    ``window_id``: (n,) object window ids;
    ``event_vectors``: None, or (n, L, D) float32 semantic vector of each event's own
    template (zeros at padding), templates unseen in training included.
    """

    sequence: np.ndarray
    length: np.ndarray
    counts: np.ndarray
    semantic: np.ndarray
    features: np.ndarray
    label: np.ndarray
    start_us: np.ndarray
    window_id: np.ndarray
    event_vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.label)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != n:
                raise DataError(f"window arrays: {f.name} has {len(value)} rows, label has {n}")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def seq_len(self) -> int:
        return int(self.sequence.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.counts.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def take(self, index: np.ndarray | Sequence[int]) -> WindowArrays:
        """The windows at ``index`` (a boolean mask or positions), in that order."""
        idx = np.asarray(index)
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = None if value is None else value[idx]
        return WindowArrays(**out)

    def check(self, what: str) -> None:
        """Raise :class:`DataError` if any input is NaN or infinite."""
        for name in ("counts", "semantic", "features"):
            value = getattr(self, name)
            if value.size and not np.isfinite(value).all():
                bad = int((~np.isfinite(value)).any(axis=1).sum())
                raise DataError(f"{what}: {bad} windows have NaN or infinite {name}")

    def batch(self, index: np.ndarray | Sequence[int] | slice | None = None) -> dict[str, Any]:
        """A batch dict of numpy arrays (keys: the field names except ``window_id``)."""
        sel = slice(None) if index is None else index
        return {
            f.name: getattr(self, f.name)[sel]
            for f in fields(self)
            if f.name != "window_id" and getattr(self, f.name) is not None
        }


def from_records(
    rows: Sequence[Mapping[str, Any]],
    feature_index: Sequence[int],
    vocab_size: int,
    seq_len: int,
    vectors: Mapping[str, np.ndarray] | None = None,
) -> WindowArrays:
    """``gold.windows`` rows (dicts or Rows) -> :class:`WindowArrays`.

    ``vectors`` (template id -> semantic vector, :func:`logcrnn.features.vectors_by_id`):
    when given, the arrays carry ``event_vectors`` from the rows' ``template_ids``.

    ``feature_index`` picks the chosen features out of ``features_std``; ``vocab_size`` and
    ``seq_len`` are the model's, so windows built with another vocabulary or sequence length
    are a :class:`DataError` rather than silently misread.
    """
    n = len(rows)
    sequence = np.zeros((n, seq_len), dtype=np.int64)
    counts = np.zeros((n, vocab_size), dtype=np.float32)
    pick = list(feature_index)
    features = np.zeros((n, len(pick)), dtype=np.float32)
    semantic: list[Any] = []
    for i, r in enumerate(rows):
        seq = r["sequence"] or []
        if len(seq) != seq_len:
            raise DataError(
                f"window {r['window_id']}: sequence of length {len(seq)}, the model takes "
                f"{seq_len}: were the windows built with another features.seq_len?"
            )
        cnt = r["counts"] or []
        if len(cnt) != vocab_size:
            raise DataError(
                f"window {r['window_id']}: count vector of {len(cnt)} templates, the model's "
                f"vocabulary has {vocab_size}: build the windows with the model's statistics"
            )
        sequence[i] = seq
        counts[i] = cnt
        std = r["features_std"] or []
        if pick and len(std) <= max(pick):
            raise DataError(f"window {r['window_id']}: {len(std)} standardised features")
        features[i] = [std[j] for j in pick]
        semantic.append(r["semantic"] or [])
    dim = max((len(s) for s in semantic), default=0)
    sem = np.zeros((n, dim), dtype=np.float32)
    for i, s in enumerate(semantic):
        if s:
            sem[i] = s
    label = np.array([-1 if r["label"] is None else int(r["label"]) for r in rows], dtype=np.int64)
    start = np.array(
        [
            int(r["start_ts"].timestamp() * 1_000_000) if r["start_ts"] is not None else i
            for i, r in enumerate(rows)
        ],
        dtype=np.int64,
    )
    events = None
    if vectors is not None:
        events = event_vectors([r["template_ids"] for r in rows], seq_len, vectors, sem.shape[1])
    return WindowArrays(
        event_vectors=events,
        sequence=sequence,
        length=np.array([int(r["length"]) for r in rows], dtype=np.int64),
        counts=counts,
        semantic=sem,
        features=features,
        label=label,
        start_us=start,
        window_id=np.array([r["window_id"] for r in rows], dtype=object),
    )


def iterate_batches(
    data: WindowArrays,
    batch_size: int,
    seed: int,
    balanced: bool = False,
    table: np.ndarray | None = None,
) -> Iterator[dict[str, Any]]:
    """One epoch of shuffled batches (seeded); ``balanced`` oversamples the anomalous class
    to half of each epoch's draws (class-balanced sampling); ``table``: as
    :func:`with_table_vectors`."""
    rng = np.random.default_rng(seed)
    n = len(data)
    if balanced:
        pos = np.flatnonzero(data.label == 1)
        neg = np.flatnonzero(data.label == 0)
        if len(pos) and len(neg):
            order = np.concatenate([neg, rng.choice(pos, size=len(neg), replace=True)])
            rng.shuffle(order)
        else:
            order = rng.permutation(n)
    else:
        order = rng.permutation(n)
    for lo in range(0, len(order), batch_size):
        yield with_table_vectors(data.batch(order[lo : lo + batch_size]), table)


@dataclass(frozen=True)
class TemplateVectors:
    """Template id -> semantic vector, held as one matrix for batch lookups.

    ``rows``: template id -> row of ``matrix``; ``matrix``: (1 + k, D) float32, row 0 zeros
    (an id it lacks, and padding).  Build it with :meth:`of`.
    """

    rows: Mapping[str, int]
    matrix: np.ndarray

    @classmethod
    def of(cls, vectors: Mapping[str, Any]) -> TemplateVectors:
        """From template id -> (D,) vector; every vector must have the same length."""
        ids = sorted(vectors)
        rows = [np.asarray(vectors[t], dtype=np.float32) for t in ids]
        dim = rows[0].shape if rows else (0,)
        for tid, vec in zip(ids, rows, strict=True):
            if vec.ndim != 1 or vec.shape != dim:
                raise DataError(f"template {tid}: semantic vector of shape {vec.shape}, "
                                f"the others have {dim}")  # fmt: skip
        matrix = np.zeros((len(ids) + 1, dim[0]), dtype=np.float32)
        if rows:
            matrix[1:] = np.stack(rows)
        return cls({t: i + 1 for i, t in enumerate(ids)}, matrix)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def event_vectors(
    template_ids: Sequence[Sequence[str] | None],
    seq_len: int,
    vectors: TemplateVectors | Mapping[str, Any],
    dim: int,
) -> np.ndarray:
    """(n, seq_len, dim) float32: the semantic vector of each window's event templates, in
    event order (``gold.windows.template_ids``), zeros at padding and for an id ``vectors``
    lacks.  Unlike a lookup of the vocabulary index, a template unseen in training reads as
    its own vector, not as the unknown id's."""
    table = vectors if isinstance(vectors, TemplateVectors) else TemplateVectors.of(vectors)
    if table.rows and table.dim != dim:
        raise DataError(f"template vectors of length {table.dim}, the model takes {dim}")
    index = np.zeros((len(template_ids), seq_len), dtype=np.int64)
    get = table.rows.get
    for i, ids in enumerate(template_ids):
        if ids is not None and len(ids):
            found = [get(t, 0) for t in list(ids)[:seq_len]]
            index[i, : len(found)] = found
    if not table.rows:
        return np.zeros((len(template_ids), seq_len, dim), dtype=np.float32)
    return table.matrix[index]


def with_table_vectors(batch: dict[str, Any], table: np.ndarray | None) -> dict[str, Any]:
    """``batch`` with ``event_vectors`` looked up in ``table`` (V, D) by its ``sequence``,
    when it has none and ``table`` is given.  Training adds them before replacing ids by the
    unknown id, so a replaced event keeps its template's vector, as an unseen template does
    when scored with :func:`event_vectors`."""
    if table is None or batch.get("event_vectors") is not None or "sequence" not in batch:
        return batch
    return {**batch, "event_vectors": table[np.asarray(batch["sequence"])]}


def template_table(
    vocab: Mapping[str, int], texts: Mapping[str, str], vector: Callable[[str], Any]
) -> np.ndarray:
    """(V, D) float32 semantic vector per vocabulary index (rows 0 and 1 zero).

    ``vocab``: template id -> index (2 and up); ``texts``: template id -> template text;
    ``vector``: text -> (D,) vector, e.g. ``lambda t: stats.template_vector(t, size)``.
    """
    size = len(vocab) + 2
    rows = {
        idx: np.asarray(vector(texts.get(tid, "")), dtype=np.float32) for tid, idx in vocab.items()
    }
    dim = len(next(iter(rows.values()))) if rows else 0
    table = np.zeros((size, dim), dtype=np.float32)
    for idx, vec in rows.items():
        table[idx] = vec
    return table
