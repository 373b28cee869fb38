"""Template mining: a scikit-learn-style wrapper around Drain3, with stable template ids.

Drain3 only ever sees masked text (see :mod:`logcrnn.masking`), where variables are already
``<*>``.  :class:`TemplateMiner` wraps ``drain3.TemplateMiner`` (never copies it): ``fit``
learns from messages (optionally with counts, e.g. the distinct masked messages of a night),
the learned state lives in attributes ending in ``_``, and ``to_bytes``/``from_bytes`` carry
Drain3's own serialised state plus our id mapping.

Template ids are stable: ``template_id(source, template)`` is a hash of the source and the
template text.  When Drain3 generalises a cluster (its template changes), the old id is kept
as an alias of the new one, so ids handed out earlier keep resolving.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drain3 import TemplateMiner as Drain3Miner
from drain3.memory_buffer_persistence import MemoryBufferPersistence
from drain3.template_miner_config import TemplateMinerConfig

from logcrnn.errors import DataError

log = logging.getLogger(__name__)

WILDCARD = "<*>"
STATE_FORMAT = "logcrnn.template-miner"
STATE_VERSION = 1


@dataclass(frozen=True)
class MaskRule:
    """Replace every match of ``regex`` (Java syntax) by ``token``."""

    name: str
    regex: str
    token: str = WILDCARD


#: Used for sources whose config lists no ``masks``: the usual variables of system logs.
DEFAULT_MASKS: tuple[MaskRule, ...] = (
    MaskRule(
        "uuid", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    ),
    MaskRule("ip_port", r"(?<![\w.])/?\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])"),
    MaskRule("hex", r"\b0[xX][0-9a-fA-F]+\b"),
    MaskRule("number", r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])"),
)


def template_id(source: str, template: str) -> str:
    """Stable id of a template: 16 hex digits of SHA-1 over ``source`` and the text."""
    return hashlib.sha1(f"{source}\x00{template}".encode()).hexdigest()[:16]


class TemplateMiner:
    """Drain3 for one source, with stable template ids.

    Parameters
    ----------
    source
        The source name; part of every template id.
    sim_th, depth, max_children, extra_delimiters, parametrize_numeric_tokens
        Drain3's parameters (``drain_sim_th`` ...), passed through unchanged.
    """

    def __init__(
        self,
        source: str,
        sim_th: float = 0.4,
        depth: int = 4,
        max_children: int = 100,
        extra_delimiters: Sequence[str] = (),
        parametrize_numeric_tokens: bool = True,
    ) -> None:
        self.source = source
        self.sim_th = sim_th
        self.depth = depth
        self.max_children = max_children
        self.extra_delimiters = tuple(extra_delimiters)
        self.parametrize_numeric_tokens = parametrize_numeric_tokens

    # -- parameters ---------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sim_th": self.sim_th,
            "depth": self.depth,
            "max_children": self.max_children,
            "extra_delimiters": list(self.extra_delimiters),
            "parametrize_numeric_tokens": self.parametrize_numeric_tokens,
        }

    def _config(self) -> TemplateMinerConfig:
        config = TemplateMinerConfig()
        config.drain_sim_th = self.sim_th
        config.drain_depth = self.depth
        config.drain_max_children = self.max_children
        config.drain_extra_delimiters = list(self.extra_delimiters)
        config.parametrize_numeric_tokens = self.parametrize_numeric_tokens
        config.masking_instructions = []  # masking happens in Spark, before Drain3
        config.snapshot_interval_minutes = 10**9
        config.profiling_enabled = False
        return config

    def _new_drain(self) -> tuple[Drain3Miner, MemoryBufferPersistence]:
        persistence = MemoryBufferPersistence()
        return Drain3Miner(persistence, self._config()), persistence

    # -- learning -----------------------------------------------------------------------------

    def fit(self, messages: Iterable[str | tuple[str, int]]) -> TemplateMiner:
        """Learn templates from masked messages (plain strings or ``(message, count)``).

        Calling ``fit`` again continues from the learned state (a new night on top of the
        previous ones).  Ids are settled once per call (:meth:`_refresh`): an id that was
        handed out and whose template changed since keeps resolving to the new one.
        """
        if not hasattr(self, "drain_"):
            self.drain_, self._persistence = self._new_drain()
            self.cluster_ids_: dict[int, str] = {}
            self.aliases_: dict[str, str] = {}
            self.templates_: dict[str, str] = {}
            self.counts_: dict[str, int] = {}
        for item in messages:
            message, count = (item, 1) if isinstance(item, str) else item
            result = self.drain_.add_log_message(message)
            if count > 1:
                self.drain_.drain.id_to_cluster[result["cluster_id"]].size += count - 1
        self._refresh()
        return self

    def canonical_templates(self) -> dict[int, str]:
        """The template each Drain3 cluster is reported under (cluster id -> text).

        Clusters whose templates differ only at variable-like positions may be reported under
        one shared template; this is where such post-processing of Drain3's result happens.
        """
        return {c.cluster_id: c.get_template() for c in self.drain_.drain.clusters}

    def _refresh(self) -> None:
        canonical = self.canonical_templates()
        new_ids = {cid: template_id(self.source, text) for cid, text in canonical.items()}
        live = set(new_ids.values())
        for cid, old in self.cluster_ids_.items():
            new = new_ids.get(cid)
            if new is not None and old != new and old not in live:
                self.aliases_[old] = new
        aliases = {}
        for alias, target in self.aliases_.items():
            if alias in live:
                continue  # the template came back: the id is live again
            seen = {alias}
            while target not in live and target in self.aliases_ and target not in seen:
                seen.add(target)
                target = self.aliases_[target]
            aliases[alias] = target
        self.aliases_ = aliases
        self.cluster_ids_ = new_ids
        self.templates_ = {new_ids[cid]: text for cid, text in canonical.items()}
        counts: dict[str, int] = {}
        for cluster in self.drain_.drain.clusters:
            tid = new_ids[cluster.cluster_id]
            counts[tid] = counts.get(tid, 0) + cluster.size
        self.counts_ = counts

    # -- using --------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "drain_"):
            raise DataError("the template miner has not been fitted")

    def match(self, message: str) -> str | None:
        """Template id of a masked message, read-only (Drain3's ``match``); None if unknown."""
        self._check_fitted()
        cluster = self.drain_.match(message, full_search_strategy="fallback")
        if cluster is None:
            return None
        return self.cluster_ids_[cluster.cluster_id]

    def resolve(self, tid: str) -> str:
        """The current id for ``tid`` (itself unless its template was generalised since)."""
        return self.aliases_.get(tid, tid)

    @property
    def n_templates(self) -> int:
        self._check_fitted()
        return len(self.templates_)

    # -- state --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Drain3's own serialised state plus the id mapping, as one JSON document."""
        self._check_fitted()
        self.drain_.save_state("logcrnn")
        state = self._persistence.load_state()
        doc = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": self.get_params(),
            "drain3_state": base64.b64encode(state).decode("ascii"),
            "cluster_ids": {str(k): v for k, v in self.cluster_ids_.items()},
            "aliases": self.aliases_,
            "templates": self.templates_,
        }
        return json.dumps(doc).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "miner state") -> TemplateMiner:
        """Rebuild a miner; a corrupt or foreign state is a :class:`DataError` naming ``name``."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{name}: not a template-miner state ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise DataError(f"{name}: not a template-miner state")
        if doc.get("version") != STATE_VERSION:
            raise DataError(
                f"{name}: template-miner state version {doc.get('version')!r}, "
                f"this logcrnn reads version {STATE_VERSION}"
            )
        try:
            miner = cls(**doc["params"])
            miner.drain_, miner._persistence = miner._new_drain()
            miner._persistence.save_state(base64.b64decode(doc["drain3_state"]))
            miner.drain_.load_state()
            miner.cluster_ids_ = {int(k): v for k, v in doc["cluster_ids"].items()}
            miner.aliases_ = dict(doc["aliases"])
            miner.templates_ = dict(doc["templates"])
            miner._refresh()
        except Exception as exc:
            raise DataError(f"{name}: corrupt template-miner state ({exc})") from exc
        return miner
