"""The CRNN of the seed paper (Eq. 1-14), in plain PyTorch.

One window flows through five stages:

1. **Embedding (Eq. 1-2).** Each vocabulary index gets a learned embedding (index 0, padding,
   embeds to zeros) concatenated with its template's semantic vector (the IDF-weighted token
   vectors of Eq. 2).  With ``event_vectors`` (the default) the caller hands each event's
   own vector (``forward``'s ``event_vectors``, :func:`logcrnn.model.data.event_vectors`), so
   a template first seen after training, index UNKNOWN, still reads as what its tokens mean;
   otherwise, or when none are given, the vector is the row of the frozen
   ``(vocab_size, sem_dim)`` table (:func:`logcrnn.model.data.template_table`) at the event's
   index, zeros for UNKNOWN.  Training draws its event vectors from that table before it
   replaces ids by UNKNOWN (``unknown_rate``), so a replaced event keeps its vector, as an
   unseen one does when scored.  Positions at or beyond the window's length are zeroed.
2. **Multi-channel convolution (Eq. 6).** One ``Conv1d`` per kernel width (``kernels``), each
   with ``channels`` output channels, "same" padding and its own PReLU (the paper's parametric
   activation gamma); the branches are concatenated into ``H_t`` of
   ``channels * len(kernels)`` channels.
3. **Stacked gated recurrent layers (Eq. 7-10).** ``layers`` GRU layers written out by hand so
   the gates can carry the paper's masks.
4. **Attention pooling and task-attention fusion (Eq. 11).** An additive attention over the top
   layer's states (zero weight on padding), then a learned, input-dependent softmax ``xi`` over
    the candidates ``[h_T^(1), ..., h_T^(Q), pooled]``.  The attention vector starts at 0, so
   pooling starts as the mean over the valid positions.
5. **Head.** The fused state concatenated with the window's standardised numeric features
   (Eq. 3), each clipped to ``[-feature_clip, feature_clip]``, and (``head_semantic``) the
   window's semantic vector, the mean of its events' template vectors (Eq. 1-2), then a Swish
   (SiLU) hidden layer (the paper's kappa) and a linear output: one logit.  The window vector
   is computed from every event's own template text, so a template first seen after training
   (vocabulary index UNKNOWN in the sequence) still contributes what its tokens mean.

Interpretations (the paper leaves these open)
---------------------------------------------
* **Eq. 7.** ``r_t = sigmoid(W_r x_t + U_r h_{t-1} + b_r) + A^q`` with ``A^q`` a learned
  per-channel vector initialised to 0 ("broadcast addition, channel-wise"); ``r`` is not
  clipped, so the mask can open or close the reset path per channel.
* **Eq. 8.** ``z_t = sigmoid(...) * S^q`` with ``S^q = sigmoid(s^q)`` a learned per-channel
  selection mask, so ``z`` stays in ``[0, 1]``; ``s^q`` starts at 0 (``S = 0.5``: a longer
  memory at initialisation, which shortened the initial loss plateau on order-only anomalies
  from ~6 epochs to ~3 against ``S ~ 0.95``).
* **Eq. 9.** The reset gate multiplies ``h_{t-1}`` *before* ``U_h`` (as written, the original
  GRU form, not cuDNN's).  The "layer-adaptive, normalised activation" eta is
  ``tanh(LayerNorm(.))`` with a per-layer LayerNorm; the "auxiliary drift correction" ``D_t^q``
  is a learned per-position, per-channel offset ``(seq_len, hidden)`` initialised to 0.
* **Eq. 10.** Fed back literally, ``beta * h_t^(q-1)`` inside the recurrence integrates the
  lower layer over time (unbounded when ``z -> 0``).  The recurrence therefore runs on the
  gated blend ``g_t = (1 - z_t) * g_{t-1} + z_t * h~_t`` and the layer's output is
  ``h_t^(q) = alpha^q * g_t + beta^q * h_t^(q-1)`` (``alpha`` init 1, ``beta`` init 0.5,
  ``h^(0) = 0`` so layer 1 has no residual).  Layer 1 reads the convolution map ``H_t``;
  layer ``q > 1`` reads ``h^(q-1)`` (the paper writes ``H_t`` for every layer; standard
  stacking is assumed).
* **Eq. 11.** ``h_T`` is each layer's state at the last *valid* step ``min(length, L) - 1``;
  ``xi`` is an additive attention over the layers' final states plus the attention-pooled top
  layer (the pooling supplies the interpretable ``attention`` map of the output).  ``kappa`` is
  a Swish hidden layer followed by a linear map to a logit; the probability ``y`` is
  ``sigmoid(logit)``, applied inside the loss (BCE with logits) for numerical stability.
* **Eq. 12.** ``L = L_CE + lambda_tc * L_TC + lambda_reg * L_SR`` (``lambda_1 = 1``).
  ``L_SR`` is the squared L2 norm of every weight matrix and convolution kernel (biases,
  embeddings, PReLU slopes, masks, ``alpha``/``beta``, drift and LayerNorm parameters are
  excluded).  ``R_KL`` ("details omitted") has no defined distribution to compare and is
  dropped (``lambda_4 = 0``).
* **Eq. 13.** ``pi_0, pi_1`` are balanced weights ``n / (2 n_c)`` from the training labels
  (:func:`class_weights`); the loss is the batch mean of the weighted terms.
* **Eq. 14.** ``||h_t - h_{t-1}||^2`` summed over channels, averaged over the window's
  ``T - 1`` consecutive *valid* pairs (``T = min(length, L)``), then over the windows with
  ``T >= 2``; ``h^(Q)`` is the top layer's output.
* Windows with ``length == 0`` are treated as length 1 (their one position is padding, a zero
  input), so attention is always a distribution.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from logcrnn.errors import ConfigError, DataError

#: Attention scores are clipped to +-this before the softmax, so every valid position keeps a
#: strictly positive weight (exp(-60) / L is far above float32's smallest normal number).
_SCORE_CLIP = 30.0


@dataclass(frozen=True)
class CRNNConfig:
    """Sizes and loss weights of a :class:`CRNN`.

    ``vocab_size``: vocabulary indices including PAD (0) and UNKNOWN (1); ``seq_len``: L;
    ``n_features``: F numeric features per window; ``sem_dim``: D of the template vectors (0:
    none); ``embed_dim``: learned embedding size; ``channels``: convolution channels per kernel
    width; ``kernels``: the widths; ``hidden``: GRU state size; ``layers``: GRU layers Q;
    ``dropout``: after the convolution, between layers and in the head; ``lambda_tc``,
    ``lambda_reg``: weights of Eq. 14 and of the L2 term in Eq. 12; ``feature_clip``: the
    standardised numeric features are clipped to +-this before the head (0: not clipped);
    ``head_semantic``: the head also reads the window's semantic vector (``forward``'s
    ``semantic``; ignored when ``sem_dim`` is 0); ``event_vectors``: the convolution reads
    each event's own template vector when ``forward`` is given them (module docstring).
    A z-score far outside what training showed (a period whose sessions are cut shorter, a
    night of altered lines) otherwise drives the logit on its own: on the dev hold-outs of
    ``logcrnn evaluate --dev`` clipping at 3 raised the CRNN's F1 from 0.36-0.38 to
    0.62-0.67 on HDFS_100k chrono; on BGL_20k chrono its ROC-AUC rose and its F1 went up once
    and down twice (docs/RESULTS.md).  The window's semantic vector in the head raised the
    CRNN's mean dev F1 over three seeds (``tools/dev_variants.py``) on BGL_2k chrono from
    0.71 to 0.87, on BGL_20k chrono from 0.39 to 0.47 and on HDFS_100k chrono from 0.61 to
    0.63 (docs/RESULTS.md).  Each event's own vector raised the CRNN's dev ROC-AUC on
    BGL_20k chrono in each of five seeds (0.80-0.90 to 0.89-0.92) and left HDFS_100k and
    BGL_2k level (docs/RESULTS.md).  Models saved before these settings existed load with
    ``feature_clip`` 0, ``head_semantic`` false and ``event_vectors`` false.
    """

    vocab_size: int
    seq_len: int
    n_features: int
    sem_dim: int
    embed_dim: int = 32
    channels: int = 32
    kernels: tuple[int, ...] = (2, 3, 5)
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    lambda_tc: float = 0.01
    lambda_reg: float = 1e-5
    feature_clip: float = 3.0
    head_semantic: bool = True
    event_vectors: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        positive = ("vocab_size", "seq_len", "embed_dim", "channels", "hidden", "layers")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"CRNN config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_features", "sem_dim"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"CRNN config: {name} must be >= 0, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ConfigError("CRNN config: vocab_size must count PAD and UNKNOWN (>= 2)")
        if not self.kernels or min(self.kernels) < 1:
            raise ConfigError(f"CRNN config: kernels must be positive widths, got {self.kernels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"CRNN config: dropout must be in [0, 1), got {self.dropout}")
        if self.lambda_tc < 0 or self.lambda_reg < 0:
            raise ConfigError("CRNN config: lambda_tc and lambda_reg must be >= 0")
        if not self.feature_clip >= 0:
            raise ConfigError(f"CRNN config: feature_clip must be >= 0, got {self.feature_clip}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``kernels`` as a list)."""
        d = asdict(self)
        d["kernels"] = list(self.kernels)
        return d

    @classmethod
    def from_saved(cls, d: Mapping[str, Any]) -> CRNNConfig:
        """:meth:`from_dict` of a saved model's config: keys added since it was saved take the
        value that reproduces the saved model's behaviour."""
        return cls.from_dict(
            {"feature_clip": 0.0, "head_semantic": False, "event_vectors": False, **d}
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CRNNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"CRNN config: unknown keys {unknown}; known: {sorted(known)}")
        values = dict(d)
        if "kernels" in values:
            values["kernels"] = tuple(values["kernels"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"CRNN config: {exc}") from exc


class CRNNOutput(NamedTuple):
    """``logit`` (B,) float32; ``attention`` (B, L) float32, a distribution over the valid
    positions, 0 on padding; ``top_states`` (B, L, H) top GRU layer outputs, 0 on padding."""

    logit: Tensor
    attention: Tensor
    top_states: Tensor


class _GatedGRULayer(nn.Module):
    """One recurrent layer of Eq. 7-10 (see the module docstring for the interpretation)."""

    def __init__(self, input_size: int, hidden: int, seq_len: int, residual: bool) -> None:
        super().__init__()
        self.hidden = hidden
        self.w_rz = nn.Linear(input_size, 2 * hidden)  # W_r, W_z and b_r, b_z
        self.w_h = nn.Linear(input_size, hidden)  # W_h and b_h
        self.u_rz = nn.Linear(hidden, 2 * hidden, bias=False)  # U_r, U_z
        self.u_h = nn.Linear(hidden, hidden, bias=False)  # U_h
        self.attention_mask = nn.Parameter(torch.zeros(hidden))  # A^q (Eq. 7)
        self.selection_logit = nn.Parameter(torch.zeros(hidden))  # S^q (Eq. 8)
        self.drift = nn.Parameter(torch.zeros(seq_len, hidden))  # D_t^q (Eq. 9)
        self.norm = nn.LayerNorm(hidden)  # eta = tanh(LayerNorm(.)) (Eq. 9)
        self.alpha = nn.Parameter(torch.ones(()))  # Eq. 10
        self.beta = nn.Parameter(torch.full((), 0.5)) if residual else None

    def forward(self, x: Tensor, below: Tensor | None, steps: int) -> Tensor:
        """(B, T, I) inputs, (B, T, H) lower layer or None -> (B, T, H) layer outputs.

        Only the first ``steps`` positions are computed (``steps <= T``); later rows are 0.
        """
        batch, length, _ = x.shape
        h_size = self.hidden
        # the input projections of every step at once, unbound once: indexing step t inside
        # the loop would make autograd allocate and fill a full-size gradient per step
        xs = x[:, :steps]
        gx_rz = self.w_rz(xs).unbind(1)  # steps x (B, 2H)
        gx_h = (self.w_h(xs) + self.drift[:steps]).unbind(1)  # steps x (B, H)
        select = torch.sigmoid(self.selection_logit)
        g = x.new_zeros(batch, h_size)
        states = []
        for t in range(steps):
            r, z = torch.sigmoid(gx_rz[t] + self.u_rz(g)).chunk(2, dim=1)
            r = r + self.attention_mask  # Eq. 7
            z = z * select  # Eq. 8
            cand = torch.tanh(self.norm(gx_h[t] + self.u_h(r * g)))  # Eq. 9
            g = g + z * (cand - g)  # (1 - z) * g + z * cand
            states.append(g)
        out = self.alpha * torch.stack(states, dim=1)  # Eq. 10, first term
        if below is not None and self.beta is not None:
            out = out + self.beta * below[:, :steps]  # Eq. 10, cross-layer residual
        if steps < length:
            out = F.pad(out, (0, 0, 0, length - steps))
        return out


class CRNN(nn.Module):
    """Convolutional recurrent anomaly classifier of the seed paper (module docstring).

    Parameters
    ----------
    config
        Sizes and loss weights.
    template_vectors
        (vocab_size, sem_dim) float semantic vector per vocabulary index, stored as a frozen
        buffer (saved with the weights); zeros when None.
    """

    template_vectors: Tensor

    def __init__(self, config: CRNNConfig, template_vectors: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        shape = (config.vocab_size, config.sem_dim)
        if template_vectors is None:
            table = torch.zeros(shape, dtype=torch.float32)
        else:
            vectors = np.asarray(template_vectors, dtype=np.float32)
            if vectors.shape != shape:
                raise DataError(
                    f"CRNN: template vectors of shape {vectors.shape}, the config needs {shape} "
                    "(vocab_size, sem_dim)"
                )
            if vectors.size and not np.isfinite(vectors).all():
                raise DataError("CRNN: template vectors contain NaN or infinite values")
            table = torch.from_numpy(vectors.copy())
        self.register_buffer("template_vectors", table)
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        in_dim = config.embed_dim + config.sem_dim
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, config.channels, k) for k in config.kernels)
        self.conv_acts = nn.ModuleList(nn.PReLU(config.channels) for _ in config.kernels)
        conv_dim = config.channels * len(config.kernels)
        self.grus = nn.ModuleList(
            _GatedGRULayer(
                conv_dim if q == 0 else config.hidden, config.hidden, config.seq_len, q > 0
            )
            for q in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.attn_w = nn.Linear(config.hidden, config.hidden)
        self.attn_v = nn.Linear(config.hidden, 1, bias=False)
        nn.init.zeros_(self.attn_v.weight)  # attention starts as the mean over valid steps
        self.task_w = nn.Linear(config.hidden, config.hidden)
        self.task_v = nn.Linear(config.hidden, 1, bias=False)
        head_sem = config.sem_dim if config.head_semantic else 0
        self.head_hidden = nn.Linear(config.hidden + config.n_features + head_sem, config.hidden)
        self.head_out = nn.Linear(config.hidden, 1)

    def valid_mask(self, length: Tensor, seq_len: int) -> Tensor:
        """(B,) int64 lengths -> (B, L) bool, True at positions < max(min(length, L), 1)."""
        eff = length.clamp(min=1, max=seq_len)
        return torch.arange(seq_len, device=length.device)[None, :] < eff[:, None]

    def forward(
        self,
        sequence: Tensor,
        length: Tensor,
        features: Tensor,
        semantic: Tensor | None = None,
        event_vectors: Tensor | None = None,
    ) -> CRNNOutput:
        """(B, L) int64 indices, (B,) int64 lengths, (B, F) float32 and, when the head reads
        them (``head_semantic``), (B, D) float32 window semantic vectors and, optionally,
        (B, L, D) float32 vectors of each event's own template (``event_vectors``) ->
        :class:`CRNNOutput`.

        Positions ``>= min(length, L)`` are padding: their content does not affect any output.
        """
        cfg = self.config
        batch, seq_len = sequence.shape
        if seq_len != cfg.seq_len:
            raise DataError(f"CRNN: sequences of length {seq_len}, the model takes {cfg.seq_len}")
        if features.shape[-1] != cfg.n_features:
            raise DataError(
                f"CRNN: {features.shape[-1]} numeric features, the model takes {cfg.n_features}"
            )
        if sequence.numel() and (int(sequence.max()) >= cfg.vocab_size or int(sequence.min()) < 0):
            raise DataError(f"CRNN: vocabulary index outside [0, {cfg.vocab_size})")
        eff = length.clamp(min=1, max=seq_len)
        # the recurrent layers run the batch's first `steps` positions: later ones are
        # padding in every window.  Without autograd (scoring, validation) every stage runs
        # on those `span` positions only and the outputs are padded back to L at the end; with
        # it the convolution and attention keep all L, so the gradients, and the weights
        # training gives, stay those of the full-length computation (a shorter span changes
        # their rounding, not what any output reads).
        steps = int(eff.max()) if batch else 1
        span = seq_len if torch.is_grad_enabled() else steps
        mask = self.valid_mask(length, seq_len)[:, :span]  # (B, T)
        seq = sequence[:, :span].masked_fill(~mask, 0)

        x = self.embedding(seq)  # Eq. 1: (B, T, E)
        if cfg.sem_dim:
            if event_vectors is not None and cfg.event_vectors:
                if tuple(event_vectors.shape) != (batch, seq_len, cfg.sem_dim):
                    raise DataError(
                        f"CRNN: event vectors of shape {tuple(event_vectors.shape)}, the model "
                        f"takes (B, {cfg.seq_len}, {cfg.sem_dim})"
                    )
                sem = event_vectors[:, :span].to(x.dtype)
            else:
                sem = self.template_vectors[seq]
            x = torch.cat([x, sem], dim=-1)  # Eq. 2: (B, T, E + D)
        x = x * mask.unsqueeze(-1).to(x.dtype)

        xc = x.transpose(1, 2)  # (B, E + D, T)
        branches = []
        for conv_k, act, k in zip(self.convs, self.conv_acts, cfg.kernels, strict=True):
            # "same" length: (k - 1) // 2 zeros before, k // 2 after (even widths look ahead)
            branches.append(act(conv_k(F.pad(xc, ((k - 1) // 2, k // 2)))))
        conv = torch.cat(branches, dim=1)
        layer_in = self.dropout(conv.transpose(1, 2))  # Eq. 6: (B, T, C * K)

        rows = torch.arange(batch, device=sequence.device)
        outs: list[Tensor] = []
        for q, gru in enumerate(self.grus):
            outs.append(gru(layer_in, outs[-1] if outs else None, steps))  # (B, T, H)
            if q + 1 < len(self.grus):
                layer_in = self.dropout(outs[-1])
        finals = [out[rows, eff - 1] for out in outs]  # h_T^(q): Q x (B, H)
        top = outs[-1] * mask.unsqueeze(-1).to(outs[-1].dtype)  # (B, T, H)

        scores = self.attn_v(torch.tanh(self.attn_w(top))).squeeze(-1)  # (B, T)
        scores = scores.clamp(-_SCORE_CLIP, _SCORE_CLIP).masked_fill(~mask, float("-inf"))
        attention = torch.softmax(scores, dim=1)
        pooled = torch.bmm(attention.unsqueeze(1), top).squeeze(1)  # (B, H)

        cands = torch.stack([*finals, pooled], dim=1)  # (B, Q + 1, H)
        xi = torch.softmax(self.task_v(torch.tanh(self.task_w(cands))), dim=1)  # (B, Q + 1, 1)
        fused = (xi * cands).sum(dim=1)  # Eq. 11: (B, H)

        numeric = features.to(fused.dtype)
        if cfg.feature_clip > 0:
            numeric = numeric.clamp(-cfg.feature_clip, cfg.feature_clip)
        parts = [fused, numeric] if cfg.n_features else [fused]
        if cfg.head_semantic and cfg.sem_dim:
            if semantic is None or tuple(semantic.shape) != (batch, cfg.sem_dim):
                got = None if semantic is None else tuple(semantic.shape)
                raise DataError(
                    f"CRNN: the head reads the windows' semantic vectors, (B, {cfg.sem_dim}); "
                    f"got {got}"
                )
            parts.append(semantic.to(fused.dtype))
        head_in = torch.cat(parts, dim=1) if len(parts) > 1 else fused
        hidden = self.dropout(F.silu(self.head_hidden(head_in)))
        logit = self.head_out(hidden).squeeze(-1)
        if span < seq_len:
            attention = F.pad(attention, (0, seq_len - span))
            top = F.pad(top, (0, 0, 0, seq_len - span))
        return CRNNOutput(logit=logit, attention=attention, top_states=top)

    def training_table(self) -> np.ndarray | None:
        """The template table training batches take their event vectors from before ids are
        replaced by UNKNOWN (:func:`logcrnn.model.data.with_table_vectors`), so a replaced
        event keeps its vector; None when the model does not read each event's own vector."""
        if not (self.config.event_vectors and self.config.sem_dim):
            return None
        return self.template_vectors.detach().cpu().numpy()

    def regularised_parameters(self) -> list[Tensor]:
        """Weight matrices and convolution kernels penalised by ``L_SR`` (Eq. 12): every
        ``weight`` of 2 or more dimensions but the embedding's (not the drift ``D``)."""
        return [
            p
            for name, p in self.named_parameters()
            if name.endswith("weight") and p.dim() >= 2 and not name.startswith("embedding.")
        ]

    def to_bytes(self) -> bytes:
        """Config and weights (the template table included) as one ``torch.save`` blob."""
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"config": self.config.to_dict(), "state": state}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, device: torch.device | str | None = None) -> CRNN:
        """Inverse of :meth:`to_bytes`; the model is returned in eval mode on ``device``."""
        try:
            saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            config = CRNNConfig.from_saved(saved["config"])
            model = cls(config)
            model.load_state_dict(saved["state"])
        except Exception as exc:  # UnpicklingError, EOFError, KeyError, RuntimeError: a bad blob
            raise DataError(f"CRNN: cannot load the saved model: {exc}") from exc
        model.eval()
        return model.to(device) if device is not None else model


def crnn_output(model: CRNN, batch: Mapping[str, Tensor]) -> CRNNOutput:
    """The CRNN on a batch dict of tensors (its ``semantic`` and ``event_vectors`` when
    present), as training, validation and scoring all call it."""
    return model(batch["sequence"], batch["length"], batch["features"], batch.get("semantic"),
                 batch.get("event_vectors"))  # fmt: skip


def crnn_score(model: CRNN, batch: Mapping[str, Tensor]) -> Tensor:
    """``sigmoid`` of the CRNN's logit for a batch dict (:func:`crnn_output`)."""
    return torch.sigmoid(crnn_output(model, batch).logit)


def temporal_consistency(top_states: Tensor, mask: Tensor) -> Tensor:
    """Eq. 14: (B, L, H) states, (B, L) bool valid -> () mean over windows with T >= 2."""
    pair = mask[:, 1:] & mask[:, :-1]  # (B, L - 1)
    diff = (top_states[:, 1:] - top_states[:, :-1]).pow(2).sum(-1)  # (B, L - 1)
    n_pairs = pair.sum(1)
    per_window = (diff * pair.to(diff.dtype)).sum(1) / n_pairs.clamp(min=1).to(diff.dtype)
    has = n_pairs > 0
    if not bool(has.any()):
        return top_states.new_zeros(())
    return per_window[has].mean()


def crnn_loss(
    model: CRNN,
    out: CRNNOutput,
    label: Tensor,
    class_weights: tuple[float, float],
    length: Tensor | None = None,
) -> Tensor:
    """Eq. 12-14: class-weighted BCE + lambda_tc * L_TC + lambda_reg * L_SR -> () tensor.

    ``label``: (B,) 0/1 (float or int; rows labelled -1 are ignored by the BCE term);
    ``class_weights``: (pi_0, pi_1); ``length``: (B,) int64 lengths giving the valid positions
    of Eq. 14 (when None, the positions with non-zero attention, the same set).
    """
    pi_0, pi_1 = class_weights
    y = label.to(out.logit.dtype)
    known = (y >= 0).to(y.dtype)
    weight = torch.where(y > 0.5, pi_1, pi_0).to(y.dtype) * known
    bce = F.binary_cross_entropy_with_logits(out.logit, y.clamp(0, 1), reduction="none")
    ce = (bce * weight).sum() / known.sum().clamp(min=1.0)
    loss = ce
    cfg = model.config
    if cfg.lambda_tc:
        if length is not None:
            mask = model.valid_mask(length, out.top_states.shape[1])
        else:
            mask = out.attention > 0
        loss = loss + cfg.lambda_tc * temporal_consistency(out.top_states, mask)
    if cfg.lambda_reg:
        reg = sum((p.pow(2).sum() for p in model.regularised_parameters()), ce.new_zeros(()))
        loss = loss + cfg.lambda_reg * reg
    return loss


def class_weights(labels: np.ndarray) -> tuple[float, float]:
    """Balanced class weights ``(pi_0, pi_1) = (n / (2 n_0), n / (2 n_1))`` of Eq. 13.

    ``labels``: (n,) 0/1 (-1, unknown, is ignored).  Both classes must be present.
    """
    y = np.asarray(labels).ravel()
    n0 = int((y == 0).sum())
    n1 = int((y == 1).sum())
    if n0 == 0 or n1 == 0:
        raise DataError(
            f"class weights: the training windows need both classes, got {n0} normal and "
            f"{n1} anomalous"
        )
    n = n0 + n1
    return n / (2.0 * n0), n / (2.0 * n1)
