"""Scoring: the numeric core without Spark, attention-named templates, bad model/windows."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import torch

from logcrnn import score
from logcrnn.errors import DataError
from logcrnn.model.crnn import CRNN, CRNNConfig


def _scorer(seq_len: int = 6, n_features: int = 2, threshold: float = 0.5) -> score.Scorer:
    torch.manual_seed(0)
    model = CRNN(CRNNConfig(vocab_size=8, seq_len=seq_len, n_features=n_features, sem_dim=0))
    return score.Scorer(
        model_blob=model.to_bytes(),
        version="v-test",
        threshold=threshold,
        feature_index=(0, 2)[:n_features],
        texts={"a": "open <*>", "b": "close <*>"},
    )


def _windows(n: int, seq_len: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(2, 8, size=seq_len)) for _ in range(n)]
    return pd.DataFrame(
        {
            "window_id": [f"w{i}" for i in range(n)],
            "kind": "session",
            "key": [f"blk_{i}" for i in range(n)],
            "start_ts": datetime(2008, 11, 9),
            "end_ts": datetime(2008, 11, 9, 1),
            "length": [seq_len] * n,
            "template_ids": [["a", "b", "a", "c", "b", "a"][:seq_len] for _ in range(n)],
            "sequence": seqs,
            "features_std": [list(rng.normal(size=3)) for _ in range(n)],
            "label": [None] * n,
            "first_file": "f.log",
            "first_line": list(range(n)),
            "last_file": "f.log",
            "last_line": list(range(1, n + 1)),
        }
    )


def test_score_frame_matches_the_model_and_applies_the_threshold() -> None:
    scorer = _scorer()
    pdf = _windows(5)
    out = score.score_frame(pdf, scorer)
    model = CRNN.from_bytes(scorer.model_blob)
    with torch.no_grad():
        expected = torch.sigmoid(
            model(
                torch.tensor(np.stack(pdf["sequence"].tolist())),
                torch.tensor(pdf["length"].to_numpy()),
                torch.tensor(
                    np.stack(pdf["features_std"].tolist())[:, [0, 2]], dtype=torch.float32
                ),
            ).logit
        ).numpy()
    assert out["score"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert (out["is_anomaly"] == (out["score"] >= 0.5)).all()
    assert list(out["window_id"]) == list(pdf["window_id"]) and list(out["last_line"]) == [
        1,
        2,
        3,
        4,
        5,
    ]
    # batching does not change the scores
    small = score.score_frame(pdf, score.Scorer(**{**scorer.__dict__, "batch_size": 2}))
    assert small["score"].to_numpy() == pytest.approx(out["score"].to_numpy(), abs=1e-6)


def test_top_templates_sum_attention_per_template() -> None:
    att = np.array([0.1, 0.3, 0.2, 0.05, 0.25, 0.1])
    top = score.top_templates(["a", "b", "a", "c", "b", "a"], att, {"a": "open <*>"})
    assert [t["template_id"] for t in top] == ["b", "a", "c"]
    assert top[0]["weight"] == pytest.approx(0.55) and top[1]["weight"] == pytest.approx(0.4)
    assert top[1]["template"] == "open <*>" and top[0]["template"] == ""
    assert score.top_templates([], att, {}) == []
    # Spark's Arrow path hands array columns over as numpy arrays
    as_numpy = score.top_templates(np.array(["a", "b", "a", "c", "b", "a"]), att, {})
    assert [t["template_id"] for t in as_numpy] == ["b", "a", "c"]


def test_windows_of_another_sequence_length_are_refused() -> None:
    with pytest.raises(DataError, match="the model takes 6"):
        score.score_frame(_windows(3, seq_len=4), _scorer())


def test_templates_outside_the_vocabulary_score_as_unknown() -> None:
    scorer = _scorer()
    pdf = _windows(2)
    pdf.at[0, "sequence"] = [2, 3, 99, 4, 5, 6]  # a vocabulary from another model
    unknown = pdf.copy()
    unknown.at[0, "sequence"] = [2, 3, 1, 4, 5, 6]
    a = score.score_frame(pdf, scorer)["score"].to_numpy()
    b = score.score_frame(unknown, scorer)["score"].to_numpy()
    assert a == pytest.approx(b)
