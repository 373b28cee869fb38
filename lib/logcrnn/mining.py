"""Distributed template mining: bronze.raw_lines -> silver.events, silver.templates.

Drain3 is a single-threaded, stateful miner, so no line goes through it one by one:

1. **Mask** (executors): every line's message (its raw text when bronze could not parse it)
   goes through the source's mask rules (:class:`logcrnn.masking.Masker`: the project's Java
   scan, or Spark's ``regexp_replace``), which also cut out its parameter values.  With
   ``mining.cache_lines`` the masked lines are kept on the executors for step 6
   (:func:`logcrnn.spark.row_cache`); without it step 6 masks every line again.
2. **Distinct** (executors): lines collapse to their distinct masked messages, with counts and
   the position of their first line.
3. **Mine shards** (executors): the distinct messages are partitioned by the first branch of
   Drain3's own parse tree (token count, first token), so messages Drain3 would ever compare
   meet in the same shard; every shard runs its own Drain3 over its messages in first-seen
   order and returns only its clusters' templates and sizes.
4. **Merge** (driver): the source's one authoritative miner, loaded from the previous night's
   state in ``silver.miner_state``, learns the shard templates (with their sizes).  Templates
   already known add nothing; ids are stable hashes of source + template text; a template
   that Drain3 generalises keeps its old id resolving (``current_id`` in silver.templates).
5. **Match** (executors): a pandas UDF matches every distinct masked message with Drain3's
   read-only ``match`` against the broadcast state.  Lines take their template id by a join
   on the masked text, so each message is matched once, not once per line.
6. **Write**: silver.events, silver.templates, the new miner state and silver.event_counts
   (the night's input files and event counts, observed while the events are written, or
   counted after them on a native Delta lake: the windows job plans from it instead of
   scanning the events again), each one partition
   (night, source) replaced; if any write fails, the ones already made are rolled back.

Only templates (and the state) ever reach the driver; the distinct messages, however many,
stay on the executors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from logcrnn import __version__
from logcrnn.config import Config, SourceSpec, load_source
from logcrnn.errors import DataError
from logcrnn.lake import Lake
from logcrnn.masking import Masker, masks_for
from logcrnn.spark import row_cache
from logcrnn.templates import WILDCARD, TemplateMiner
from logcrnn.timing import Phases
from logcrnn.windows import event_count_columns

log = logging.getLogger(__name__)

EVENTS = "silver.events"
TEMPLATES = "silver.templates"
STATE = "silver.miner_state"
COUNTS = "silver.event_counts"

#: Lake backends whose event writes report a Spark Observation (the others count the
#: written events in a pass of their own for silver.event_counts).
OBSERVED_BACKENDS = ("delta-rs",)

#: Distinct messages up to this many are joined to the lines by broadcast (no shuffle).
BROADCAST_MESSAGES = 1_000_000

Batches = Callable[[Iterable[pd.DataFrame]], Iterable[pd.DataFrame]]


def miner_for(spec: SourceSpec) -> TemplateMiner:
    """A fresh miner with the source's Drain3 parameters."""
    return TemplateMiner(spec.name, **_drain_params(spec))


def _drain_params(spec: SourceSpec) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec.drain).items()}


# --------------------------------------------------------------------------------------------
# the Spark steps, on any DataFrame shaped like bronze.raw_lines


def message_text() -> Column:
    """What is mined: the parsed content, or the raw line when bronze could not parse it."""
    return F.coalesce(F.col("content"), F.col("line"))


def distinct_messages(lines: DataFrame, masker: Masker) -> DataFrame:
    """One row per distinct masked message: ``masked, n, first_line`` (executors)."""
    return distinct_of_masked(
        lines.select(masker.masked(message_text()).alias("masked"), "line_no")
    )


