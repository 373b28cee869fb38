"""Layered YAML configuration parsed into frozen dataclasses.

A config file may name a parent with ``extends: base.yaml`` (relative to itself); the child's
mappings are merged over the parent's, key by key.  ``--set a.b=c`` overrides are applied last,
their values parsed as YAML scalars (``--set spark.conf.spark.sql.shuffle.partitions=8``).
Unknown keys, wrong types and missing files raise :class:`~logcrnn.errors.ConfigError` naming
the key or path.

Per-source settings (log format, timestamp, session keys) live one file per source in
``<sources_dir>/<name>.yaml`` and are loaded with :func:`load_source`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from logcrnn.errors import ConfigError, UsageError

T = TypeVar("T")

#: Where the repository's own conf/ folder is (used when the working directory has none).
PACKAGE_CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DEFAULT_CONF = "conf/local.yaml"


def _frozen_map(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class SparkSettings:
    """How the session is built.  ``master`` stays unset on clusters: spark-submit decides.

    ``jvm_functions``: add the project's jar of Java functions to ``spark.jars`` and register
    them (when ``make setup`` built it); false runs Spark's built-ins in their place.
    """

    master: str | None = None
    app_prefix: str = "logcrnn"
    conf: Mapping[str, Any] = field(default_factory=_frozen_map)
    jvm_functions: bool = True


@dataclass(frozen=True)
class LakeSettings:
    """Where tables live and how they are committed.

    ``backend``: ``auto`` (native Delta when the Delta extension is loaded, else delta-rs),
    ``delta-spark`` or ``delta-rs``.  ``raw_root``: where ``logcrnn nightly`` finds a night's
    raw files (``<raw_root>/<source>/<date>/``).
    """

    root: str = "lake"
    backend: str = "auto"
    raw_root: str = "raw"


def _check_share(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: expected a share in [0, 1], got {value}")


@dataclass(frozen=True)
class IngestSettings:
    """Raw-line ingestion limits.

    ``max_parse_bytes``: longer lines are stored whole but not run through the format regex
    (flagged ``line_too_long``), which bounds the regex cost of pathological input.
    ``malformed_warn``: a run whose share of lines that do not parse is larger is committed
    as always (every line kept, flagged) and logged as a warning: the source's format may
    have changed, and mining then reads whole lines, headers included (1: never).
    """

    max_parse_bytes: int = 65536
    malformed_warn: float = 0.05

    def __post_init__(self) -> None:
        _check_share("ingest.malformed_warn", self.malformed_warn)


@dataclass(frozen=True)
class MiningSettings:
    """Distributed template mining.

    ``shards``: how many partitions the distinct masked messages are mined in (each by its own
    Drain3 on an executor); 0 means twice the session's default parallelism.
    ``cache_lines``: keep the night's masked lines on the executors between the distinct pass
    and the events write (the project's Java row cache: the rows' bytes serialised and
    compressed, about 50 bytes an HDFS line of executor storage memory, the rest spilled to
    disk) instead of masking every line twice.
    """

    shards: int = 0
    cache_lines: bool = True


@dataclass(frozen=True)
class FeatureSettings:
    """Window features and feature selection (the same for every source).

    ``seq_len``: template sequences are truncated or padded (with 0) to this length.
    ``scales``: sub-window sizes (events) of the multi-scale statistics.
    ``neighbour_nights``: session and time windows of night D read nights D-n .. D+n, so a
    window that spans midnight is built whole, in the night of its first event.
    ``word2vec_size`` / ``word2vec_iterations``: the token embeddings of Eq. 1 (Spark MLlib).
    ``top_k``: features kept by selection; ``mi_bins``: quantile bins for mutual information;
    ``rf_trees`` / ``rf_depth``: the random forest; ``seed``: every random choice.
    ``nearest_template``: a template outside the model's vocabulary reads as the learned
    template one token edit away, if any (:func:`logcrnn.features.vocabulary_indices`).
    """

    seq_len: int = 50
    scales: Sequence[int] = (5, 10, 20, 50)
    neighbour_nights: int = 1
    word2vec_size: int = 16
    word2vec_iterations: int = 5
    top_k: int = 12
    mi_bins: int = 10
    rf_trees: int = 50
    rf_depth: int = 6
    seed: int = 42
    nearest_template: bool = False

    def __post_init__(self) -> None:
        if self.seq_len <= 0 or self.word2vec_size <= 0 or self.top_k <= 0:
            raise ConfigError("features: seq_len, word2vec_size and top_k must be positive")
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError("features.scales: expected positive sub-window sizes")
        if self.neighbour_nights < 0 or self.mi_bins < 2:
            raise ConfigError("features: neighbour_nights >= 0 and mi_bins >= 2 expected")


@dataclass(frozen=True)
class CRNNSettings:
    """The CRNN's sizes and loss weights (see :class:`logcrnn.model.crnn.CRNNConfig`; the
    vocabulary, sequence length, feature count and semantic size come from the data)."""

    embed_dim: int = 32
    channels: int = 32
    kernels: Sequence[int] = (2, 3, 5)
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    lambda_tc: float = 0.01
    lambda_reg: float = 1e-5
    feature_clip: float = 3.0
    head_semantic: bool = True
    event_vectors: bool = True


@dataclass(frozen=True)
class TrainSettings:
    """``logcrnn train``: the distributed engine, the training loop and where models go.

    ``engine``: ``horovod`` (``horovod.spark.run``, one Spark task per worker), ``local``
    (one in-process worker) or ``torch_distributor`` (``pyspark.ml.torch``'s
    TorchDistributor, local mode); ``np``: workers; ``threads``: torch threads per worker
    (0: the machine's cores / workers on it).  ``epochs``, ``batch_size`` (per worker),
    ``lr`` (one worker's; scaled by the workers), ``weight_decay``, ``patience`` (epochs
    without a lower validation loss), ``seed`` and ``unknown_rate`` (the share of training
    template ids replaced by the unknown id, so the model learns what an unseen template is)
    drive the loop; ``unknown_template_rate``: in every training batch, each distinct
    template is read as the unknown id in all its events with this probability (each event
    keeps its own vector), so the model learns to judge a template it does not know by its
    tokens, as every later night asks of it.  ``threshold_shrink``: the CRNN's threshold is
    this share of the way from the validation slice's best-F1 threshold to 0.5, the decision
    boundary of its class-balanced loss (0: the best-F1 threshold alone).  Both are 0 by
    default: docs/RESULTS.md has what they do on the dev hold-outs, with and without noise.
    ``valid_share`` of the
    labelled training windows, at most ``valid_max``, chosen by a hash of the window id,
    form the validation slice (early stopping, threshold); ``min_valid`` is the fewest a run
    accepts.  ``models_dir``: where artifacts go (empty: ``<lake root>/models``; each source
    in its own folder); ``mlflow_uri``: an MLflow tracking URI (empty: the
    ``MLFLOW_TRACKING_URI`` variable; neither: no MLflow).
    """

    engine: str = "horovod"
    np: int = 2
    threads: int = 0
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 42
    unknown_rate: float = 0.05
    unknown_template_rate: float = 0.0
    threshold_shrink: float = 0.0
    valid_share: float = 0.1
    valid_max: int = 20000
    min_valid: int = 20
    models_dir: str = ""
    mlflow_uri: str = ""
    crnn: CRNNSettings = field(default_factory=CRNNSettings)

    def __post_init__(self) -> None:
        if self.engine not in ("horovod", "local", "torch_distributor"):
            raise ConfigError(
                f"train.engine: expected horovod, local or torch_distributor, got {self.engine!r}"
            )
        if self.np < 1 or self.threads < 0:
            raise ConfigError("train: np must be >= 1 and threads >= 0")
        if min(self.epochs, self.batch_size, self.patience, self.valid_max, self.min_valid) < 1:
            raise ConfigError("train: epochs, batch_size, patience, valid_max, min_valid >= 1")
        if not 0.0 <= self.unknown_rate < 0.5:
            raise ConfigError(
                f"train.unknown_rate: expected 0 <= rate < 0.5, got {self.unknown_rate}"
            )
        if not 0.0 <= self.unknown_template_rate < 1.0:
            raise ConfigError(
                "train.unknown_template_rate: expected 0 <= rate < 1, "
                f"got {self.unknown_template_rate}"
            )
        if not 0.0 <= self.threshold_shrink <= 1.0:
            raise ConfigError(
                f"train.threshold_shrink: expected 0 <= share <= 1, got {self.threshold_shrink}"
            )
        if not 0.0 < self.valid_share < 0.5:
            raise ConfigError(
                f"train.valid_share: expected 0 < share < 0.5, got {self.valid_share}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("train: lr must be > 0 and weight_decay >= 0")

    def fit_settings(self) -> dict[str, Any]:
        """The training loop's settings (``logcrnn.model.fitting.FitSettings`` keys)."""
        keys = ("epochs", "batch_size", "lr", "patience", "seed", "weight_decay",
                "unknown_rate", "unknown_template_rate")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class ScoreSettings:
    """``logcrnn score``: how a night's scoring is reported.

    ``unseen_warn``: a night whose windows hold a larger share of events with templates the
    model was not trained on (vocabulary index unknown) is scored, and logged as a warning
    that the model may be out of date (1: never).
    """

    unseen_warn: float = 0.1

    def __post_init__(self) -> None:
        _check_share("score.unseen_warn", self.unseen_warn)


@dataclass(frozen=True)
class RetentionSettings:
    """``logcrnn maintain``: how long the lake keeps what.

    ``vacuum_hours``: files no current row lives in (replaced or dropped nights, files of a
    killed write) are deleted once they are this old; until then earlier table versions stay
    readable.  It must outlast the longest job, which may roll back to the version it started
    from.  ``bronze_raw_lines``, ``silver_events``, ``gold_windows``, ``gold_anomalies``: nights
    older than this many days before the maintained date are dropped from that table (0: kept
    for ever).  The other tables hold state later nights read (templates, miner state, counts,
    statistics, feature scores), are small, and are never dropped.  ``model_versions``: each
    source keeps its newest this many model versions, and its current one whatever its age
    (0: every version kept).
    """

    vacuum_hours: int = 168
    bronze_raw_lines: int = 0
    silver_events: int = 0
    gold_windows: int = 0
    gold_anomalies: int = 0
    model_versions: int = 0

    def __post_init__(self) -> None:
        if self.vacuum_hours < 0:
            raise ConfigError(f"retention.vacuum_hours: expected >= 0, got {self.vacuum_hours}")
        for f in dataclasses.fields(self):
            if f.name != "vacuum_hours" and getattr(self, f.name) < 0:
                raise ConfigError(
                    f"retention.{f.name}: expected >= 0 (0: keep all), got {getattr(self, f.name)}"
                )

    def keep_days(self) -> dict[str, int]:
        """``{table: days}`` of the tables whose old nights are dropped."""
        return {
            f.name.replace("_", ".", 1): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("vacuum_hours", "model_versions") and getattr(self, f.name) > 0
        }


@dataclass(frozen=True)
class Config:
    """The whole job configuration (one frozen tree)."""

    spark: SparkSettings = field(default_factory=SparkSettings)
    lake: LakeSettings = field(default_factory=LakeSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    mining: MiningSettings = field(default_factory=MiningSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    sources_dir: str = "sources"
    #: The file this config was loaded from (set by the loader, not by users).
    path: str = ""


@dataclass(frozen=True)
class SessionKey:
    """A session identifier found in the message text, e.g. HDFS block ids."""

    name: str
    regex: str


@dataclass(frozen=True)
class TimestampSpec:
    """How a source's header fields become a UTC timestamp.

    Either ``fields`` joined by ``sep`` and parsed with the Spark datetime ``format``, or
    ``epoch_field`` holding seconds since the epoch, or ``expr``: a Spark SQL expression over
    ``h.<Field>`` (the parsed header fields) and ``night`` (the ingest date) returning a
    timestamp.  Local wall-clock times are converted from ``timezone`` to UTC.
    """

    fields: Sequence[str] = ()
    format: str | None = None
    sep: str = " "
    epoch_field: str | None = None
    expr: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class LabelSpec:
    """An inline per-line label: ``field`` holds ``normal`` for normal lines."""

    field: str
    normal: str = "-"


@dataclass(frozen=True)
class MaskSpec:
    """A mask rule: every match of ``regex`` (Java syntax) becomes ``token``."""

    name: str
    regex: str
    token: str = "<*>"


@dataclass(frozen=True)
class DrainSpec:
    """Drain3's parameters for one source (see drain3's ``TemplateMinerConfig``)."""

    sim_th: float = 0.4
    depth: int = 4
    max_children: int = 100
    extra_delimiters: Sequence[str] = ()
    parametrize_numeric_tokens: bool = True


@dataclass(frozen=True)
class WindowsSpec:
    """How one source's events are cut into windows (``windows:`` in its source file).

    ``kind``: ``session`` (one window per session key, e.g. an HDFS block id), ``time``
    (``size_s`` seconds every ``step_s`` seconds, on a grid anchored at the epoch) or ``count``
    (``size`` events every ``step`` events).  Time and count windows are cut per ``by``:
    ``node`` (a node's events; events without a node fall back to the source) or ``source``.
    Events a session source cannot key (no session key in the line) go to ``fallback``
    windows (``time`` or ``count``) of their node or source, never nowhere.
    """

    kind: str = "count"
    by: str = "source"
    size_s: int = 21600
    step_s: int = 1800
    size: int = 20
    step: int = 5
    fallback: str = "count"

    def __post_init__(self) -> None:
        if self.kind not in ("session", "time", "count"):
            raise ConfigError(f"windows.kind: expected session, time or count, got {self.kind!r}")
        if self.fallback not in ("time", "count"):
            raise ConfigError(f"windows.fallback: expected time or count, got {self.fallback!r}")
        if self.by not in ("node", "source"):
            raise ConfigError(f"windows.by: expected node or source, got {self.by!r}")
        if min(self.size_s, self.step_s, self.size, self.step) <= 0:
            raise ConfigError("windows: sizes and steps must be positive")
        if self.size_s % self.step_s:
            raise ConfigError(
                f"windows.size_s ({self.size_s}) must be a multiple of step_s ({self.step_s})"
            )


@dataclass(frozen=True)
class SourceSpec:
    """One log source: its Loghub format string and how to read its fields.

    ``format`` uses Loghub's notation: ``<Field>`` placeholders, literal text between them as
    a regular expression in which runs of spaces match any whitespace.  ``field_patterns``
    overrides the pattern of single fields (Java regex, no capturing groups).
    """

    name: str
    format: str
    description: str = ""
    field_patterns: Mapping[str, str] = field(default_factory=_frozen_map)
    timestamp: TimestampSpec | None = None
    level: str | None = None
    component: str | None = None
    node: str | None = None
    label: LabelSpec | None = None
    session_keys: Sequence[SessionKey] = ()
    #: header fields kept in bronze's ``fields`` map besides the named columns (the whole line
    #: is always kept; building a map per line is costly, so only what is asked for)
    extra_fields: Sequence[str] = ()
    #: Source-specific mask rules, tried before the default ones (see ``default_masks``).
    masks: Sequence[MaskSpec] = ()
    #: Whether the generic rules (UUIDs, IPs and ports, hex, numbers) follow ``masks``.
    default_masks: bool = True
    drain: DrainSpec = field(default_factory=DrainSpec)
    #: how events become windows (gold.windows)
    windows: WindowsSpec = field(default_factory=WindowsSpec)


# --------------------------------------------------------------------------------------------
# loading


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _load_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file name")
    return _merge(_load_layers(path.parent / parent, (*seen, path)), data)


def _apply_override(data: dict[str, Any], spec: str) -> dict[str, Any]:
    if "=" not in spec:
        raise ConfigError(f"--set expects key=value, got {spec!r}")
    key, raw = spec.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    # spark.conf keys contain dots themselves: everything after "spark.conf." is one key.
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = ["spark", "conf", ".".join(parts[2:])]
    node: dict[str, Any] = {}
    root = node
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return _merge(data, root)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (with light coercion) or raise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return _frozen_map({str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()})
    if origin in (Sequence, list, tuple) or tp is Sequence:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def resolve_conf_path(path: str | Path | None) -> Path:
    """The config file to load: ``path``, else ``conf/local.yaml`` here or in the repo."""
    if path is not None:
        return Path(path)
    local = Path(DEFAULT_CONF)
    if local.is_file():
        return local
    return PACKAGE_CONF_DIR / "local.yaml"


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    lake: str | None = None,
) -> Config:
    """Load a layered config file, apply ``--set`` overrides and the ``--lake`` root.

    Relative ``sources_dir`` is resolved against the directory of the file that was loaded;
    a relative lake root stays relative to the working directory.
    """
    conf_path = resolve_conf_path(path).resolve()
    data = _load_layers(conf_path)
    for spec in overrides or ():
        data = _apply_override(data, spec)
    if lake is not None:
        data = _merge(data, {"lake": {"root": lake}})
    data.pop("path", None)
    cfg = _build(Config, data, "")
    sources_dir = Path(cfg.sources_dir)
    if not sources_dir.is_absolute():
        sources_dir = conf_path.parent / sources_dir
    if cfg.lake.backend not in ("auto", "delta-spark", "delta-rs"):
        raise ConfigError(
            f"lake.backend: expected auto, delta-spark or delta-rs, got {cfg.lake.backend!r}"
        )
    return dataclasses.replace(cfg, sources_dir=str(sources_dir), path=str(conf_path))


_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def available_sources(cfg: Config) -> list[str]:
    """Names of the sources defined in ``cfg.sources_dir``."""
    return sorted(p.stem for p in Path(cfg.sources_dir).glob("*.yaml"))


def load_source(cfg: Config, name: str) -> SourceSpec:
    """Load ``<sources_dir>/<name>.yaml``; an unknown name is a :class:`UsageError`."""
    if not _SOURCE_NAME.match(name):
        raise UsageError(f"unknown source {name!r}: names are lowercase, e.g. hdfs, bgl")
    path = Path(cfg.sources_dir) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_sources(cfg)) or "none"
        raise UsageError(f"unknown source {name!r} (known: {known})")
    data = _read_yaml(path)
    data.setdefault("name", name)
    if data["name"] != name:
        raise ConfigError(f"{path}: name {data['name']!r} does not match the file name")
    return _build(SourceSpec, data, f"sources.{name}")
