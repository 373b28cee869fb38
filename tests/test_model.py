"""The CRNN, the training loop, the detectors and the metrics (no Spark, CPU only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from logcrnn.errors import ConfigError, DataError, UsageError
from logcrnn.model.baselines import DETECTORS, make_detector
from logcrnn.model.crnn import CRNN, CRNNConfig, CRNNOutput, class_weights, crnn_loss
from logcrnn.model.data import (
    TemplateVectors,
    WindowArrays,
    event_vectors,
    iterate_batches,
    with_table_vectors,
)
from logcrnn.model.fitting import (
    FitSettings,
    fit_torch,
    predict_torch,
    with_unknown_templates,
    with_unknowns,
)
from logcrnn.model.metrics import (
    best_f1_threshold,
    evaluate_scores,
    shrunk_threshold,
    threshold_mean_k_sigma,
)

# --- a small structured dataset ---------------------------------------------------------------
#
# Normal windows walk a fixed Markov chain over templates 2..11 (each template has three
# possible successors); a window has 12 to 40 events, of which the first SEQ_LEN are in the
# sequence (longer ones are truncated, shorter ones padded).  Anomalies are normal windows
# with either one visible event replaced by a rare template (12 or 13, never in normal
# windows: "rare") or a visible run of 6 events reversed, which breaks the chain's order but
# keeps every count ("order").

N_CHAIN, RARE, VOCAB, SEQ_LEN, SEM_DIM = 10, (12, 13), 14, 30, 8
FAST = FitSettings(epochs=8, batch_size=32, lr=1e-3, patience=3, seed=1, threads=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # small recurrent batches: one intra-op thread is faster, and immune to a busy machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _chain(rng: np.random.Generator) -> np.ndarray:
    trans = np.zeros((VOCAB, VOCAB))
    states = np.arange(2, 2 + N_CHAIN)
    for s in states:
        nxt = rng.choice(states[states != s], size=3, replace=False)
        trans[s, nxt] = rng.dirichlet(np.full(3, 2.0))
    return trans


def _windows(
    n: int, kind: str, seed: int, trans: np.ndarray, vectors: np.ndarray, frac: float = 0.1
) -> WindowArrays:
    rng = np.random.default_rng(seed)
    seq = np.zeros((n, SEQ_LEN), np.int64)
    length = np.zeros(n, np.int64)
    counts = np.zeros((n, VOCAB), np.float32)
    sem = np.zeros((n, SEM_DIM), np.float32)
    label = np.zeros(n, np.int64)
    for i in range(n):
        k = int(rng.integers(12, 41))
        events = [int(rng.integers(2, 2 + N_CHAIN))]
        for _ in range(k - 1):
            events.append(int(rng.choice(VOCAB, p=trans[events[-1]])))
        ev = np.array(events)
        visible = min(k, SEQ_LEN)
        if rng.random() < frac:
            label[i] = 1
            if kind == "rare":
                ev[rng.integers(0, visible)] = rng.choice(RARE)
            else:
                lo = int(rng.integers(0, visible - 6))
                ev[lo : lo + 6] = ev[lo : lo + 6][::-1].copy()
        seq[i, :visible] = ev[:visible]
        length[i] = k
        counts[i] = np.bincount(ev, minlength=VOCAB)
        sem[i] = vectors[ev].mean(axis=0)
    return WindowArrays(
        sequence=seq,
        length=length,
        counts=counts,
        semantic=sem,
        features=rng.normal(size=(n, 2)).astype(np.float32),
        label=label,
        start_us=np.arange(n, dtype=np.int64),
        window_id=np.array([f"{seed}-{i}" for i in range(n)], dtype=object),
    )


def _dataset(kind: str, seed: int = 0) -> tuple[WindowArrays, WindowArrays, WindowArrays, Any]:
    rng = np.random.default_rng(seed)
    trans = _chain(rng)
    vectors = rng.normal(size=(VOCAB, SEM_DIM)).astype(np.float32)
    vectors[:2] = 0.0
    train, valid, test = (
        _windows(n, kind, seed + 1 + j, trans, vectors) for j, n in enumerate((800, 200, 400))
    )
    return train, valid, test, vectors


@pytest.fixture(scope="module")
def rare() -> tuple[WindowArrays, WindowArrays, WindowArrays, Any]:
    return _dataset("rare")


@pytest.fixture(scope="module")
def order() -> tuple[WindowArrays, WindowArrays, WindowArrays, Any]:
    return _dataset("order", seed=10)


def _batch(config: CRNNConfig, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    seq = torch.randint(2, config.vocab_size, (b, config.seq_len), generator=g)
    length = torch.tensor(lengths)
    pos = torch.arange(config.seq_len)[None, :]
    seq = seq.masked_fill(pos >= length[:, None], 0)
    return {
        "sequence": seq,
        "length": length,
        "features": torch.randn(b, config.n_features, generator=g),
        "semantic": torch.randn(b, config.sem_dim, generator=g),
        "label": torch.tensor([i % 2 for i in range(b)]),
    }


# --- CRNN -------------------------------------------------------------------------------------


def test_crnn_output_shapes_and_attention_masks_padding() -> None:
    cfg = CRNNConfig(vocab_size=20, seq_len=12, n_features=3, sem_dim=4)
    torch.manual_seed(0)
    model = CRNN(cfg, np.random.default_rng(0).normal(size=(20, 4))).eval()
    batch = _batch(cfg, [12, 5, 1, 20, 0])
    out = model(batch["sequence"], batch["length"], batch["features"], batch["semantic"])
    assert out.logit.shape == (5,)
    assert out.attention.shape == (5, 12)
    assert out.top_states.shape == (5, 12, cfg.hidden)
    valid = torch.arange(12)[None, :] < torch.tensor([12, 5, 1, 12, 1])[:, None]
    torch.testing.assert_close(out.attention.sum(1), torch.ones(5))
    assert bool((out.attention[~valid] == 0).all())
    assert bool((out.attention[valid] > 0).all())
    assert bool((out.top_states[~valid] == 0).all())
    assert torch.isfinite(out.logit).all()


def test_crnn_ignores_content_beyond_length() -> None:
    cfg = CRNNConfig(vocab_size=20, seq_len=12, n_features=2, sem_dim=3)
    torch.manual_seed(1)
    model = CRNN(cfg, np.random.default_rng(1).normal(size=(20, 3))).eval()
    batch = _batch(cfg, [7, 3, 12])
    seq = batch["sequence"]
    noisy = seq.clone()
    noisy[0, 7:] = 5
    noisy[1, 3:] = torch.arange(2, 11)
    first = model(seq, batch["length"], batch["features"], batch["semantic"])
    second = model(noisy, batch["length"], batch["features"], batch["semantic"])
    torch.testing.assert_close(first.logit, second.logit)
    torch.testing.assert_close(first.attention, second.attention)
    # ... while content inside the length does matter
    changed = seq.clone()
    changed[0, 2] = 1 if int(seq[0, 2]) != 1 else 2
    again = model(changed, batch["length"], batch["features"], batch["semantic"])
    assert not torch.equal(again.logit, first.logit)


def test_a_window_scores_the_same_alone_and_beside_longer_ones() -> None:
    # a batch runs its first max(length) positions only, so scoring can group windows by
    # length: a window's outputs must not depend on how long its batch-mates are
    cfg = CRNNConfig(vocab_size=20, seq_len=12, n_features=2, sem_dim=3, kernels=(2, 3, 5))
    torch.manual_seed(2)
    model = CRNN(cfg, np.random.default_rng(2).normal(size=(20, 3))).eval()
    batch = _batch(cfg, [3, 12, 1, 7, 30])
    events = torch.randn(5, 12, 3, generator=torch.Generator().manual_seed(3))
    args = ("sequence", "length", "features", "semantic")
    with torch.no_grad():
        together = model(*(batch[a] for a in args), events)
        for i in range(5):
            alone = model(*(batch[a][i : i + 1] for a in args), events[i : i + 1])
            torch.testing.assert_close(alone.logit, together.logit[i : i + 1])
            torch.testing.assert_close(alone.attention, together.attention[i : i + 1])
            torch.testing.assert_close(alone.top_states, together.top_states[i : i + 1])
            assert alone.attention.shape == (1, 12) and alone.top_states.shape == (1, 12, 64)
    # with autograd (training) the convolution and attention span all 12 positions
    full = model(*(batch[a] for a in args), events)
    torch.testing.assert_close(full.logit.detach(), together.logit)
    torch.testing.assert_close(full.attention.detach(), together.attention)
    # a batch of none still has the full shapes
    empty = model(*(batch[a][:0] for a in args), events[:0])
    assert empty.logit.shape == (0,) and empty.attention.shape == (0, 12)


def test_crnn_without_features_or_semantics_runs() -> None:
    cfg = CRNNConfig(vocab_size=9, seq_len=6, n_features=0, sem_dim=0, kernels=(3,), layers=1)
    model = CRNN(cfg)
    batch = _batch(cfg, [6, 2])
    out = model(batch["sequence"], batch["length"], batch["features"])
    assert out.logit.shape == (2,)
    loss = crnn_loss(model, out, batch["label"], (1.0, 1.0))
    loss.backward()
    assert torch.isfinite(loss)


def test_crnn_one_step_lowers_the_loss() -> None:
    cfg = CRNNConfig(vocab_size=20, seq_len=10, n_features=2, sem_dim=0, dropout=0.0)
    torch.manual_seed(2)
    model = CRNN(cfg)
    batch = _batch(cfg, [10, 4, 7, 2, 9, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        out = model(batch["sequence"], batch["length"], batch["features"])
        return crnn_loss(model, out, batch["label"], (0.75, 1.5), length=batch["length"])

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


def test_crnn_loss_terms_exact() -> None:
    model = CRNN(CRNNConfig(vocab_size=5, seq_len=4, n_features=0, sem_dim=0, lambda_reg=0.0))
    hidden = model.config.hidden
    # class-weighted BCE, the -1 row ignored: (1.5 * log 2 + 0.5 * log(1 + e^2)) / 2
    out = CRNNOutput(
        torch.tensor([0.0, 2.0, -1.0]), torch.full((3, 4), 0.25), torch.zeros(3, 4, hidden)
    )
    got = crnn_loss(model, out, torch.tensor([1, 0, -1]), (0.5, 1.5))
    assert float(got) == pytest.approx((1.5 * np.log(2) + 0.5 * np.log1p(np.exp(2))) / 2)
    # + 0.01 * temporal consistency: states 0, 1, 3 on one channel of a window of length 3
    states = torch.zeros(1, 4, hidden)
    states[0, :, 0] = torch.tensor([0.0, 1.0, 3.0, 100.0])  # position 3 is padding
    attention = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]])
    out = CRNNOutput(torch.zeros(1), attention, states)
    expected = np.log(2) + 0.01 * (1 + 4) / 2
    got = crnn_loss(model, out, torch.tensor([0]), (1.0, 1.0), length=torch.tensor([3]))
    assert float(got) == pytest.approx(expected)
    # without lengths, the valid positions are those with attention
    assert float(crnn_loss(model, out, torch.tensor([0]), (1.0, 1.0))) == pytest.approx(expected)
    # L_SR: weight matrices and kernels only
    penalised = {id(p) for p in model.regularised_parameters()}
    assert id(model.embedding.weight) not in penalised
    params = dict(model.named_parameters())
    assert id(params["grus.0.drift"]) not in penalised
    assert id(params["grus.0.u_h.weight"]) in penalised
    assert id(model.head_out.weight) in penalised and id(model.head_out.bias) not in penalised


def test_class_weights_exact() -> None:
    assert class_weights(np.array([0] * 8 + [1] * 2 + [-1] * 5)) == (0.625, 2.5)
    assert class_weights(np.array([0, 1])) == (1.0, 1.0)
    with pytest.raises(DataError, match="both classes"):
        class_weights(np.array([0, 0, -1]))


def test_crnn_config_round_trip_and_errors() -> None:
    cfg = CRNNConfig(vocab_size=30, seq_len=50, n_features=4, sem_dim=8, kernels=(3, 5))
    assert CRNNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        CRNNConfig.from_dict({**cfg.to_dict(), "hiden": 3})
    with pytest.raises(ConfigError, match="dropout"):
        CRNNConfig(vocab_size=30, seq_len=50, n_features=0, sem_dim=0, dropout=1.0)
    with pytest.raises(DataError, match="template vectors of shape"):
        CRNN(cfg, np.zeros((29, 8)))
    with pytest.raises(ConfigError, match="feature_clip"):
        CRNNConfig(vocab_size=30, seq_len=50, n_features=0, sem_dim=0, feature_clip=-1.0)


def test_numeric_features_beyond_the_clip_move_the_logit_no_further() -> None:
    torch.manual_seed(0)
    model = CRNN(CRNNConfig(vocab_size=10, seq_len=6, n_features=2, sem_dim=0)).eval()
    assert model.config.feature_clip == 3.0
    seq = torch.tensor([[2, 3, 4, 0, 0, 0]] * 4)
    length = torch.tensor([3] * 4)
    feats = torch.tensor([[0.0, 0.0], [3.0, -3.0], [40.0, -3.0], [3.0, -900.0]])
    logit = model(seq, length, feats).logit
    assert logit[1] == logit[2] == logit[3]
    assert logit[0] != logit[1]
    # without the clip the extreme rows differ
    unclipped = CRNN(CRNNConfig.from_dict({**model.config.to_dict(), "feature_clip": 0.0}))
    unclipped.load_state_dict(model.state_dict())
    raw = unclipped.eval()(seq, length, feats).logit
    assert raw[1] != raw[2] and raw[1] != raw[3]


def test_a_model_saved_before_the_clip_existed_loads_unclipped() -> None:
    model = CRNN(CRNNConfig(vocab_size=10, seq_len=6, n_features=2, sem_dim=0))
    saved = model.config.to_dict()
    del saved["feature_clip"]
    assert CRNNConfig.from_saved(saved).feature_clip == 0.0
    assert CRNN.from_bytes(model.to_bytes()).config.feature_clip == 3.0


def test_the_head_reads_the_window_semantic_vector() -> None:
    cfg = CRNNConfig(vocab_size=12, seq_len=8, n_features=2, sem_dim=3)
    assert cfg.head_semantic
    torch.manual_seed(4)
    model = CRNN(cfg, np.random.default_rng(4).normal(size=(12, 3))).eval()
    batch = _batch(cfg, [8, 3])
    args = (batch["sequence"], batch["length"], batch["features"])
    first = model(*args, batch["semantic"]).logit
    # the same sequences with other window vectors (e.g. templates unseen in training, which
    # all read as UNKNOWN in the sequence but keep their own vectors) score differently
    other = model(*args, batch["semantic"] + 1.0).logit
    assert bool((first != other).all())
    with pytest.raises(DataError, match="semantic vectors"):
        model(*args)
    with pytest.raises(DataError, match="semantic vectors"):
        model(*args, batch["semantic"][:, :2])
    # without it, or without semantic vectors at all, the window vector is not read
    off = CRNN(CRNNConfig.from_dict({**cfg.to_dict(), "head_semantic": False})).eval()
    torch.testing.assert_close(off(*args).logit, off(*args, batch["semantic"] + 1.0).logit)
    # a model saved before the setting existed loads without it
    saved = off.config.to_dict()
    del saved["head_semantic"]
    assert not CRNNConfig.from_saved(saved).head_semantic
    assert CRNN.from_bytes(model.to_bytes()).config.head_semantic


def test_each_event_reads_its_own_template_vector() -> None:
    cfg = CRNNConfig(vocab_size=12, seq_len=8, n_features=2, sem_dim=3)
    assert cfg.event_vectors
    torch.manual_seed(5)
    table = np.random.default_rng(5).normal(size=(12, 3)).astype(np.float32)
    table[:2] = 0.0  # padding and unknown have no vector
    model = CRNN(cfg, table).eval()
    batch = _batch(cfg, [8, 5, 2])
    args = (batch["sequence"], batch["length"], batch["features"], batch["semantic"])
    looked_up = torch.from_numpy(table)[batch["sequence"]]
    # without event vectors the table is read by vocabulary index: the same logits
    torch.testing.assert_close(model(*args).logit, model(*args, looked_up).logit)
    # a template unseen in training reads as the unknown id in the sequence, but its own
    # vector still reaches the convolution: another vector there, another score
    unseen = batch["sequence"].clone()
    unseen[:, 0] = 1
    moved = looked_up.clone()
    moved[:, 0] += 1.0
    a = model(unseen, *args[1:], looked_up).logit
    b = model(unseen, *args[1:], moved).logit
    assert bool((a != b).all())
    # the vectors at padding are not read
    pad = looked_up.clone()
    pad[1, 5:] += 1.0
    torch.testing.assert_close(model(*args, looked_up).logit[1], model(*args, pad).logit[1])
    with pytest.raises(DataError, match="event vectors of shape"):
        model(*args, looked_up[:, :, :2])
    # turned off, the table is read whatever the batch carries
    off = CRNN(CRNNConfig.from_dict({**cfg.to_dict(), "event_vectors": False}), table).eval()
    torch.testing.assert_close(off(*args).logit, off(*args, moved).logit)
    # training takes the events' vectors from the table only when the model reads them
    np.testing.assert_array_equal(model.training_table(), table)
    assert off.training_table() is None
    # a model saved before the setting existed loads without it
    saved = off.config.to_dict()
    del saved["event_vectors"]
    assert not CRNNConfig.from_saved(saved).event_vectors
    assert CRNN.from_bytes(model.to_bytes()).config.event_vectors


def test_event_vectors_follow_template_ids_and_the_table_follows_the_sequence() -> None:
    vectors = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0])}
    out = event_vectors([["a", "x", "b", "a"], [], None, np.array(["b"])], 3, vectors, 2)
    assert out.shape == (4, 3, 2) and out.dtype == np.float32
    # truncated to seq_len; an id without a vector and padding read as zeros
    assert out[0].tolist() == [[1, 2], [0, 0], [3, 4]]
    assert not out[1].any() and not out[2].any() and out[3].tolist() == [[3, 4], [0, 0], [0, 0]]
    with pytest.raises(DataError, match="template vectors of length 2, the model takes 3"):
        event_vectors([["a"]], 3, vectors, 3)
    with pytest.raises(DataError, match=r"template b: semantic vector of shape \(3,\)"):
        TemplateVectors.of({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    table_form = TemplateVectors.of(vectors)
    assert (event_vectors([["b", "a"]], 3, table_form, 2) == out[[0]][:, [2, 0, 1]]).all()
    assert not event_vectors([["a"]], 2, {}, 2).any()
    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    batch = {"sequence": np.array([[2, 5, 0]])}
    assert with_table_vectors(batch, table)["event_vectors"].tolist() == [
        [[4, 5], [10, 11], [0, 1]]
    ]
    assert "event_vectors" not in with_table_vectors(batch, None)
    given = {**batch, "event_vectors": np.zeros((1, 3, 2))}
    assert with_table_vectors(given, table) is given


def test_an_id_replaced_by_the_unknown_id_in_training_keeps_its_vector(rare: Any) -> None:
    train, valid, _, vectors = rare
    seen: list[dict[str, torch.Tensor]] = []

    def loss_fn(m: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(batch)
        return m(batch["sequence"], batch["length"], batch["features"], batch["semantic"],
                 batch["event_vectors"]).logit.mean()  # fmt: skip

    cfg = CRNNConfig(vocab_size=train.vocab_size, seq_len=train.seq_len,
                     n_features=train.n_features, sem_dim=vectors.shape[1])  # fmt: skip
    settings = FitSettings(epochs=1, batch_size=64, seed=3, threads=1, unknown_rate=0.3)
    data = train.take(np.arange(128))
    fit_torch(CRNN(cfg, vectors), loss_fn,
              lambda e: iterate_batches(data, 64, e, table=vectors), None, settings)  # fmt: skip
    seq = torch.cat([b["sequence"] for b in seen])
    ev = torch.cat([b["event_vectors"] for b in seen])
    replaced = seq == 1
    assert int(replaced.sum()) > 100
    # the unknown id's own row is zeros; the replaced events carry their template's vector
    assert not vectors[1].any() and bool((ev[replaced].abs().sum(-1) > 0).all())


def test_crnn_bytes_round_trip() -> None:
    cfg = CRNNConfig(vocab_size=12, seq_len=8, n_features=2, sem_dim=3)
    torch.manual_seed(3)
    model = CRNN(cfg, np.random.default_rng(3).normal(size=(12, 3))).eval()
    batch = _batch(cfg, [8, 3])
    again = CRNN.from_bytes(model.to_bytes())
    args = (batch["sequence"], batch["length"], batch["features"], batch["semantic"])
    torch.testing.assert_close(again(*args).logit, model(*args).logit)
    with pytest.raises(DataError, match="cannot load"):
        CRNN.from_bytes(b"not a model")


# --- the training loop ------------------------------------------------------------------------


class _Scalar(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


def _toy_valid(target: float) -> WindowArrays:
    return WindowArrays(
        sequence=np.zeros((4, 1), np.int64),
        length=np.ones(4, np.int64),
        counts=np.zeros((4, 2), np.float32),
        semantic=np.zeros((4, 0), np.float32),
        features=np.full((4, 1), target, np.float32),
        label=np.zeros(4, np.int64),
        start_us=np.arange(4, dtype=np.int64),
        window_id=np.arange(4).astype(object),
    )


def _pull(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model.w - batch["features"][:, 0]) ** 2).mean()


def test_fit_torch_early_stopping_restores_the_best_epoch() -> None:
    # training pulls w from 0 towards 5; the validation loss is lowest where w passes 1
    model = _Scalar()
    seen: list[float] = []

    def train(epoch: int) -> list[dict[str, np.ndarray]]:
        return [{"features": np.full((2, 1), 5.0, np.float32), "label": np.zeros(2)}]

    settings = FitSettings(epochs=50, lr=0.3, patience=2, seed=0)
    result = fit_torch(
        model,
        _pull,
        train,
        _toy_valid(1.0),
        settings,
        device=torch.device("cpu"),
        on_epoch=lambda r: seen.append(model.w.item()),
    )
    losses = [h["valid_loss"] for h in result.history]
    best = int(np.argmin(losses))
    assert result.best_epoch == best
    assert 0 < best < result.epochs_run - 1 < 49  # it stopped early, after a worse epoch
    assert result.epochs_run == best + 1 + settings.patience
    assert model.w.item() == pytest.approx(seen[best])
    assert model.w.item() != pytest.approx(seen[-1])
    assert result.windows_per_s > 0


class _RecordingCollective:
    def __init__(self, size: int) -> None:
        self._size = size
        self.calls: list[str] = []

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return self._size

    def allreduce_mean(self, value: float, name: str) -> float:
        self.calls.append(f"allreduce:{name}")
        return value

    def broadcast_model(self, model: Any, optimizer: Any) -> None:
        self.calls.append("broadcast")

    def wrap_optimizer(self, optimizer: Any, model: Any) -> Any:
        self.calls.append("wrap")
        self.lr = optimizer.param_groups[0]["lr"]
        return optimizer


def test_fit_torch_uses_the_collective() -> None:
    coll = _RecordingCollective(size=4)

    def train(epoch: int) -> list[dict[str, np.ndarray]]:
        return [{"features": np.full((2, 1), 5.0, np.float32), "label": np.zeros(2)}]

    settings = FitSettings(epochs=2, lr=0.01, seed=0)
    fit_torch(_Scalar(), _pull, train, _toy_valid(1.0), settings, collective=coll)
    assert coll.calls[:2] == ["wrap", "broadcast"]  # Horovod's order
    assert coll.lr == pytest.approx(0.04)
    assert coll.calls.count("allreduce:valid_loss") == 2


def test_crnn_detector_is_deterministic(rare: Any) -> None:
    train, valid, test, vectors = rare
    settings = FitSettings(epochs=1, batch_size=64, seed=3, threads=1)
    first = make_detector("crnn", vectors, seed=3, settings=settings)
    scores = first.fit(train.take(np.arange(200)), valid).score(test.take(np.arange(50)))
    again = make_detector("crnn", vectors, seed=3, settings=settings)
    np.testing.assert_array_equal(
        again.fit(train.take(np.arange(200)), valid).score(test.take(np.arange(50))), scores
    )


def test_with_unknowns_replaces_only_real_template_ids() -> None:
    seq = np.array([[5, 6, 1, 7, 0, 0]] * 2000)
    out = with_unknowns(seq, 0.25, np.random.default_rng(0))
    assert (out[:, 4:] == 0).all() and (out[:, 2] == 1).all()  # padding, unknown untouched
    real = seq > 1
    assert set(np.unique(out[real])) == {1, 5, 6, 7}
    assert abs((out[real] == 1).mean() - 0.25) < 0.02
    assert (seq[0] == [5, 6, 1, 7, 0, 0]).all()  # a new array


def test_with_unknown_templates_replaces_every_event_of_the_templates_drawn() -> None:
    seq = np.array([[5, 6, 1, 7, 5, 0], [7, 7, 6, 0, 0, 0]])
    drawn = []
    for seed in range(400):
        out = with_unknown_templates(seq, 0.3, np.random.default_rng(seed))
        assert (out[seq == 0] == 0).all() and (out[seq == 1] == 1).all()
        gone = {int(t) for t in (5, 6, 7) if (out[seq == t] == 1).any()}
        for t in (5, 6, 7):  # a template goes whole or not at all, in every window
            assert (out[seq == t] == (1 if t in gone else t)).all()
        drawn.append(len(gone))
    assert abs(np.mean(drawn) / 3 - 0.3) < 0.05
    assert (with_unknown_templates(seq, 0.0, np.random.default_rng(0)) == seq).all()
    assert (seq[0] == [5, 6, 1, 7, 5, 0]).all()  # a new array


def test_training_teaches_the_unknown_template_only_with_unknown_rate(rare: Any) -> None:
    """The vocabulary comes from the training windows, so the unknown id never occurs there:
    without replacement its embedding keeps its initial value; with it, it is learned."""
    train, valid, _, vectors = rare
    rows = {}
    for rate in (0.0, 0.05):
        settings = FitSettings(epochs=1, batch_size=64, seed=3, threads=1, unknown_rate=rate)
        detector = make_detector("crnn", vectors, seed=3, settings=settings)
        detector.fit(train.take(np.arange(200)), valid)
        rows[rate] = detector.model_.embedding.weight[1].detach().clone()
    torch.manual_seed(3)  # the detector's own initialisation, before any step
    initial = CRNN(detector.config_, vectors).embedding.weight[1].detach()
    assert torch.equal(rows[0.0], initial)
    assert not torch.allclose(rows[0.05], initial)


# --- detectors --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_separates_rare_template_anomalies(name: str, rare: Any) -> None:
    train, valid, test, vectors = rare
    detector = make_detector(name, vectors, seed=1, settings=FAST)
    assert detector.name == name
    scores = detector.fit(train, valid).score(test)
    assert scores.shape == (len(test),)
    assert np.isfinite(scores).all()
    assert roc_auc_score(test.label, scores) > 0.9


@pytest.mark.parametrize("name", ["lstm", "cnn", "crnn"])
def test_sequence_detectors_see_order_anomalies(name: str, order: Any) -> None:
    # same counts, broken order: only the models that read the sequence can tell
    train, valid, test, vectors = order
    detector = make_detector(name, vectors, seed=1, settings=FAST)
    scores = detector.fit(train, valid).score(test)
    assert roc_auc_score(test.label, scores) > 0.9


def test_count_detector_is_blind_to_order(order: Any) -> None:
    # the control of the test above: the order anomalies really keep the counts
    train, valid, test, vectors = order
    scores = make_detector("profile", vectors).fit(train, valid).score(test)
    assert roc_auc_score(test.label, scores) < 0.7


def test_supervised_detector_needs_both_classes(rare: Any) -> None:
    train, valid, _, vectors = rare
    normal = train.take(train.label == 0)
    with pytest.raises(DataError, match="normal and anomalous"):
        make_detector("rf", vectors).fit(normal, valid)


def test_score_before_fit_and_unknown_name(rare: Any) -> None:
    with pytest.raises(UsageError, match="before fit"):
        make_detector("pca").score(rare[2])
    with pytest.raises(UsageError, match=r"unknown detector 'svm'; known: .*crnn.*rf"):
        make_detector("svm")


# --- metrics ----------------------------------------------------------------------------------

LABELS = np.array([0, 0, 1, 1, -1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.99])


def test_best_f1_threshold_exact() -> None:
    # thresholds 0.1 / 0.35 / 0.4 / 0.8 give F1 2/3, 0.8, 0.5, 2/3 (the -1 row is ignored);
    # flagging from 0.35 is best, and every threshold in (0.1, 0.35] flags the same windows:
    # the middle of that gap
    assert best_f1_threshold(LABELS, SCORES) == pytest.approx(0.225)
    assert best_f1_threshold(LABELS, SCORES, middle=False) == 0.35
    assert evaluate_scores(LABELS, SCORES, best_f1_threshold(LABELS, SCORES))["f1"] == 0.8
    # the best is to flag everything: the lowest score, no gap below it
    assert best_f1_threshold(np.array([1, 0, 1]), np.array([0.3, 0.5, 0.9])) == 0.3
    # adjacent floats have no middle: the edge itself
    edge = np.nextafter(0.5, 1.0)
    assert best_f1_threshold(np.array([0, 1]), np.array([0.5, edge])) == edge
    assert best_f1_threshold(np.array([0, 0]), np.array([0.2, 0.7])) > 0.7
    assert best_f1_threshold(np.array([1, 1]), np.array([0.2, 0.7])) == 0.2


def test_shrunk_threshold_moves_towards_the_balanced_boundary() -> None:
    assert shrunk_threshold(0.9, 0.5) == pytest.approx(0.7)
    assert shrunk_threshold(0.1, 0.5) == pytest.approx(0.3)
    assert shrunk_threshold(0.9, 0.0) == 0.9 and shrunk_threshold(0.9, 1.0) == 0.5
    with pytest.raises(DataError, match="shrink"):
        shrunk_threshold(0.9, 1.5)


def test_evaluate_scores_exact() -> None:
    m = evaluate_scores(LABELS, SCORES, 0.35)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (anomaly, normal) pairs in order
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert (m["n"], m["n_anomalous"]) == (4, 2)


def test_evaluate_scores_one_class_gives_no_auc() -> None:
    m = evaluate_scores(np.array([0, 0, 0]), np.array([0.1, 0.5, 0.9]), 0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 2, 1, 0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    with pytest.raises(DataError, match="NaN"):
        evaluate_scores(np.array([0, 1]), np.array([0.1, np.nan]), 0.5)


def test_threshold_mean_k_sigma_exact() -> None:
    # mean 2.5, sample std sqrt(5 / 3)
    assert threshold_mean_k_sigma(np.array([1.0, 2.0, 3.0, 4.0]), 2.0) == pytest.approx(
        2.5 + 2 * np.sqrt(5 / 3)
    )
    assert threshold_mean_k_sigma(np.array([3.0]), 3.0) == 3.0
    with pytest.raises(DataError):
        threshold_mean_k_sigma(np.array([]), 3.0)


def test_predict_torch_keeps_the_order(rare: Any) -> None:
    _, _, test, _ = rare
    model = _Scalar()

    def by_length(m: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["length"].float() + m.w

    scores = predict_torch(model, test, batch_size=7, score_fn=by_length)
    np.testing.assert_array_equal(scores, test.length.astype(np.float64))