def _shard_key(masked: F.Column, extra_delimiters: Sequence[str]) -> F.Column:
    """(token count, first token) as Drain3's tree sees them: digits make a token <*>."""
    text = masked
    for delim in extra_delimiters:
        text = F.regexp_replace(text, _java_quote(delim), " ")
    tokens = F.split(F.trim(text), r"\s+")
    first = tokens.getItem(0)
    first = F.when(first.rlike(r"\d"), F.lit(WILDCARD)).otherwise(first)
    return F.concat_ws("\x00", F.size(tokens).cast("string"), first)


def _java_quote(text: str) -> str:
    return "\\Q" + text.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def _mine_shard(params: dict[str, Any]) -> Batches:
    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [b for b in batches if len(b)]
        if not frames:
            return
        msgs = pd.concat(frames).sort_values(["first_line", "masked"], kind="stable")
        miner = TemplateMiner(**params).fit([])
        drain = miner.drain_
        first: dict[int, int] = {}
        for message, n, fline in msgs[["masked", "n", "first_line"]].itertuples(
            index=False, name=None
        ):
            cid = drain.add_log_message(message)["cluster_id"]
            if n > 1:
                drain.drain.id_to_cluster[cid].size += int(n) - 1
            first.setdefault(cid, int(fline))
        clusters = drain.drain.clusters
        yield pd.DataFrame(
            {
                "template": [c.get_template() for c in clusters],
                "n": [int(c.size) for c in clusters],
                "first_line": [first[c.cluster_id] for c in clusters],
            }
        )

    return run


def mine_shards(distinct: DataFrame, spec: SourceSpec, shards: int) -> list[tuple[str, int, int]]:
    """Mine the distinct messages in ``shards`` parallel Drain3s on the executors.

    Returns ``(template, size, first_line)`` of every shard cluster, in first-seen
    order: the only rows that reach the driver.
    """
    params = {"source": spec.name, **_drain_params(spec)}
    keyed = distinct.repartition(shards, _shard_key(F.col("masked"), spec.drain.extra_delimiters))
    rows = keyed.mapInPandas(
        _mine_shard(params),
        "template string, n long, first_line long",
    ).collect()
    out = [(r.template, int(r.n), int(r.first_line)) for r in rows]
    return sorted(out, key=lambda r: (r[2], r[0]))


_MINERS: dict[str, TemplateMiner] = {}


def _miner_from_state(state: bytes) -> TemplateMiner:
    """One deserialised miner per state per Python worker (workers are reused across tasks)."""
    key = hashlib.sha1(state).hexdigest()
    miner = _MINERS.get(key)
    if miner is None:
        _MINERS.clear()
        miner = _MINERS[key] = TemplateMiner.from_bytes(state, name="broadcast miner state")
    return miner


def _generalised_tokens(message: str, template: str) -> list[str]:
    """Tokens of ``message`` that the template turned into <*> (masked tokens excluded)."""
    m_tokens, t_tokens = message.split(), template.split()
    if len(m_tokens) != len(t_tokens):
        return []
    return [
        m for m, t in zip(m_tokens, t_tokens, strict=True) if t == WILDCARD and WILDCARD not in m
    ]


def _match_batches(state_bc: Any) -> Batches:
    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        miner = _miner_from_state(state_bc.value)
        for batch in batches:
            ids: list[str | None] = []
            extra: list[list[str]] = []
            for message in batch["masked"]:
                tid = miner.match(message)
                ids.append(tid)
                template = miner.templates_.get(tid, "") if tid else ""
                extra.append(_generalised_tokens(message, template) if tid else [])
            yield pd.DataFrame(
                {
                    "masked": batch["masked"],
                    "n": batch["n"],
                    "template_id": ids,
                    "generalised": extra,
                }
            )

    return run


def match_messages(spark: SparkSession, distinct: DataFrame, miner: TemplateMiner) -> DataFrame:
    """``masked, n, template_id, generalised`` for every distinct message (executors)."""
    state_bc = spark.sparkContext.broadcast(miner.to_bytes())
    return distinct.select("masked", "n").mapInPandas(
        _match_batches(state_bc),
        "masked string, n long, template_id string, generalised array<string>",
    )


