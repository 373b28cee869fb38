"""The CRNN and its baselines behind one :class:`Detector` interface.

Every detector follows scikit-learn's contract: ``__init__`` stores parameters, ``fit(train,
valid)`` learns (learned state ends in ``_``), ``score(data)`` returns (n,) float64 scores,
higher = more anomalous.  All are deterministic under their ``seed``.

Unsupervised detectors (``supervised = False``) need no labels.  All but ``iforest`` learn
normal behaviour from the training windows *not labelled anomalous* (label 0 or -1), so the
anomalies a labelled training period does contain are not learnt as normal (semi-supervised,
as DeepLog; loglizer's PCA uses every window); ``iforest`` is fitted on every training window,
as isolation requires.  Supervised ones train on the labelled windows (0/1) and need both
classes.  Only the deep detectors use the validation windows, for early stopping (the
unsupervised ones on its normal windows); thresholds are chosen by the caller
(:mod:`logcrnn.model.metrics`).

========  ===========  ====================================================================
name      supervised   what
========  ===========  ====================================================================
pca       no           loglizer's PCA: TF-IDF weighted counts, centred; principal subspace
                       keeping 95 % of the variance; score = SPE (squared distance to it)
iforest   no           scikit-learn IsolationForest on counts + numeric features, fitted on
                       all training windows; score = minus ``score_samples``
ae        no           dense autoencoder on standardised log1p(counts) + numeric features,
                       trained on normal windows; score = mean squared reconstruction error
profile   no           per-template count profile (mean, std) of normal windows (plus the
                       numeric features); score = sum over columns of ``|z|``, a diagonal
                       Mahalanobis-like L1 distance, with ``std`` smoothed by ``1 / n``
lstm      no           DeepLog: LSTM predicting each next template from its history,
                       trained on normal windows; score = the window's largest negative
                       log-likelihood of a true next template (see :class:`DeepLogDetector`)
lr        yes          LogisticRegression (balanced) on standardised log1p(counts) +
                       semantic + numeric features
rf        yes          RandomForestClassifier (balanced) on counts + semantic + features
cnn       yes          Lu et al. (2018): template embeddings, 1-D convolutions of widths 3,
                       4, 5, max-pooling over the valid positions, a linear logit
crnn      yes          :class:`logcrnn.model.crnn.CRNN` trained with :func:`fit_torch`
========  ===========  ====================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from logcrnn.errors import DataError, UsageError
from logcrnn.model.crnn import (
    CRNN,
    CRNNConfig,
    class_weights,
    crnn_loss,
    crnn_output,
    crnn_score,
)
from logcrnn.model.data import PAD, WindowArrays, iterate_batches
from logcrnn.model.fitting import (
    Collective,
    FitResult,
    FitSettings,
    ScoreFn,
    device_for,
    fit_torch,
    predict_torch,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Detector(Protocol):
    """What every detector offers; ``score`` is (n,) float, higher = more anomalous."""

    name: str
    supervised: bool

    def fit(self, train: WindowArrays, valid: WindowArrays) -> Detector: ...

    def score(self, data: WindowArrays) -> np.ndarray: ...


# --- shared helpers ---------------------------------------------------------------------------


def _checked(data: WindowArrays, what: str) -> WindowArrays:
    data.check(what)
    if len(data) and (data.sequence.min() < 0 or data.sequence.max() >= data.vocab_size):
        raise DataError(f"{what}: vocabulary index outside [0, {data.vocab_size})")
    return data


def _normal(data: WindowArrays, what: str) -> WindowArrays:
    """The windows not labelled anomalous (label 0 or -1)."""
    out = data.take(data.label != 1)
    if len(out) == 0:
        raise DataError(f"{what}: no windows that are not labelled anomalous")
    return out


def _labelled(data: WindowArrays, what: str, both: bool = True) -> WindowArrays:
    out = data.take(data.label >= 0)
    if both and not ((out.label == 0).any() and (out.label == 1).any()):
        raise DataError(
            f"{what}: a supervised detector needs normal and anomalous labelled windows, got "
            f"{int((out.label == 0).sum())} normal and {int((out.label == 1).sum())} anomalous"
        )
    return out


def _matrix(data: WindowArrays, *parts: str) -> np.ndarray:
    """(n, sum of widths) float64 of the named parts: counts, log_counts, semantic, features."""
    cols = []
    for part in parts:
        if part == "log_counts":
            cols.append(np.log1p(np.maximum(data.counts, 0.0)))
        else:
            cols.append(getattr(data, part))
    return np.hstack([np.asarray(c, dtype=np.float64).reshape(len(data), -1) for c in cols])


def _fitted(value: _T | None, name: str) -> _T:
    """A learned attribute, or a :class:`UsageError` when the detector is not fitted."""
    if value is None:
        raise UsageError(f"detector {name}: score() before fit()")
    return value


def _valid_mask(length: Tensor, seq_len: int) -> Tensor:
    """(B,) lengths -> (B, L) bool, True at positions < max(min(length, L), 1)."""
    eff = length.clamp(min=1, max=seq_len)
    return torch.arange(seq_len, device=length.device)[None, :] < eff[:, None]


# --- classic detectors ------------------------------------------------------------------------


class PCADetector:
    """loglizer's PCA detector (Xu et al. 2009): SPE in the residual subspace.

    Counts are TF-IDF weighted (``idf = log((N + 1) / (df + 1)) + 1`` over the training windows,
    smoothed so templates absent from training get the largest weight) and centred; the
    principal components keep ``variance`` of the variance; the score is the squared norm of
    the projection onto the residual subspace.
    """

    name = "pca"
    supervised = False

    def __init__(self, variance: float = 0.95, seed: int = 42) -> None:
        self.variance = variance
        self.seed = seed
        self.idf_: np.ndarray | None = None
        self.pca_: PCA | None = None

    def fit(self, train: WindowArrays, valid: WindowArrays) -> PCADetector:
        normal = _normal(_checked(train, "pca: train"), "pca")
        counts = _matrix(normal, "counts")
        df = (counts > 0).sum(axis=0)
        self.idf_ = np.log((len(counts) + 1.0) / (df + 1.0)) + 1.0
        x = counts * self.idf_
        n_comp: float | int = self.variance
        if min(x.shape) < 2 or not np.any(x.var(axis=0) > 0):
            n_comp = 1  # degenerate training data: one component, the rest is residual
        self.pca_ = PCA(n_components=n_comp, svd_solver="full", random_state=self.seed).fit(x)
        log.debug("pca: %d components", self.pca_.n_components_)
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        pca: Any = _fitted(self.pca_, self.name)
        x = _matrix(_checked(data, "pca: score"), "counts") * _fitted(self.idf_, self.name)
        if len(x) == 0:
            return np.zeros(0)
        residual = x - pca.inverse_transform(pca.transform(x))
        return np.asarray((residual**2).sum(axis=1), dtype=np.float64)


class IsolationForestDetector:
    """scikit-learn's IsolationForest on counts + numeric features; score = ``-score_samples``.

    Unlike the other unsupervised detectors it is fitted on *all* training windows, labels
    ignored, as the algorithm intends: isolation needs the outliers in the sample, and on
    normal windows only a template absent from training is a constant column no tree splits on.
    """

    name = "iforest"
    supervised = False

    def __init__(self, n_estimators: int = 200, seed: int = 42) -> None:
        self.n_estimators = n_estimators
        self.seed = seed
        self.forest_: IsolationForest | None = None

    def fit(self, train: WindowArrays, valid: WindowArrays) -> IsolationForestDetector:
        data = _checked(train, "iforest: train")
        if len(data) == 0:
            raise DataError("iforest: no training windows")
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self.forest_.fit(_matrix(data, "counts", "features"))
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        forest: Any = _fitted(self.forest_, self.name)
        if len(data) == 0:
            return np.zeros(0)
        x = _matrix(_checked(data, "iforest: score"), "counts", "features")
        return np.asarray(-forest.score_samples(x), dtype=np.float64)


class ProfileDetector:
    """Statistical profiling: per-column mean and std of normal training windows.

    Columns are the counts of every vocabulary index and the numeric features; the score is
    ``sum_j |x_j - mean_j| / sqrt(std_j^2 + 1 / n)`` with ``n`` the normal training windows, so
    a template never seen in training weighs like ``sqrt(n)`` per occurrence (its rarity)
    instead of dividing by zero.
    """

    name = "profile"
    supervised = False

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed  # unused: the profile is deterministic
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, train: WindowArrays, valid: WindowArrays) -> ProfileDetector:
        normal = _normal(_checked(train, "profile: train"), "profile")
        x = _matrix(normal, "counts", "features")
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.sqrt(x.var(axis=0) + 1.0 / len(x))
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        mean, scale = _fitted(self.mean_, self.name), _fitted(self.scale_, self.name)
        x = _matrix(_checked(data, "profile: score"), "counts", "features")
        return np.asarray(np.abs((x - mean) / scale).sum(axis=1), dtype=np.float64)


class _SklearnClassifier:
    """Shared plumbing of the supervised scikit-learn detectors: fit on labelled train windows,
    score with the positive-class probability."""

    name = "sklearn"
    supervised = True
    blocks: tuple[str, ...] = ()

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self.model_: Any = None

    def _estimator(self) -> Any:
        raise NotImplementedError

    def fit(self, train: WindowArrays, valid: WindowArrays) -> _SklearnClassifier:
        data = _labelled(_checked(train, f"{self.name}: train"), self.name)
        self.model_ = self._estimator()
        self.model_.fit(_matrix(data, *self.blocks), data.label)
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        model: Any = _fitted(self.model_, self.name)
        if len(data) == 0:
            return np.zeros(0)
        x = _matrix(_checked(data, f"{self.name}: score"), *self.blocks)
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


class LogisticRegressionDetector(_SklearnClassifier):
    """Balanced LogisticRegression on standardised log1p(counts) + semantic + features."""

    name = "lr"
    blocks = ("log_counts", "semantic", "features")

    def __init__(self, c: float = 1.0, seed: int = 42) -> None:
        super().__init__(seed)
        self.c = c

    def _estimator(self) -> Any:
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=self.c, class_weight="balanced", max_iter=2000, random_state=self.seed
            ),
        )


class RandomForestDetector(_SklearnClassifier):
    """Balanced RandomForestClassifier on counts + semantic + features."""

    name = "rf"
    blocks = ("counts", "semantic", "features")

    def __init__(self, n_estimators: int = 200, seed: int = 42, n_jobs: int | None = None):
        super().__init__(seed)
        self.n_estimators = n_estimators
        self.n_jobs = n_jobs

    def _estimator(self) -> Any:
        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            class_weight="balanced",
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )


# --- deep detectors ---------------------------------------------------------------------------


class _TorchDetector:
    """Shared plumbing of the PyTorch detectors: seeding, fitting, scoring."""

    name = "torch"
    supervised = False

    def __init__(
        self,
        seed: int = 42,
        settings: FitSettings | None = None,
        device: torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        self.seed = seed
        self.settings = settings if settings is not None else FitSettings(seed=seed)
        self.device = device
        self.collective = collective
        self.model_: nn.Module | None = None
        self.result_: FitResult | None = None

    def _fit_model(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, dict[str, Tensor]], Tensor],
        train: WindowArrays,
        valid: WindowArrays | None,
        score_fn: ScoreFn | None,
        balanced: bool = False,
        table: np.ndarray | None = None,
    ) -> None:
        settings = self.settings
        dev = self.device if self.device is not None else device_for()
        self.result_ = fit_torch(
            model,
            loss_fn,
            lambda epoch: iterate_batches(
                train, settings.batch_size, settings.seed + epoch, balanced=balanced, table=table
            ),
            valid if valid is not None and len(valid) else None,
            settings,
            collective=self.collective,
            device=dev,
            score_fn=score_fn,
        )
        self.model_ = model
        log.info(
            "%s: best epoch %d of %d, %.1f s",
            self.name,
            self.result_.best_epoch,
            self.result_.epochs_run,
            self.result_.seconds,
        )

    def _predict(self, data: WindowArrays, score_fn: ScoreFn) -> np.ndarray:
        model = _fitted(self.model_, self.name)
        _checked(data, f"{self.name}: score")
        return predict_torch(
            model, data, max(self.settings.batch_size, 256), score_fn, threads=self.settings.threads
        )


class _AutoEncoder(nn.Module):
    """Dense autoencoder of standardised ``[log1p(counts), features]``."""

    mean: Tensor
    scale: Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray, hidden: int, code: int) -> None:
        super().__init__()
        dim = len(mean)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU()
        )
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, counts: Tensor, features: Tensor) -> Tensor:
        """(B, V) float32 counts, (B, F) float32 -> (B,) mean squared reconstruction error."""
        x = torch.cat([torch.log1p(counts.clamp(min=0)), features], dim=1)
        x = (x - self.mean) / self.scale
        return (self.decoder(self.encoder(x)) - x).pow(2).mean(dim=1)


def _ae_loss(model: Any, batch: dict[str, Tensor]) -> Tensor:
    return model(batch["counts"], batch["features"]).mean()


def _ae_score(model: Any, batch: dict[str, Tensor]) -> Tensor:
    return model(batch["counts"], batch["features"])


class AutoEncoderDetector(_TorchDetector):
    """Autoencoder (seed 001) trained on normal windows; score = reconstruction error.

    Inputs are standardised with the normal training windows' mean and standard deviation,
    the latter floored at ``min_scale`` so a template seen in a handful of training windows
    does not dominate every error (an unseen one still stands out by ``log(2) / min_scale``).
    Early stopping watches the error on the normal validation windows.
    """

    name = "ae"
    supervised = False

    def __init__(
        self,
        hidden: int = 64,
        code: int = 16,
        min_scale: float = 0.1,
        seed: int = 42,
        settings: FitSettings | None = None,
        device: torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        super().__init__(seed, settings, device, collective)
        self.hidden = hidden
        self.code = code
        self.min_scale = min_scale

    def fit(self, train: WindowArrays, valid: WindowArrays) -> AutoEncoderDetector:
        normal = _normal(_checked(train, "ae: train"), "ae")
        x = _matrix(normal, "log_counts", "features")
        torch.manual_seed(self.seed)
        model = _AutoEncoder(
            x.mean(axis=0), np.maximum(x.std(axis=0), self.min_scale), self.hidden, self.code
        )
        valid_normal = _checked(valid, "ae: valid").take(valid.label == 0)
        self._fit_model(model, _ae_loss, normal, valid_normal, None)
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        return self._predict(data, _ae_score)


class _NextEventLSTM(nn.Module):
    """DeepLog's model: an LSTM over the template history predicting the next template."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        # index vocab_size is the start-of-window token, so the first event is predicted too
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def log_probs(self, sequence: Tensor) -> Tensor:
        """(B, L) int64 -> (B, L, V) float32 log-probabilities of the event at each position
        given the events before it."""
        start = sequence.new_full((sequence.shape[0], 1), self.vocab_size)
        inputs = torch.cat([start, sequence[:, :-1]], dim=1)
        hidden, _ = self.lstm(self.embedding(inputs))
        return torch.log_softmax(self.out(hidden), dim=-1)

    def forward(self, sequence: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) int64, (B,) int64 -> ((B, L) NLL of each true event given its history, 0 on
        padding; (B, L) bool valid positions)."""
        mask = _valid_mask(length, sequence.shape[1])
        logp = self.log_probs(sequence)  # (B, L, V)
        nll = -logp.gather(2, sequence.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return nll * mask.to(nll.dtype), mask


def _lstm_loss(model: Any, batch: dict[str, Tensor]) -> Tensor:
    nll, mask = model(batch["sequence"], batch["length"])
    return nll.sum() / mask.sum().clamp(min=1)


class DeepLogDetector(_TorchDetector):
    """DeepLog (Du et al. 2017): next-template LSTM trained on normal windows.

    The model reads the window's whole prefix (DeepLog uses the last ``h`` events; an LSTM's
    state is the same history without a cut), starting from a start token so every event is
    predicted.  DeepLog flags a window when some true next template is outside the top-``g``
    predictions; the continuous score used here is the same rule before thresholding,
    ``reduce="max"``: the largest negative log-likelihood of a true next template in the window
    (one unexpected event is enough, however long the window).  ``reduce="mean"`` gives the
    mean NLL, ``reduce="topg"`` the fraction of positions outside the top ``g``.
    """

    name = "lstm"
    supervised = False

    def __init__(
        self,
        embed_dim: int = 16,
        hidden: int = 64,
        layers: int = 2,
        reduce: str = "max",
        g: int = 9,
        seed: int = 42,
        settings: FitSettings | None = None,
        device: torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        super().__init__(seed, settings, device, collective)
        if reduce not in ("max", "mean", "topg"):
            raise UsageError(f"lstm: reduce must be max, mean or topg, got {reduce!r}")
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.layers = layers
        self.reduce = reduce
        self.g = g

    def fit(self, train: WindowArrays, valid: WindowArrays) -> DeepLogDetector:
        normal = _normal(_checked(train, "lstm: train"), "lstm")
        torch.manual_seed(self.seed)
        model = _NextEventLSTM(normal.vocab_size, self.embed_dim, self.hidden, self.layers)
        valid_normal = _checked(valid, "lstm: valid").take(valid.label == 0)
        self._fit_model(model, _lstm_loss, normal, valid_normal, None)
        return self

    def _window_score(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        nll, mask = model(batch["sequence"], batch["length"])
        if self.reduce == "max":
            return nll.max(dim=1).values
        if self.reduce == "mean":
            return nll.sum(1) / mask.sum(1).clamp(min=1)
        # outside the top g  <=>  less likely than the g-th likeliest template
        g = min(self.g, model.vocab_size)
        nll_all = -model.log_probs(batch["sequence"])  # (B, L, V)
        kth = nll_all.kthvalue(g, dim=-1).values  # (B, L)
        miss = (nll > kth + 1e-6) & mask
        return miss.sum(1).to(nll.dtype) / mask.sum(1).clamp(min=1).to(nll.dtype)

    def score(self, data: WindowArrays) -> np.ndarray:
        return self._predict(data, self._window_score)


class _SeqCNN(nn.Module):
    """Lu et al. (2018): template embeddings -> parallel 1-D convolutions -> max-pool -> logit."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        channels: int,
        kernels: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.kernels = kernels
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k) for k in kernels)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels * len(kernels), 1)

    def forward(self, sequence: Tensor, length: Tensor) -> Tensor:
        """(B, L) int64, (B,) int64 -> (B,) float32 logits."""
        mask = _valid_mask(length, sequence.shape[1])
        x = self.embedding(sequence.masked_fill(~mask, PAD)).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv, k in zip(self.convs, self.kernels, strict=True):
            h = F.relu(conv(F.pad(x, ((k - 1) // 2, k // 2))))  # (B, C, L)
            pooled.append(h.masked_fill(~mask[:, None, :], float("-inf")).max(dim=2).values)
        return self.out(self.dropout(torch.cat(pooled, dim=1))).squeeze(-1)


class CNNDetector(_TorchDetector):
    """Lu et al. (2018) CNN over template sequences, class-weighted BCE; score = probability."""

    name = "cnn"
    supervised = True

    def __init__(
        self,
        embed_dim: int = 32,
        channels: int = 32,
        kernels: tuple[int, ...] = (3, 4, 5),
        dropout: float = 0.2,
        seed: int = 42,
        settings: FitSettings | None = None,
        device: torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        super().__init__(seed, settings, device, collective)
        self.embed_dim = embed_dim
        self.channels = channels
        self.kernels = tuple(kernels)
        self.dropout = dropout

    def fit(self, train: WindowArrays, valid: WindowArrays) -> CNNDetector:
        data = _labelled(_checked(train, "cnn: train"), "cnn")
        weights = (1.0, 1.0) if self.settings.balanced else class_weights(data.label)
        torch.manual_seed(self.seed)
        model = _SeqCNN(data.vocab_size, self.embed_dim, self.channels, self.kernels, self.dropout)

        def loss_fn(m: Any, batch: dict[str, Tensor]) -> Tensor:
            logit = m(batch["sequence"], batch["length"])
            y = batch["label"].to(logit.dtype)
            w = torch.where(y > 0.5, weights[1], weights[0]).to(logit.dtype)
            return F.binary_cross_entropy_with_logits(logit, y, weight=w)

        valid_l = _labelled(_checked(valid, "cnn: valid"), "cnn", both=False)
        self._fit_model(model, loss_fn, data, valid_l, _cnn_score, self.settings.balanced)
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        return self._predict(data, _cnn_score)


def _cnn_score(model: Any, batch: dict[str, Tensor]) -> Tensor:
    return torch.sigmoid(model(batch["sequence"], batch["length"]))


class CRNNDetector(_TorchDetector):
    """The CRNN (:mod:`logcrnn.model.crnn`) trained with :func:`fit_torch`.

    ``template_vectors``: (vocab_size, sem_dim) table of the training vocabulary (None: no
    semantic input); ``config``: overrides of :class:`CRNNConfig`'s defaults (the sizes taken
    from the data are set by :meth:`fit`).  The class weights ``(pi_0, pi_1)`` come from the
    labelled training windows, or are ``(1, 1)`` when ``settings.balanced`` already balances
    the batches.  Learned: ``model_`` (a :class:`CRNN`), ``config_``, ``class_weights_``,
    ``result_``.
    """

    name = "crnn"
    supervised = True

    def __init__(
        self,
        template_vectors: np.ndarray | None = None,
        config: dict[str, Any] | None = None,
        seed: int = 42,
        settings: FitSettings | None = None,
        device: torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        super().__init__(seed, settings, device, collective)
        self.template_vectors = template_vectors
        self.config = dict(config or {})
        self.config_: CRNNConfig | None = None
        self.class_weights_: tuple[float, float] | None = None

    def fit(self, train: WindowArrays, valid: WindowArrays) -> CRNNDetector:
        data = _labelled(_checked(train, "crnn: train"), "crnn")
        sem_dim = 0 if self.template_vectors is None else int(np.shape(self.template_vectors)[1])
        self.config_ = CRNNConfig.from_dict(
            {
                **self.config,
                "vocab_size": data.vocab_size,
                "seq_len": data.seq_len,
                "n_features": data.n_features,
                "sem_dim": sem_dim,
            }
        )
        weights = (1.0, 1.0) if self.settings.balanced else class_weights(data.label)
        self.class_weights_ = weights
        torch.manual_seed(self.seed)
        model = CRNN(self.config_, self.template_vectors)

        def loss_fn(m: Any, batch: dict[str, Tensor]) -> Tensor:
            out = crnn_output(m, batch)
            return crnn_loss(m, out, batch["label"], weights, length=batch["length"])

        valid_l = _labelled(_checked(valid, "crnn: valid"), "crnn", both=False)
        self._fit_model(
            model,
            loss_fn,
            data,
            valid_l,
            crnn_score,
            self.settings.balanced,
            table=model.training_table(),
        )
        return self

    def score(self, data: WindowArrays) -> np.ndarray:
        return self._predict(data, crnn_score)


# --- registry ---------------------------------------------------------------------------------


def _classic(cls: Callable[..., Detector]) -> Callable[..., Detector]:
    def make(
        template_vectors: np.ndarray | None = None,
        seed: int = 42,
        settings: FitSettings | None = None,
    ) -> Detector:
        return cls(seed=seed)

    return make


def _deep(cls: Callable[..., Detector]) -> Callable[..., Detector]:
    def make(
        template_vectors: np.ndarray | None = None,
        seed: int = 42,
        settings: FitSettings | None = None,
    ) -> Detector:
        return cls(seed=seed, settings=settings)

    return make


def _crnn(
    template_vectors: np.ndarray | None = None,
    seed: int = 42,
    settings: FitSettings | None = None,
) -> Detector:
    return CRNNDetector(template_vectors, seed=seed, settings=settings)


#: name -> factory ``(template_vectors=None, seed=42, settings=None) -> Detector``.
DETECTORS: dict[str, Callable[..., Detector]] = {
    "pca": _classic(PCADetector),
    "iforest": _classic(IsolationForestDetector),
    "profile": _classic(ProfileDetector),
    "lr": _classic(LogisticRegressionDetector),
    "rf": _classic(RandomForestDetector),
    "ae": _deep(AutoEncoderDetector),
    "lstm": _deep(DeepLogDetector),
    "cnn": _deep(CNNDetector),
    "crnn": _crnn,
}


def make_detector(
    name: str,
    template_vectors: np.ndarray | None = None,
    seed: int = 42,
    settings: FitSettings | None = None,
) -> Detector:
    """A new, unfitted detector by registry name; unknown names are a :class:`UsageError`.

    ``settings`` (the deep detectors' training loop) defaults to ``FitSettings(seed=seed)``.
    """
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise UsageError(
            f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}"
        ) from None
    return factory(template_vectors=template_vectors, seed=seed, settings=settings)
