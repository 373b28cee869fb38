"""The model artifact: one versioned folder per trained model, and a ``CURRENT`` pointer.

Layout under a models folder (``<lake root>/models/<source>`` by default)::

    CURRENT                      the current version's folder name (one line)
    <version>/model.json         everything but the weights (see :class:`ArtifactMeta`)
    <version>/weights.pt         the CRNN's state_dict (torch.save of tensors only)
    <version>/template_vectors.npy   (V, D) float32 semantic vector per vocabulary index

:func:`save_artifact` writes a version into a hidden temporary folder, renames it into place
(atomic on a POSIX file system) and only then replaces ``CURRENT`` (write a temporary file,
``os.replace``), so a run that fails at any point leaves the previous current model in
place and never a half-written one.  :func:`load_artifact` runs no code from the folder:
the weights are read with ``torch.load(weights_only=True)``, the vectors with
``np.load(allow_pickle=False)`` and the rest is JSON; ``model.json`` records each file's
SHA-256, so a truncated or swapped file is a :class:`~logcrnn.errors.DataError` naming it.
Plain PyTorch / numpy (no Spark).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from logcrnn.errors import ConfigError, DataError, UsageError
from logcrnn.model.crnn import CRNN, CRNNConfig

log = logging.getLogger(__name__)

FORMAT = "logcrnn-crnn"
FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
VECTORS_FILE = "template_vectors.npy"
CURRENT_FILE = "CURRENT"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ArtifactMeta:
    """What ``model.json`` holds besides the file checksums.

    ``vocabulary``: template id -> vocabulary index (2 and up; 0 padding, 1 unknown);
    ``templates``: template id -> template text; ``feature_names`` / ``feature_index``: the
    chosen numeric features and their positions in ``gold.windows.features_std``;
    ``stats_night``: the ``gold.feature_stats`` partition the windows were standardised with,
    ``feature_mean`` / ``feature_std`` its mean and std of the chosen features (raw features
    are standardised as ``(x - mean) / std``); ``threshold``: scores (P(anomalous)) at or
    above it are anomalies, calibrated for best F1 on the validation slice; ``metrics``:
    training and validation figures; ``data_versions``: Delta table versions read (e.g.
    ``{"gold.windows": 12}``); ``training``: the period, engine, workers and settings.
    """

    version: str
    source: str
    config: CRNNConfig
    vocabulary: Mapping[str, int]
    templates: Mapping[str, str]
    feature_names: tuple[str, ...]
    feature_index: tuple[int, ...]
    stats_night: str
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    threshold: float
    metrics: Mapping[str, Any] = field(default_factory=dict)
    data_versions: Mapping[str, int] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def __post_init__(self) -> None:
        if not _VERSION.match(self.version):
            raise UsageError(f"model version {self.version!r}: letters, digits, . _ - only")
        n = len(self.feature_names)
        lengths = (len(self.feature_index), len(self.feature_mean), len(self.feature_std))
        if lengths != (n, n, n) or n != self.config.n_features:
            raise DataError(
                f"model {self.version}: {n} feature names, {lengths} indices/means/stds, the "
                f"model takes {self.config.n_features} features"
            )
        if len(self.vocabulary) + 2 != self.config.vocab_size:
            raise DataError(
                f"model {self.version}: vocabulary of {len(self.vocabulary)} templates, the "
                f"model's vocab_size is {self.config.vocab_size} (vocabulary + 2)"
            )

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["config"] = self.config.to_dict()
        for key in ("vocabulary", "templates", "metrics", "data_versions", "training"):
            d[key] = dict(d[key])
        for key in ("feature_names", "feature_index", "feature_mean", "feature_std"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> ArtifactMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(k for k in known - set(d) if k not in _OPTIONAL)
        if missing:
            raise DataError(f"{where}: not a logcrnn model description (missing {missing})")
        try:
            return cls(
                version=str(d["version"]),
                source=str(d["source"]),
                config=CRNNConfig.from_saved(d["config"]),
                vocabulary={str(k): int(v) for k, v in dict(d["vocabulary"]).items()},
                templates={str(k): str(v) for k, v in dict(d["templates"]).items()},
                feature_names=tuple(str(x) for x in d["feature_names"]),
                feature_index=tuple(int(x) for x in d["feature_index"]),
                stats_night=str(d["stats_night"]),
                feature_mean=tuple(float(x) for x in d["feature_mean"]),
                feature_std=tuple(float(x) for x in d["feature_std"]),
                threshold=float(d["threshold"]),
                metrics=dict(d.get("metrics") or {}),
                data_versions={
                    str(k): int(v) for k, v in dict(d.get("data_versions") or {}).items()
                },
                training=dict(d.get("training") or {}),
                created_at=str(d.get("created_at", "")),
            )
        except (ConfigError, UsageError, DataError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: invalid model description: {exc}") from exc


_OPTIONAL = frozenset({"metrics", "data_versions", "training", "created_at"})


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact: its folder, description, template table and the model (eval mode)."""

    path: Path
    meta: ArtifactMeta
    template_vectors: np.ndarray
    model: CRNN

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def source(self) -> str:
        return self.meta.source

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    @property
    def stats_night(self) -> date:
        """The ``gold.feature_stats`` night the scored windows must be built with."""
        return date.fromisoformat(self.meta.stats_night)

    @property
    def feature_index(self) -> tuple[int, ...]:
        """Positions of the model's features in ``gold.windows.features_std``."""
        return self.meta.feature_index

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.feature_names