def learn_and_match(
    spark: SparkSession,
    distinct: DataFrame,
    miner: TemplateMiner,
    shard_templates: Sequence[tuple[str, int]],
) -> DataFrame:
    """The driver's miner learns the shard templates; the executors match every message.

    Returns ``masked, n, template_id, generalised, unmatched`` per distinct message, cached
    (unpersist it when done).  Drain3 learnt templates, not messages: the few messages its
    ``match`` then misses are learnt on the driver and everything is matched again.  Any that
    still match nothing keep a template of their own masked text (``unmatched``).
    """
    fallback_tid = F.substring(
        F.sha1(F.concat(F.lit(f"{miner.source}\x00"), F.col("masked"))), 1, 16
    )

    def matched() -> DataFrame:
        return (
            match_messages(spark, distinct, miner)
            .withColumn("unmatched", F.col("template_id").isNull())
            .withColumn("template_id", F.coalesce(F.col("template_id"), fallback_tid))
            .persist()
        )

    miner.fit(shard_templates)
    mapping = matched()
    unmatched = mapping.where("unmatched").select("masked", "n").collect()
    if unmatched:
        log.info("%s: learning %d unmatched messages on the driver", miner.source, len(unmatched))
        miner.fit([(r.masked, int(r.n)) for r in unmatched])
        mapping.unpersist()
        mapping = matched()
    return mapping


# --------------------------------------------------------------------------------------------
# the nightly job


@dataclass
class MineReport:
    """What one night of mining did (printed by ``logcrnn mine``)."""

    source: str
    night: str
    lines: int
    distinct_messages: int
    shards: int
    shard_templates: int
    templates: int
    new_templates: int
    generalised: int
    unmatched: int
    previous_night: str | None
    seconds: float
    lines_per_s: float
    versions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_miner(lake: Lake, spec: SourceSpec, night: date) -> tuple[date | None, TemplateMiner]:
    """The miner as the last night before ``night`` left it (a fresh one if there is none).

    A state that cannot be read is a :class:`DataError` naming the table and partition; it is
    never replaced by an empty miner.
    """
    if not lake.exists(STATE):
        return None, miner_for(spec).fit([])
    rows = (
        lake.read(STATE, source=spec.name)
        .where(F.col("night") < F.lit(night))
        .orderBy(F.col("night").desc())
        .select("night", "state")
        .limit(1)
        .collect()
    )
    if not rows:
        return None, miner_for(spec).fit([])
    prev = rows[0].night
    name = f"{lake.path(STATE)} (night={prev}, source={spec.name})"
    miner = TemplateMiner.from_bytes(bytes(rows[0].state), name=name)
    wanted = miner_for(spec).get_params()
    if miner.get_params() != wanted:
        log.warning(
            "%s: Drain3 parameters in config %s differ from the stored state's %s; "
            "the stored state's are kept so that template ids stay stable",
            spec.name, wanted, miner.get_params(),
        )  # fmt: skip
    return prev, miner


def _template_rows(
    miner: TemplateMiner,
    night: date,
    night_counts: dict[str, int],
    previous: list[Any],
    fallback: dict[str, tuple[str, int]],
) -> list[tuple[Any, ...]]:
    prev = {r.template_id: r for r in previous}
    rows = []
    for tid, text in sorted(miner.templates_.items()):
        count = night_counts.get(tid, 0)
        before = prev.get(tid)
        rows.append((
            tid, text, tid, count, int(miner.counts_.get(tid, 0)),
            before.first_seen if before else night,
            night if count else (before.last_seen if before else None),
        ))  # fmt: skip
    for tid, before in sorted(prev.items()):
        if tid in miner.templates_ or tid in fallback:
            continue
        rows.append((
            tid, before.template, miner.resolve(tid), 0, before.total_count,
            before.first_seen, before.last_seen,
        ))  # fmt: skip
    for tid, (text, n) in sorted(fallback.items()):
        before = prev.get(tid)
        total = n + (before.total_count if before else 0)
        first_seen = before.first_seen if before else night
        rows.append((tid, text, tid, n, total, first_seen, night))
    return rows


