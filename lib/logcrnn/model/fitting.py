"""A supervised PyTorch training loop shared by the CRNN and the deep baselines.

:func:`fit_torch` trains any ``nn.Module`` given a loss function of a batch, with Adam, early
stopping on the validation loss and restoration of the best weights.  Distribution is a seam:
the loop talks to a :class:`Collective` (rank, size, mean all-reduce, broadcast, optimizer
wrapper).  :class:`LocalCollective` is the one-process stand-in; an adapter over
``horovod.torch`` (written outside ``model/``, which imports no Horovod) makes the same loop
data-parallel.  Every decision that ends an epoch loop (early stopping, the time budget) is
taken on all-reduced values so that all ranks stop after the same epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from logcrnn.errors import DataError, UsageError
from logcrnn.model.data import UNKNOWN, WindowArrays

log = logging.getLogger(__name__)

#: A loss of one batch of tensors: (model, batch) -> () tensor.
LossFn = Callable[[Any, dict[str, Tensor]], Tensor]
#: Scores of one batch of tensors: (model, batch) -> (b,) tensor, higher = more anomalous.
ScoreFn = Callable[[Any, dict[str, Tensor]], Tensor]


class Collective(Protocol):
    """What a distributed backend offers the training loop (Horovod's operations)."""

    def rank(self) -> int: ...

    def size(self) -> int: ...

    def allreduce_mean(self, value: float, name: str) -> float: ...

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module
    ) -> torch.optim.Optimizer: ...


class LocalCollective:
    """One process: rank 0 of 1, every operation the identity."""

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1

    def allreduce_mean(self, value: float, name: str) -> float:
        return value

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        return None

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module
    ) -> torch.optim.Optimizer:
        return optimizer