def models_folder(lake_root: str, source: str, models_dir: str = "") -> Path:
    """Where ``source``'s artifacts live: ``<models_dir>/<source>``, ``models_dir`` defaulting
    (empty) to ``<lake_root>/models`` (``train.models_dir``).  It must be a POSIX path (local
    or mounted): versions are renamed into place, which object stores cannot do atomically.
    """
    root = models_dir or f"{str(lake_root).rstrip('/')}/models"
    parsed = urlparse(root)
    if len(parsed.scheme) > 1 and parsed.scheme != "file":
        raise UsageError(
            f"models folder {root}: set train.models_dir to a local or mounted path (artifacts "
            "are written with an atomic rename)"
        )
    return Path(parsed.path if parsed.scheme == "file" else root) / source


def current_artifact(lake_root: str, source: str, models_dir: str = "") -> Path:
    """The folder of ``source``'s current model (see :func:`models_folder`); a
    :class:`DataError` when none was trained (or ``CURRENT`` is damaged)."""
    folder = models_folder(lake_root, source, models_dir)
    version = current_version(folder)
    if version is None:
        raise DataError(f"no current model for {source} in {folder}: run logcrnn train")
    return folder / version


def new_version(state_dict: Mapping[str, torch.Tensor], now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<8 hex of the weights' SHA-256>``: sortable by time, and two
    different models saved in the same second still get different names."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(_weights_bytes(state_dict)).hexdigest()[:8]}"


def _weights_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, buf)
    return buf.getvalue()