def masked_lines(bronze: DataFrame, masker: Masker) -> DataFrame:
    """The bronze columns silver.events keeps, with each line's masked message and the
    values the mask replaced (``masked``, ``values``), from one scan of the mask rules."""
    return masker.with_masked_values(
        bronze.select(
            "file", "line_no", "ts", "level", "component", "node", "session_keys",
            "label", "parse_ok", "parse_error", message_text().alias("text"),
        ),
        F.col("text"),
    ).drop("text")  # fmt: skip


def distinct_of_masked(lines: DataFrame) -> DataFrame:
    """``masked, n, first_line`` of lines that have ``masked`` and ``line_no`` (those of
    :func:`masked_lines`, or of :func:`distinct_messages`)."""
    return lines.groupBy("masked").agg(
        F.count(F.lit(1)).alias("n"), F.min("line_no").alias("first_line")
    )


def events_frame(lines: DataFrame, lookup: DataFrame) -> DataFrame:
    """``silver.events`` rows (without night and source) of :func:`masked_lines`, joined by
    their masked text to ``lookup`` (``masked, template_id, generalised``: the template of
    every distinct masked message and the tokens its template generalised)."""
    return (
        lines.join(lookup, "masked", "left")
        .select(
            "file", "line_no", "ts", "level", "component", "node", "session_keys",
            "template_id",
            F.concat("values", F.coalesce("generalised", F.array().cast("array<string>")))
            .alias("parameters"),
            "label", "parse_ok", "parse_error",
        )
    )  # fmt: skip