@dataclass(frozen=True)
class FitSettings:
    """Training loop settings.

    ``epochs``: at most this many; ``batch_size``: per worker; ``lr``: Adam's rate for one
    worker (multiplied by the number of workers); ``patience``: epochs without a lower
    validation loss before stopping; ``seed``: torch and batch-order seed; ``balanced``:
    class-balanced batch sampling (see :func:`logcrnn.model.data.iterate_batches`);
    ``weight_decay``: Adam's; ``max_seconds``: stop after the epoch that exceeds this wall time;
    ``threads``: torch intra-op threads while fitting and scoring (None: torch's setting).
    ``unknown_rate``: in every training batch, this share of the real template ids of the
    sequences (not padding) is replaced by the unknown id, afresh each epoch.  The vocabulary
    is built from the training windows, so without it the unknown id never occurs in
    training and its embedding stays at its random initialisation, while every template that
    first appears on a scored night maps to it.  ``unknown_template_rate``: in every
    training batch, each distinct template id of the batch is, with this probability,
    replaced by the unknown id in all its events (each event keeps its own vector); off (0)
    by default (``train.unknown_template_rate``; docs/RESULTS.md says why).  The
    CRNN's recurrence is thousands of small operations per batch: on a busy 2-core machine
    torch's default of one thread per core made a fit over 10x slower than ``threads=1``.
    """

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 3
    seed: int = 42
    balanced: bool = False
    weight_decay: float = 0.0
    max_seconds: float | None = None
    threads: int | None = None
    unknown_rate: float = 0.05
    unknown_template_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise UsageError("fit settings: epochs, batch_size and patience must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("fit settings: lr must be > 0 and weight_decay >= 0")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise UsageError("fit settings: max_seconds must be > 0")
        if self.threads is not None and self.threads < 1:
            raise UsageError("fit settings: threads must be >= 1")
        if not 0.0 <= self.unknown_rate < 0.5:
            raise UsageError("fit settings: unknown_rate must be in [0, 0.5)")
        if not 0.0 <= self.unknown_template_rate < 1.0:
            raise UsageError("fit settings: unknown_template_rate must be in [0, 1)")


@dataclass
class FitResult:
    """What :func:`fit_torch` did.

    ``best_epoch``: 0-based index (as passed to ``train_epochs``) of the weights kept;
    ``epochs_run``: epochs trained; ``history``: one dict per epoch (``epoch``, ``train_loss``,
    ``valid_loss``, ``valid_auc``, ``seconds``; None where not computed); ``seconds``: wall
    time; ``windows_per_s``: training windows per second, all workers together.
    """

    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    windows_per_s: float = 0.0


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: unchanged), then restore."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_for(prefer_gpu: bool = True) -> torch.device:
    """CUDA when asked for and available, else the CPU."""
    if prefer_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def with_unknowns(sequence: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``sequence`` with each real template id (not padding or already unknown) replaced by
    :data:`~logcrnn.model.data.UNKNOWN` with probability ``rate``; a new array."""
    seq = np.asarray(sequence)
    hit = (seq > UNKNOWN) & (rng.random(seq.shape) < rate)
    return np.where(hit, UNKNOWN, seq)


def with_unknown_templates(
    sequence: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """``sequence`` with each distinct real template id drawn with probability ``rate``
    replaced by :data:`~logcrnn.model.data.UNKNOWN` in every event that has it, as if the
    template had first appeared after training; a new array."""
    seq = np.asarray(sequence)
    ids = np.unique(seq[seq > UNKNOWN])
    gone = ids[rng.random(len(ids)) < rate]
    return np.where(np.isin(seq, gone), UNKNOWN, seq)


def to_tensors(batch: Mapping[str, Any], device: torch.device) -> dict[str, Tensor]:
    """A batch dict of numpy arrays -> tensors on ``device`` (floats as float32).

    Non-numeric arrays (e.g. object window ids) are left out.
    """
    out: dict[str, Tensor] = {}
    for key, value in batch.items():
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
        elif arr.dtype.kind not in "iub":
            continue
        out[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(device, non_blocking=True)
    return out


def logit_score(model: Any, batch: Mapping[str, Tensor]) -> Tensor:
    """Default score: ``sigmoid`` of the model's logit (CRNN-style call)."""
    out = model(batch["sequence"], batch["length"], batch["features"], batch.get("semantic"))
    logit = out.logit if hasattr(out, "logit") else out
    return torch.sigmoid(logit)


def _ordered_batches(data: WindowArrays, batch_size: int) -> Iterable[dict[str, Any]]:
    for lo in range(0, len(data), batch_size):
        yield data.batch(slice(lo, lo + batch_size))


def predict_torch(
    model: nn.Module,
    data: WindowArrays,
    batch_size: int = 256,
    score_fn: ScoreFn = logit_score,
    device: torch.device | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """(n,) float64 scores of ``data`` in its order, the model in eval mode, without grad.

    ``score_fn``: ``(model, batch of tensors) -> (b,)``; ``device``: default the model's;
    ``threads``: as :attr:`FitSettings.threads`.
    """
    dev = device if device is not None else next(model.parameters()).device
    model.eval()
    parts: list[np.ndarray] = []
    with torch_threads(threads), torch.no_grad():
        for batch in _ordered_batches(data, batch_size):
            scores = score_fn(model, to_tensors(batch, dev))
            parts.append(scores.detach().float().cpu().numpy().reshape(-1))
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts).astype(np.float64)


def _valid_metrics(
    model: nn.Module,
    loss_fn: LossFn,
    score_fn: ScoreFn | None,
    valid: WindowArrays,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float | None]:
    model.eval()
    total, count = 0.0, 0
    scores: list[np.ndarray] = []
    with torch.no_grad():
        for batch in _ordered_batches(valid, batch_size):
            tensors = to_tensors(batch, device)
            n = len(batch["label"])
            total += float(loss_fn(model, tensors)) * n
            count += n
            if score_fn is not None:
                scores.append(score_fn(model, tensors).float().cpu().numpy().reshape(-1))
    auc: float | None = None
    if scores:
        y = valid.label
        known = y >= 0
        s = np.concatenate(scores)
        if len(np.unique(y[known])) == 2 and np.isfinite(s[known]).all():
            auc = float(roc_auc_score(y[known], s[known]))
    return total / max(count, 1), auc


def fit_torch(
    model: nn.Module,
    loss_fn: LossFn,
    train_epochs: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
    valid: WindowArrays | None,
    settings: FitSettings,
    collective: Collective | None = None,
    device: torch.device | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    score_fn: ScoreFn | None = None,
) -> FitResult:
    """Train ``model`` in place; return the history.  The best weights are loaded at the end.

    Parameters
    ----------
    model
        Any module; moved to ``device`` (default :func:`device_for`).
    loss_fn
        ``(model, batch) -> ()`` loss, ``batch`` the dict of tensors of one batch (the
        :meth:`WindowArrays.batch` keys).  Also evaluated, without grad, on ``valid``.
    train_epochs
        ``epoch -> batches`` (dicts of numpy arrays) of this worker's share of that epoch,
        e.g. ``lambda e: iterate_batches(train, 64, seed + e)``.
    valid
        Validation windows; early stopping watches their mean loss.  None: no early stopping,
        the last epoch is kept.
    settings
        Epochs, batch size (for ``valid``), learning rate, patience, seed, weight decay, time.
    collective
        The distributed backend (default :class:`LocalCollective`).
    on_epoch
        Called with each epoch's history record (on every rank).
    score_fn
        ``(model, batch) -> (b,)`` scores; when given, the history records the validation
        ROC-AUC (None if ``valid`` has one class).
    """
    with torch_threads(settings.threads):
        return _fit(
            model, loss_fn, train_epochs, valid, settings, collective, device, on_epoch, score_fn
        )


def _fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_epochs: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
    valid: WindowArrays | None,
    settings: FitSettings,
    collective: Collective | None,
    device: torch.device | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    score_fn: ScoreFn | None,
) -> FitResult:
    coll = collective if collective is not None else LocalCollective()
    dev = device if device is not None else device_for()
    torch.manual_seed(settings.seed)
    model.to(dev)
    # Horovod: the learning rate scales with the number of workers.
    optimizer: torch.optim.Optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr * coll.size(), weight_decay=settings.weight_decay
    )
    # Horovod: gradients are averaged across workers at each step.
    optimizer = coll.wrap_optimizer(optimizer, model)
    # Horovod: every worker starts from rank 0's weights and optimizer state.
    coll.broadcast_model(model, optimizer)

    # each rank draws its own replacements (its own batches), reproducibly
    unknown_rng = np.random.default_rng([settings.seed, coll.rank()])
    history: list[dict[str, Any]] = []
    best_loss = float("inf")
    best_epoch = -1
    best_state: dict[str, Tensor] | None = None
    stale = 0
    windows = 0
    train_seconds = 0.0
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        epoch_start = time.perf_counter()
        total = torch.zeros((), device=dev)
        count = 0
        for batch in train_epochs(epoch):
            if settings.unknown_rate > 0 and "sequence" in batch:
                batch = {**batch, "sequence": with_unknowns(
                    batch["sequence"], settings.unknown_rate, unknown_rng)}  # fmt: skip
            if settings.unknown_template_rate > 0 and "sequence" in batch:
                batch = {**batch, "sequence": with_unknown_templates(
                    batch["sequence"], settings.unknown_template_rate, unknown_rng)}  # fmt: skip
            tensors = to_tensors(batch, dev)
            n = len(batch["label"]) if "label" in batch else len(next(iter(batch.values())))
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, tensors)
            loss.backward()
            optimizer.step()
            total += loss.detach() * n
            count += n
        train_seconds += time.perf_counter() - epoch_start
        if count == 0:
            raise DataError(f"training: epoch {epoch} produced no batches")
        windows += count
        # Horovod: losses are averaged over workers so every rank sees the same numbers.
        train_loss = coll.allreduce_mean(float(total) / count, "train_loss")
        if not np.isfinite(train_loss):
            raise DataError(
                f"training diverged: loss {train_loss} at epoch {epoch}; check the inputs "
                "for extreme values or lower the learning rate"
            )
        valid_loss: float | None = None
        valid_auc: float | None = None
        if valid is not None and len(valid) > 0:
            local_loss, valid_auc = _valid_metrics(
                model, loss_fn, score_fn, valid, settings.batch_size, dev
            )
            valid_loss = coll.allreduce_mean(local_loss, "valid_loss")
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_auc": valid_auc,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        log.debug("epoch %d: %s", epoch, record)
        if on_epoch is not None:
            on_epoch(record)

        if valid_loss is None:
            best_epoch = epoch
        elif valid_loss < best_loss:
            best_loss, best_epoch, stale = valid_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= settings.patience:
                log.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                break
        if settings.max_seconds is not None:
            # Horovod: stop on the mean elapsed time so every rank stops together.
            elapsed = coll.allreduce_mean(time.perf_counter() - start, "elapsed_s")
            if elapsed > settings.max_seconds:
                log.info("time budget of %.0f s reached after epoch %d", elapsed, epoch)
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    elif best_epoch < 0:
        # every validation loss was NaN: keep the last weights
        best_epoch = len(history) - 1
    seconds = time.perf_counter() - start
    total_windows = coll.allreduce_mean(float(windows), "windows") * coll.size()
    return FitResult(
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        seconds=seconds,
        windows_per_s=total_windows / train_seconds if train_seconds > 0 else 0.0,
    )
