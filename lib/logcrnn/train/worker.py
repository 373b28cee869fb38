"""The training worker: one per rank, any engine (it receives the collective's factory).

Each rank reads its shard of ``gold.windows``' Parquet files with Petastorm (row groups
``rank, rank + size, ...``), keeps the labelled windows outside the validation slice, and
trains the CRNN with :func:`logcrnn.model.fitting.fit_torch` on fixed-size epochs: every
rank runs ``steps_per_epoch`` batches (its shard reshuffled and cycled as needed), so the
ranks' gradient all-reduces always pair up even when the shards differ in size.  The
validation slice, the class weights and the step count come in the spec, the same on every
rank, so early stopping takes the same decision everywhere.

The spec is a plain dict built by :func:`logcrnn.train.job.train` (see :func:`train_worker`).
No Spark here: the worker may run in a Spark task, under torchrun or in the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from logcrnn.errors import DataError
from logcrnn.model.crnn import CRNN, CRNNConfig, crnn_loss, crnn_output, crnn_score
from logcrnn.model.data import WindowArrays, with_table_vectors
from logcrnn.model.fitting import Collective, FitSettings, device_for, fit_torch

log = logging.getLogger(__name__)

#: The gold.windows columns a worker reads.
COLUMNS = ("window_id", "length", "sequence", "counts", "semantic", "features_std", "label",
           "start_ts")  # fmt: skip
#: Fault injection for tests: the rank named here raises after reading its shard.
FAIL_RANK_ENV = "LOGCRNN_TEST_FAIL_RANK"
#: Window ids hash into this many buckets; the validation slice is the buckets below a cut.
BUCKETS = 10_000


def id_hash(window_ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """(n,) int64 CRC-32 of each id's UTF-8 bytes (Spark's ``crc32`` gives the same)."""
    return np.fromiter(
        (zlib.crc32(str(w).encode("utf-8")) for w in window_ids), dtype=np.int64,
        count=len(window_ids),
    )  # fmt: skip


def in_validation(window_ids: Sequence[str] | np.ndarray, cut: int) -> np.ndarray:
    """(n,) bool: the windows of the validation slice (``crc32(id) % BUCKETS < cut``)."""
    return (id_hash(window_ids) % BUCKETS) < cut


def arrays_from_columns(
    columns: Mapping[str, np.ndarray],
    feature_index: Sequence[int],
    vocab_size: int,
    seq_len: int,
) -> WindowArrays:
    """One batch of ``gold.windows`` columns as numpy arrays (Petastorm's batch) ->
    :class:`WindowArrays`.

    List columns arrive as (n, k) matrices; a null label as NaN (-> -1).  Windows built with
    another vocabulary or sequence length are a :class:`DataError`.
    """
    ids = np.asarray(columns["window_id"]).astype(object)
    n = len(ids)
    sequence = np.asarray(columns["sequence"]).reshape(n, -1)
    counts = np.asarray(columns["counts"]).reshape(n, -1)
    if n and sequence.shape[1] != seq_len:
        raise DataError(
            f"gold.windows: sequences of length {sequence.shape[1]}, the model takes {seq_len}"
            + (": windows built without feature statistics" if sequence.shape[1] == 0 else "")
        )
    if n and counts.shape[1] != vocab_size:
        raise DataError(
            f"gold.windows: count vectors of {counts.shape[1]} templates, the vocabulary has "
            f"{vocab_size}: rebuild the windows with the current feature statistics"
        )
    std = np.asarray(columns["features_std"]).reshape(n, -1)
    pick = list(feature_index)
    if n and pick and std.shape[1] <= max(pick):
        raise DataError(f"gold.windows: {std.shape[1]} standardised features, index {max(pick)}")
    label = np.asarray(columns["label"], dtype=np.float64)
    start = np.asarray(columns["start_ts"])
    if start.dtype.kind == "M":
        start_us = start.astype("datetime64[us]").astype(np.int64)
        start_us = np.where(np.isnat(start), np.arange(n), start_us)
    else:
        start_us = np.arange(n, dtype=np.int64)
    return WindowArrays(
        sequence=sequence.astype(np.int64),
        length=np.asarray(columns["length"]).astype(np.int64),
        counts=counts.astype(np.float32),
        semantic=np.asarray(columns["semantic"]).reshape(n, -1).astype(np.float32),
        features=std[:, pick].astype(np.float32) if pick else np.zeros((n, 0), np.float32),
        label=np.where(np.isnan(label), -1, label).astype(np.int64),
        start_us=start_us,
        window_id=ids,
    )


def concat(parts: Sequence[WindowArrays]) -> WindowArrays:
    """Row-wise concatenation (an empty list gives nothing to train on: DataError)."""
    if not parts:
        raise DataError("no windows read")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(WindowArrays):
        values = [getattr(p, f.name) for p in parts]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise DataError(f"window arrays: {f.name} missing in some parts")
            out[f.name] = None
        else:
            out[f.name] = np.concatenate(values)
    return WindowArrays(**out)


def read_shard(spec: Mapping[str, Any], rank: int, size: int) -> WindowArrays:
    """This rank's labelled training windows (validation slice excluded) via Petastorm.

    Row groups are dealt to ranks by Petastorm (``cur_shard=rank``); when the files hold
    fewer row groups than there are ranks, every rank reads them all and keeps the windows
    whose id hashes to it, so no rank is left empty.
    """
    from petastorm import make_batch_reader
    from petastorm.errors import NoDataAvailableError

    def reader(shard: int | None, count: int | None) -> Any:
        return make_batch_reader(
            list(spec["files"]),
            schema_fields=list(COLUMNS),
            num_epochs=1,
            cur_shard=shard,
            shard_count=count,
            shuffle_row_groups=False,
            reader_pool_type="thread",
            workers_count=2,
        )

    parts = []
    by_hash = False
    # petastorm prints "Cache cleanup complete." on stdout, where a --json line goes
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", FutureWarning)  # petastorm's legacy pyarrow calls
        warnings.filterwarnings("ignore", "schema_fields behavior has changed", UserWarning)
        if size > 1:
            try:
                source = reader(rank, size)  # Horovod: each rank reads its row groups
            except NoDataAvailableError:
                log.info("fewer row groups than %d workers: sharding windows by id hash", size)
                source, by_hash = reader(None, None), True
        else:
            source = reader(None, None)
        with source:
            for batch in source:
                arrays = arrays_from_columns(
                    batch._asdict(), spec["feature_index"], spec["vocab_size"], spec["seq_len"]
                )
                hashes = id_hash(arrays.window_id)
                keep = (arrays.label >= 0) & (hashes % BUCKETS >= spec["valid_cut"])
                if by_hash:
                    keep &= (hashes // BUCKETS) % size == rank  # Horovod: this rank's windows
                if keep.any():
                    parts.append(arrays.take(keep))
    if not parts:
        raise DataError(f"rank {rank} of {size}: its shard of gold.windows holds no training "
                        "windows")  # fmt: skip
    return concat(parts)


def fixed_batches(
    data: WindowArrays, batch_size: int, steps: int, seed: int, table: np.ndarray | None = None
) -> Iterator[dict[str, Any]]:
    """Exactly ``steps`` batches of ``batch_size``: seeded permutations of ``data``, one
    after another, cut into batches (a small shard is cycled, a large one sampled);
    ``table``: as :func:`~logcrnn.model.data.with_table_vectors`."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    rounds = max(1, math.ceil(need / len(data)))
    order = np.concatenate([rng.permutation(len(data)) for _ in range(rounds)])[:need]
    for lo in range(0, need, batch_size):
        yield with_table_vectors(data.batch(order[lo : lo + batch_size]), table)


def params_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state_dict's names and raw bytes (equal digests = identical weights)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _checkpointer(model: CRNN, path: str) -> Callable[[dict[str, Any]], None]:
    def save(record: dict[str, Any]) -> None:
        tmp = f"{path}.tmp"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, path)
        log.info("epoch %d: train loss %.4f, valid loss %s; checkpoint %s", record["epoch"],
                 record["train_loss"], record["valid_loss"], path)  # fmt: skip

    return save