def _vectors_bytes(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_artifact(
    models_dir: str | Path,
    meta: ArtifactMeta,
    state_dict: Mapping[str, torch.Tensor],
    template_vectors: np.ndarray,
    make_current: bool = True,
) -> Path:
    """Write ``models_dir/<meta.version>`` atomically and (by default) point ``CURRENT`` at it.

    ``state_dict``: the CRNN's (checked against ``meta.config`` before anything is written);
    ``template_vectors``: (vocab_size, sem_dim).  Returns the version's folder.  An existing
    version of the same name is a :class:`UsageError`; on any failure the temporary folder is
    removed and ``CURRENT`` is unchanged.
    """
    root = Path(models_dir)
    vectors = np.asarray(template_vectors, dtype=np.float32)
    _check_state(CRNN(meta.config, vectors), state_dict, f"model {meta.version}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / meta.version
    if final.exists():
        raise UsageError(f"{final}: a model of this version already exists")
    weights = _weights_bytes(state_dict)
    vec_bytes = _vectors_bytes(vectors)
    created = meta.created_at or datetime.now(UTC).isoformat(timespec="seconds")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **dataclasses.replace(meta, created_at=created).to_json(),
        "files": {
            WEIGHTS_FILE: hashlib.sha256(weights).hexdigest(),
            VECTORS_FILE: hashlib.sha256(vec_bytes).hexdigest(),
        },
    }
    staging = root / f".tmp-{meta.version}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        _write(staging / WEIGHTS_FILE, weights)
        _write(staging / VECTORS_FILE, vec_bytes)
        _write(staging / META_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())
        _fsync_dir(staging)
        os.rename(staging, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if make_current:
        set_current(root, meta.version)
    log.info("model %s saved in %s%s", meta.version, final, " (current)" if make_current else "")
    return final


def set_current(models_dir: str | Path, version: str) -> None:
    """Point ``models_dir/CURRENT`` at an existing, loadable version (atomic replace)."""
    root = Path(models_dir)
    read_meta(root / version)  # never point at something that does not load
    tmp = root / f".CURRENT-{uuid.uuid4().hex[:8]}"
    try:
        _write(tmp, f"{version}\n".encode())
        os.replace(tmp, root / CURRENT_FILE)
        _fsync_dir(root)
    finally:
        tmp.unlink(missing_ok=True)


def current_version(models_dir: str | Path) -> str | None:
    """The version ``CURRENT`` names, or None when there is no ``CURRENT`` yet."""
    pointer = Path(models_dir) / CURRENT_FILE
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{pointer}: unreadable model pointer: {exc}") from exc
    if not _VERSION.match(name):
        raise DataError(f"{pointer}: does not name a model version ({name[:40]!r})")
    return name


def resolve(path: str | Path) -> Path:
    """A version folder, or a models folder with ``CURRENT`` -> the version folder."""
    p = Path(path)
    if (p / META_FILE).exists() or not (p / CURRENT_FILE).exists():
        return p
    version = current_version(p)
    if version is None:
        raise DataError(f"{p / CURRENT_FILE}: not a file")
    return p / version


def read_meta(path: str | Path) -> ArtifactMeta:
    """The description of the artifact at ``path`` (weights not loaded)."""
    meta, _ = _read_doc(resolve(path))
    return meta


def _read_doc(folder: Path) -> tuple[ArtifactMeta, dict[str, str]]:
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise DataError(f"{folder}: no model artifact here (not a folder)")
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing: {folder} is not a model artifact")
    try:
        doc = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"{meta_path}: not a logcrnn CRNN artifact (format {fmt!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{meta_path}: artifact format version {doc.get('format_version')!r}, this "
            f"logcrnn reads version {FORMAT_VERSION}"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or not {WEIGHTS_FILE, VECTORS_FILE} <= set(files):
        raise DataError(f"{meta_path}: no checksums for {WEIGHTS_FILE} and {VECTORS_FILE}")
    body = {k: v for k, v in doc.items() if k not in ("format", "format_version", "files")}
    return ArtifactMeta.from_json(body, str(meta_path)), {k: str(v) for k, v in files.items()}


def _read_checked(path: Path, sha256: str) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: missing from the model artifact")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"{path}: corrupt (its checksum differs from the one in {META_FILE})")
    return data


def _check_state(model: CRNN, state: Mapping[str, Any], where: str) -> None:
    expected = model.state_dict()
    if set(state) != set(expected):
        extra = sorted(set(state) - set(expected))[:3]
        missing = sorted(set(expected) - set(state))[:3]
        raise DataError(f"{where}: weights do not fit the model (extra {extra}, missing {missing})")
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise DataError(
                f"{where}: weight {key} has shape {shape}, expected {tuple(value.shape)}"
            )


def load_artifact(path: str | Path, device: torch.device | str | None = None) -> ModelArtifact:
    """Load a version folder (or the ``CURRENT`` one of a models folder) for scoring.

    Any missing, truncated, foreign or code-bearing file is a :class:`DataError` naming it.
    The model is returned in eval mode on ``device`` (CPU by default).
    """
    folder = resolve(path)
    meta, sums = _read_doc(folder)
    weights_path, vectors_path = folder / WEIGHTS_FILE, folder / VECTORS_FILE
    vec_bytes = _read_checked(vectors_path, sums[VECTORS_FILE])
    try:
        vectors = np.load(io.BytesIO(vec_bytes), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{vectors_path}: not a plain numeric .npy array: {exc}") from exc
    cfg = meta.config
    if vectors.dtype != np.float32 or vectors.shape != (cfg.vocab_size, cfg.sem_dim):
        raise DataError(
            f"{vectors_path}: {vectors.dtype} array of shape {vectors.shape}, expected float32 "
            f"{(cfg.vocab_size, cfg.sem_dim)}"
        )
    raw = _read_checked(weights_path, sums[WEIGHTS_FILE])
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...: all mean "bad file"
        raise DataError(
            f"{weights_path}: not a plain tensor state_dict: {_first_line(exc)}"
        ) from exc
    if not isinstance(state, Mapping):
        raise DataError(f"{weights_path}: holds a {type(state).__name__}, not a state_dict")
    model = CRNN(cfg, vectors)
    _check_state(model, state, str(weights_path))
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise DataError(f"{weights_path}: {_first_line(exc)}") from exc
    if not torch.equal(model.template_vectors, torch.from_numpy(vectors)):
        raise DataError(f"{weights_path}: its template table differs from {vectors_path}")
    model.eval()
    if device is not None:
        model = model.to(device)
    return ModelArtifact(path=folder, meta=meta, template_vectors=vectors, model=model)


def list_versions(models_dir: str | Path) -> list[str]:
    """Version folders under ``models_dir``, oldest first (temporary folders excluded)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


# ------------------------------------------------------------------------------------------
# the versions of a models folder: list, choose the current one, prune


@dataclass(frozen=True)
class VersionInfo:
    """One version folder of a models folder, as ``logcrnn models`` lists it.

    ``error``: why its ``model.json`` does not load (the other fields are then empty).
    """

    version: str
    current: bool
    created_at: str = ""
    train_from: str | None = None
    train_to: str | None = None
    train_windows: int | None = None
    valid_f1: float | None = None
    valid_roc_auc: float | None = None
    threshold: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe_versions(models_dir: str | Path) -> list[VersionInfo]:
    """Every version in ``models_dir``, newest first (by creation time, then name)."""
    root = Path(models_dir)
    current = current_version(root)
    out = [_describe(root / name, current) for name in list_versions(root)]
    return sorted(out, key=lambda v: (v.created_at, v.version), reverse=True)


def describe_version(models_dir: str | Path, version: str) -> VersionInfo:
    """The version ``version`` of ``models_dir`` as :func:`describe_versions` lists it."""
    root = Path(models_dir)
    return _describe(root / version, current_version(root))


def _describe(folder: Path, current: str | None) -> VersionInfo:
    try:
        meta = read_meta(folder)
    except DataError as exc:
        return VersionInfo(folder.name, folder.name == current, error=str(exc))
    valid = dict(meta.metrics.get("valid") or {})
    auc = valid.get("roc_auc")
    windows = meta.training.get("train_windows")
    return VersionInfo(
        version=meta.version,
        current=meta.version == current,
        created_at=meta.created_at,
        train_from=meta.training.get("train_from"),
        train_to=meta.training.get("train_to"),
        train_windows=None if windows is None else int(windows),
        valid_f1=None if valid.get("f1") is None else float(valid["f1"]),
        valid_roc_auc=None if auc is None else float(auc),
        threshold=meta.threshold,
    )


def use_version(models_dir: str | Path, version: str) -> ArtifactMeta:
    """Make ``version`` the current model (a roll-back, or a model trained ``--no-promote``).

    The version is loaded in full first (every checksum, the weights into a CRNN): a damaged
    one is a :class:`DataError` and ``CURRENT`` is unchanged.
    """
    root = Path(models_dir)
    if not _VERSION.match(version):
        raise UsageError(f"model version {version!r}: letters, digits, . _ - only")
    if not (root / version).is_dir():
        known = ", ".join(v.version for v in describe_versions(root)[:5]) or "none"
        raise UsageError(f"no model version {version} in {root} (newest: {known})")
    meta = load_artifact(root / version).meta
    set_current(root, version)
    log.info("model %s is now current in %s", version, root)
    return meta


def prune_versions(models_dir: str | Path, keep: int, dry_run: bool = False) -> list[str]:
    """Delete all but the newest ``keep`` versions, never the current one; returns the
    versions deleted (or, ``dry_run``, that would be)."""
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least the newest version")
    root = Path(models_dir)
    older = [v for v in describe_versions(root)[keep:] if not v.current]
    for v in older if not dry_run else []:
        # renamed out of sight first, so no reader finds a half-deleted version
        trash = root / f".deleting-{v.version}-{uuid.uuid4().hex[:8]}"
        os.rename(root / v.version, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if older and not dry_run:
        _fsync_dir(root)
        log.info("%d model version(s) deleted from %s", len(older), root)
    return [v.version for v in older]
