"""Detection metrics and decision thresholds (scikit-learn's implementations).

A score is "higher = more anomalous"; a window is flagged when ``score >= threshold``.
Windows labelled -1 (unknown) are left out of every metric.  Thresholds are chosen on a
validation slice (:func:`best_f1_threshold`, or :func:`threshold_mean_k_sigma` on the scores
of normal validation windows, as in seed 003) and then applied unchanged to the test slice.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from logcrnn.errors import DataError

log = logging.getLogger(__name__)


def _known(labels: np.ndarray, scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{what}: {len(y)} labels but {len(s)} scores")
    keep = y >= 0
    y, s = y[keep].astype(np.int64), s[keep]
    if s.size and not np.isfinite(s).all():
        raise DataError(f"{what}: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    if np.any((y != 0) & (y != 1)):
        raise DataError(f"{what}: labels must be 0, 1 or -1 (unknown)")
    return y, s


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray, middle: bool = True) -> float:
    """The score threshold (flag ``score >= t``) maximising F1 on these windows.

    ``labels``: (n,) 0/1 (-1 ignored); ``scores``: (n,).  The best F1 is reached by flagging
    every window scoring at least some validation score ``s``; any threshold in the gap
    between ``s`` and the next lower validation score flags the same windows, and the middle
    of that gap is returned (the largest margin on both sides for scores of windows not
    seen yet; ``middle=False`` returns ``s``, the edge, as before; docs/RESULTS.md compares
    the two on the dev hold-outs).  When ``s`` is the lowest score, ``s`` itself.  With no
    anomalous window, a threshold above every score (nothing flagged); with no normal
    window, the lowest score (everything flagged).
    """
    y, s = _known(labels, scores, "best F1 threshold")
    if s.size == 0:
        raise DataError("best F1 threshold: no labelled windows")
    if not (y == 1).any():
        log.warning("best F1 threshold: no anomalous window; nothing will be flagged")
        return float(np.nextafter(s.max(), np.inf))
    if not (y == 0).any():
        return float(s.min())
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = float(thresholds[int(np.argmax(f1))])
    below = s[s < best]
    if not middle or below.size == 0:
        return best
    halfway = float((below.max() + best) / 2.0)
    # two adjacent floats have nothing between them: the edge itself then
    return halfway if below.max() < halfway < best else best


def shrunk_threshold(threshold: float, shrink: float, prior: float = 0.5) -> float:
    """``threshold`` moved ``shrink`` (0..1) of the way to ``prior``.

    For the CRNN: its class-balanced loss puts the decision boundary of its probability at
    0.5, and the best-F1 threshold of a small validation slice moves with every seed and
    draw.  With whole templates read as unknown in training, half-way between the two
    carried to a later period better than either alone on the clean dev hold-outs, not
    under line noise (docs/RESULTS.md); ``train.threshold_shrink`` is 0 by default.
    """
    if not 0.0 <= shrink <= 1.0:
        raise DataError(f"threshold shrink must be in [0, 1], got {shrink}")
    return float((1.0 - shrink) * threshold + shrink * prior)


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Metrics of ``scores >= threshold`` against ``labels``.

    Returns ``precision``, ``recall``, ``f1`` (0.0 when undefined), ``roc_auc`` and ``pr_auc``
    (average precision; None when the labels hold one class), ``tp``, ``fp``, ``tn``, ``fn``,
    ``n`` (labelled windows), ``n_anomalous`` and ``threshold``.
    """
    y, s = _known(labels, scores, "evaluate scores")
    pred = (s >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    two_classes = bool((y == 0).any() and (y == 1).any())
    return {
        "precision": float(precision_score(y, pred, zero_division=0.0)),
        "recall": float(recall_score(y, pred, zero_division=0.0)),
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else None,
        "pr_auc": float(average_precision_score(y, s)) if two_classes else None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": int(len(y)),
        "n_anomalous": int((y == 1).sum()),
        "threshold": float(threshold),
    }


def threshold_mean_k_sigma(normal_scores: np.ndarray, k: float = 3.0) -> float:
    """``mean + k * std`` of the scores of normal windows (seed 003's rule).

    ``normal_scores``: (n,) scores of windows known to be normal (validation slice); the
    standard deviation is the sample one (``ddof=1``; 0 for a single score).
    """
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError("mean + k sigma threshold: no normal scores")
    if not np.isfinite(s).all():
        raise DataError("mean + k sigma threshold: NaN or infinite scores")
    std = float(s.std(ddof=1)) if s.size > 1 else 0.0
    return float(s.mean() + k * std)