def train_worker(
    spec: dict[str, Any], collective_factory: Callable[[], Collective]
) -> dict[str, Any]:
    """Train on this rank's shard; return this rank's figures (rank 0: also the weights).

    ``spec`` keys: ``files`` (Parquet URIs of gold.windows), ``feature_index``,
    ``vocab_size``, ``seq_len``, ``valid_cut`` (hash buckets of the validation slice),
    ``valid`` (the validation :class:`WindowArrays`), ``crnn`` (a :class:`CRNNConfig` dict),
    ``template_vectors`` (V, D), ``class_weights`` ``(pi_0, pi_1)``, ``steps_per_epoch``,
    ``fit`` (:class:`FitSettings` fields), ``threads`` (0: cores / local workers),
    ``checkpoint`` (rank 0 saves the weights there after each epoch; None: no checkpoint).
    For fault-injection tests, the rank named by the environment variable
    :data:`FAIL_RANK_ENV` raises after reading its shard.

    Returns ``rank``, ``size``, ``train_windows``, ``steps_per_epoch``, ``threads``,
    ``device``, ``params_sha256``; rank 0 also ``state`` (name -> numpy array) and ``fit``
    (the :class:`FitResult` as a dict).
    """
    collective = collective_factory()  # Horovod: first, so a failing rank never stalls init
    rank, size = collective.rank(), collective.size()
    local = getattr(collective, "local_size", lambda: 1)()
    threads = int(spec.get("threads") or max(1, (os.cpu_count() or 1) // max(1, local)))
    torch.set_num_threads(threads)
    device = device_for()
    train = read_shard(spec, rank, size)
    if os.environ.get(FAIL_RANK_ENV) == str(rank):
        raise RuntimeError(f"injected failure on rank {rank} ({FAIL_RANK_ENV})")
    settings = FitSettings(**spec["fit"])
    torch.manual_seed(settings.seed)
    model = CRNN(CRNNConfig.from_dict(spec["crnn"]), spec["template_vectors"])
    weights = (float(spec["class_weights"][0]), float(spec["class_weights"][1]))
    table = model.training_table()

    def loss_fn(m: Any, batch: dict[str, Tensor]) -> Tensor:
        out = crnn_output(m, batch)
        return crnn_loss(m, out, batch["label"], weights, length=batch["length"])

    steps = int(spec["steps_per_epoch"])

    def epochs(epoch: int) -> Iterator[dict[str, Any]]:
        # Horovod: a different order per rank, the same number of steps on every rank
        seed = settings.seed + 7919 * rank + epoch
        return fixed_batches(train, settings.batch_size, steps, seed, table)

    on_epoch = None
    if rank == 0 and spec.get("checkpoint"):  # Horovod: rank 0 alone writes the checkpoint
        on_epoch = _checkpointer(model, str(spec["checkpoint"]))
    result = fit_torch(model, loss_fn, epochs, spec["valid"], settings, collective, device,
                       on_epoch=on_epoch, score_fn=crnn_score)  # fmt: skip
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {
        "rank": rank,
        "size": size,
        "train_windows": len(train),
        "steps_per_epoch": steps,
        "threads": threads,
        "device": str(device),
        "params_sha256": params_digest(state),
    }
    if rank == 0:  # Horovod: one copy of the weights goes back to the driver
        out["state"] = {k: v.numpy() for k, v in state.items()}
        out["fit"] = dataclasses.asdict(result)
    return out