def mine_night(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    source: str,
    night: date | str,
    shards: int | None = None,
) -> MineReport:
    """Mine one night of one source from bronze into silver (see the module docstring)."""
    started = time.perf_counter()
    spec = load_source(cfg, source)
    night = date.fromisoformat(str(night))
    if not lake.exists("bronze.raw_lines"):
        raise DataError("bronze.raw_lines does not exist yet: run logcrnn ingest first")
    shards = shards or cfg.mining.shards or 2 * spark.sparkContext.defaultParallelism
    prev_night, miner = load_miner(lake, spec, night)
    previous = lake.read(TEMPLATES, prev_night, source).collect() if prev_night else []
    known_before = set(miner.templates_) | set(miner.aliases_)

    masker = Masker(masks_for(spec))
    bronze = lake.read("bronze.raw_lines", night, source)
    # the masked lines, kept as rows by the distinct pass for the events write; without the
    # row cache the events write masks every line again
    cache = row_cache(masked_lines(bronze, masker)) if cfg.mining.cache_lines else None
    if cache is not None:
        lines_df, drop_cache = cache
        distinct = distinct_of_masked(lines_df).persist()
    else:
        lines_df, drop_cache = masked_lines(bronze, masker), None
        distinct = distinct_messages(bronze, masker).persist()
    mapping: DataFrame | None = None
    try:
        phase = Phases(source, log)
        totals = distinct.agg(F.sum("n").alias("lines"), F.count(F.lit(1)).alias("d")).first()
        lines = int(totals.lines or 0) if totals else 0
        n_distinct = int(totals.d) if totals else 0
        if lines == 0:
            raise DataError(
                f"bronze.raw_lines has no lines for source {source} on {night}: ingest it first"
            )
        phase("mask + distinct")
        shard_rows = mine_shards(distinct, spec, shards)
        phase("shard mining")
        mapping = learn_and_match(spark, distinct, miner, [(t, n) for t, n, _ in shard_rows])
        phase("merge + match")
        per_template = (
            mapping.groupBy("template_id", "unmatched")
            .agg(F.sum("n").alias("n"), F.first("masked").alias("masked"))
            .collect()
        )
        night_counts = {r.template_id: int(r.n) for r in per_template}
        fallback = {r.template_id: (r.masked, int(r.n)) for r in per_template if r.unmatched}
        if fallback:
            log.warning(
                "%s: %d messages matched no template; each keeps its own masked text as template",
                source, len(fallback),
            )  # fmt: skip

        lookup = mapping.select("masked", "template_id", "generalised")
        if n_distinct <= BROADCAST_MESSAGES:
            lookup = F.broadcast(lookup)
        events = events_frame(lines_df, lookup)
        # delta-rs lakes: Spark writes the events' Parquet files itself, and an Observation
        # counts them in that pass; native Delta runs the write in an inner execution whose
        # observed metrics may never arrive, so there the written events are counted
        observed = Observation(f"event_counts {source} {night}")
        observe = lake.backend in OBSERVED_BACKENDS
        if observe:
            events = events.observe(observed, *event_count_columns())

        def event_counts() -> DataFrame:
            # only called once silver.events is written
            if observe:
                got = observed.get
            else:
                row = lake.read(EVENTS, night, source).agg(*event_count_columns()).first()
                got = row.asDict() if row is not None else {}
            return spark.createDataFrame(
                [(json.loads(got["files"] or "[]"), int(got["events"]),
                  int(got["unkeyed"] or 0), int(got["untimed"] or 0))],
                "files array<string>, events long, unkeyed long, untimed long",
            )  # fmt: skip

        template_rows = _template_rows(miner, night, night_counts, previous, fallback)
        templates = spark.createDataFrame(
            template_rows,
            "template_id string, template string, current_id string, count long, "
            "total_count long, first_seen date, last_seen date",
        )
        state = spark.createDataFrame(
            [(miner.to_bytes(), miner.n_templates, __version__, datetime.now(UTC))],
            "state binary, templates int, logcrnn_version string, created_at timestamp",
        )
        versions = write_all(
            lake,
            night,
            source,
            [(EVENTS, events), (TEMPLATES, templates), (STATE, state), (COUNTS, event_counts)],
        )
        phase("events + templates + state written")
        seconds = time.perf_counter() - started
        return MineReport(
            source=source,
            night=str(night),
            lines=lines,
            distinct_messages=n_distinct,
            shards=shards,
            shard_templates=len(shard_rows),
            templates=miner.n_templates,
            new_templates=len(set(miner.templates_) - known_before),
            generalised=sum(1 for old in miner.aliases_ if old in known_before),
            unmatched=sum(n for _, n in fallback.values()),
            previous_night=str(prev_night) if prev_night else None,
            seconds=round(seconds, 2),
            lines_per_s=round(lines / seconds, 1),
            versions=versions,
        )
    finally:
        distinct.unpersist()
        if drop_cache is not None:
            drop_cache()
        if mapping is not None:
            mapping.unpersist()


def write_all(
    lake: Lake,
    night: date,
    source: str,
    writes: Sequence[tuple[str, DataFrame | Callable[[], DataFrame]]],
) -> dict[str, int]:
    """Write each table's (night, source) partition; if one fails, roll back the others.

    Delta commits one table at a time; this gives the job all-or-nothing behaviour: after a
    failure every table holds what it held before the job started.  A callable in place of
    a DataFrame is called when its turn comes (after the writes before it).
    """
    before = {t: (lake.version(t) if lake.exists(t) else None) for t, _ in writes}
    done: list[str] = []
    versions: dict[str, int] = {}
    try:
        for table, df in writes:
            versions[table] = lake.write(df if isinstance(df, DataFrame) else df(), table,
                                         night, source)  # fmt: skip
            done.append(table)
    except Exception:
        for table in reversed(done):
            try:
                lake.restore_partition(table, night, source, before[table])
            except Exception as exc:  # report, and keep the original error
                log.error("rolling back %s failed: %s", table, exc)
        raise
    return versions
