"""Loghub header format strings compiled into cheap Spark column expressions.

A format such as ``<Date> <Time> <Pid> <Level> <Component>: <Content>`` is a sequence of
fields and literal separators; in Loghub's notation the literals are regular expressions in
which runs of spaces match any whitespace, and fields match lazily.  This module compiles a
format into one of two plans, run on the JVM (no Python UDF):

* **delimited** (every separator is fixed text, no optional parts): each field is cut off the
  front of the line with ``substring_index``/``substr`` on the separator's bytes, so a line
  costs a few byte scans and no regex at all.  When the session has the project's Java
  function ``logcrnn_fn.cut_fields`` (``lib/logcrnn/jvm/CutFields.java``) the same cuts are one
  call of it over the line's bytes, with the same fields (docs/BENCHMARKS.md).
* **regex** (optional groups, character classes): one ``regexp_replace`` rewrites the whole
  line into the fields joined by a control character, then one ``split``.  Field patterns are
  negated classes of the next separator's first character, so the match is linear in the line
  length (no nested lazy groups that backtrack on long lines).

Like Loghub's own parser, both plans match the line with surrounding whitespace stripped (so
the message never ends in stray blanks), and return the fields as a struct column plus a
``matched`` flag; a line that does not fit the format gives ``matched = false`` and null fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from logcrnn.errors import ConfigError
from logcrnn.spark import jvm_function

_FIELD = re.compile(r"(<[^<>]+>)")
_SEP = "\u0001"  # joins fields in the regex plan; lines holding it never match
_MARK = "\u0002"  # prefixes a successful regex rewrite
_REGEX_META = set(".^$*+?()[]{}|\\")
_BLANKS = " \t\n\r\x0b\x0c"  # what Loghub's line.strip() removes (ASCII whitespace)
_JVM_SEP = "\u0001"  # joins the items of CompiledFormat.jvm_plan

#: The Java functions of the delimited plan and of fixed-width timestamps
#: (``logcrnn.spark.JVM_CATALOG_FUNCTIONS``).
JVM_CUT_FIELDS = "logcrnn_fn.cut_fields"
JVM_FIXED_TIMESTAMP = "logcrnn_fn.fixed_timestamp"


@dataclass(frozen=True)
class Separator:
    """A fixed separator: ``core`` text with optional whitespace runs before/after it."""

    core: str
    lead_ws: bool
    trail_ws: bool

    @property
    def needle(self) -> str:
        """The text searched for; a single space stands for each whitespace run."""
        if not self.core:
            return " "
        return (" " if self.lead_ws else "") + self.core + (" " if self.trail_ws else "")


@dataclass(frozen=True)
class CompiledFormat:
    """A format compiled for Spark: field names and the plan that extracts them."""

    fields: tuple[str, ...]
    plan: str  # "delimited" or "regex"
    regex: str  # the Java regex equivalent (used by the regex plan and by docs/tests)
    separators: tuple[Separator, ...] = ()
    prefix: str = ""

    @property
    def jvm_plan(self) -> str | None:
        """The delimited plan as the Java function ``logcrnn_fn.cut_fields`` reads it
        (``lib/logcrnn/jvm/CutFields.java``); None for the regex plan, or when a separator
        holds the character that joins the plan's items."""
        if self.plan != "delimited":
            return None
        trim_last = bool(self.separators) and _blank_after(self.separators[-1])
        items = [self.prefix, "1" if trim_last else "0"]
        items += [f"{int(s.lead_ws) + 2 * int(not s.core)}{s.needle}" for s in self.separators]
        if any(_JVM_SEP in item for item in items):
            return None
        return _JVM_SEP.join(items)

    def apply(self, df: DataFrame, line: str, jvm: bool | None = None) -> DataFrame:
        """``df`` plus ``h`` (struct of the fields, null if no match) and ``_matched``.

        The delimited plan runs as one call of the project's Java function
        ``logcrnn_fn.cut_fields`` when the session has it (``jvm``: None uses it when
        registered, False never), else as Spark built-ins, each cutting step its own
        projection, so every intermediate string is computed once (nested expressions would
        be re-evaluated at every reference).  Both give the same fields.
        """
        plan = self.jvm_plan
        if plan is not None and (
            jvm or (jvm is None and jvm_function(df.sparkSession, JVM_CUT_FIELDS))
        ):
            keep = [F.col(c) for c in df.columns]
            cut = F.call_function(JVM_CUT_FIELDS, F.col(line), F.lit(plan))
            matched = F.col("_cut").isNotNull()  # a null line: false (built-ins: null or false)
            struct = F.struct(*[F.col("_cut")[k].alias(f) for k, f in enumerate(self.fields)])
            return (
                df.select(*keep, cut.alias("_cut"))
                .select(*keep, matched.alias("_matched"), F.col("_cut"))
                .select(*keep, F.col("_matched"), F.when(F.col("_matched"), struct).alias("h"))
            )
        # Trimming copies the line, and almost no line has surrounding blanks: look first.
        text = F.col(line)
        edge = F.lit(False)
        for ch in _BLANKS:
            edge = edge | text.startswith(ch) | text.endswith(ch)
        stripped = F.when(edge, F.btrim(text, F.lit(_BLANKS))).otherwise(text)
        if self.plan == "regex":
            header, ok = self._extract_regex(stripped)
            return df.withColumn("_matched", ok).withColumn("h", F.when(F.col("_matched"), header))
        keep = [F.col(c) for c in df.columns]
        prefix_ok = F.col("_r").startswith(self.prefix) if self.prefix else F.lit(True)
        df = df.select(*keep, stripped.alias("_r")).select(
            *keep, F.col("_r"), prefix_ok.alias("_matched")
        )
        if self.prefix:
            df = df.select(
                *keep,
                F.col("_r").substr(F.lit(len(self.prefix) + 1), F.lit(1 << 30)).alias("_r"),
                F.col("_matched"),
            )
        # Each step cuts fields off the front of the rest ("_r") and is its own projection, so
        # every intermediate string is computed once.  Runs of single-space separators are
        # one split() (Java's single-character fast path, no regex); other separators are one
        # substring_index() each.
        names: list[str] = []
        seps = self.separators
        i = 0
        while i < len(seps):
            done = [F.col(n) for n in names]
            if not seps[i].core:
                j = i
                while j < len(seps) and not seps[j].core:
                    j += 1
                count = j - i
                parts = F.split(F.col("_r"), " ", count + 1)
                df = df.select(*keep, *done, parts.alias("_a"), F.col("_matched"))
                new = [f"_f{k}" for k in range(i, j)]
                # an empty piece means two blanks in a row: Loghub's \s+ would take both, so
                # flag the line rather than shift its fields
                ok = F.col("_matched") & (F.size("_a") == count + 1)
                for k in range(count):
                    ok = ok & (F.col("_a")[k] != "")
                rest = F.col("_a")[count]
                df = df.select(
                    *keep,
                    *done,
                    *[F.col("_a")[k].alias(n) for k, n in enumerate(new)],
                    rest.alias("_r"),
                    ok.alias("_matched"),
                )
                names.extend(new)
                i = j
                continue
            sep = seps[i]
            needle = sep.needle
            df = df.select(
                *keep, *done, F.col("_r"), F.col("_matched"), F.instr("_r", needle).alias("_p")
            )
            value = F.substring_index("_r", needle, 1)
            if sep.lead_ws:
                value = F.rtrim(value)
            rest = F.col("_r").substr(F.col("_p") + len(needle), F.lit(1 << 30))
            df = df.select(
                *keep,
                *done,
                value.alias(f"_f{i}"),
                rest.alias("_r"),
                (F.col("_matched") & (F.col("_p") > 0)).alias("_matched"),
            )
            names.append(f"_f{i}")
            i += 1
        content = F.col("_r")
        if seps and _blank_after(seps[-1]):
            content = F.when(content.startswith(" "), F.ltrim(content)).otherwise(content)
        values = [F.col(n) for n in names] + [content]
        struct = F.struct(*[v.alias(f) for v, f in zip(values, self.fields, strict=True)])
        return df.select(
            *keep,
            F.col("_matched"),
            F.when(F.col("_matched"), struct).alias("h"),
        )

    def _extract_regex(self, line: Column) -> tuple[Column, Column]:
        replacement = _MARK + _SEP.join(f"${i + 1}" for i in range(len(self.fields)))
        rewritten = F.regexp_replace(line, self.regex, replacement)
        ok = rewritten.startswith(_MARK) & ~line.startswith(_MARK)
        parts = F.split(F.substring(rewritten, 2, 1 << 30), _SEP, len(self.fields))
        struct = F.struct(*[parts[i].alias(n) for i, n in enumerate(self.fields)])
        return F.when(ok, struct), ok


def _blank_after(sep: Separator) -> bool:
    return sep.trail_ws or not sep.core


def _unescape_literal(text: str) -> str | None:
    """The plain text a Loghub literal matches, or None when it holds real regex syntax."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _REGEX_META or not nxt.isalnum():
                out.append(nxt)
                i += 2
                continue
            return None  # \s, \d, ... are classes
        if ch in _REGEX_META:
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def _separator(literal: str) -> Separator:
    core = literal.strip(" ")
    if "  " in core:
        raise ValueError(literal)  # an inner run of spaces needs \s+: use the regex plan
    return Separator(core, literal.startswith(" "), literal.endswith(" "))


def _java_text(text: str) -> str:
    """Java regex for plain separator text in a lookahead: blank runs match ``\\s++``."""
    out = []
    for chunk in re.split("( +)", text):
        if chunk.startswith(" "):
            out.append(r"\s++")
        elif chunk:
            out.append(re.escape(chunk))
    return "".join(out)


def _field_pattern(next_literal: str | None, overrides: dict[str, str], name: str) -> str:
    """The Java regex of one field: everything up to the first occurrence of the separator.

    Loghub's ``(.*?)`` is emulated without backtracking: the field takes, possessively, runs
    of characters that cannot start the separator, and a separator's first character only
    where the rest of the separator does not follow (a fixed lookahead).  Every character is
    thus looked at a bounded number of times, and possessive loops run iteratively in Java's
    engine (no stack growth on long lines).  This is the same cut the delimited plan makes.
    """
    if name in overrides:
        return overrides[name]
    if next_literal is None:
        return f"[^{_SEP}]*"
    plain = _unescape_literal(next_literal)
    if plain:
        core = plain.lstrip(" ")
        if not core:  # a blank run: the field is one word
            return rf"[^\s{_SEP}]*+"
        if core != plain:  # blanks then text: words, and blank runs not followed by the text
            ahead = _java_text(core).removesuffix(r"\s++")
            if core.endswith(" "):
                ahead += r"\s"
            return rf"[^\s{_SEP}]*+(?:\s++(?!{ahead})[^\s{_SEP}]++)*+"
        first = re.escape(core[0])
        rest = core[1:]
        if not rest:
            return f"[^{first}{_SEP}]*+"
        ahead = _java_text(rest).removesuffix(r"\s++")
        if rest.endswith(" "):
            ahead += r"\s"
        return f"(?:[^{first}{_SEP}]++|{first}(?!{ahead}))*+"
    if next_literal[:1] == " ":
        return rf"[^\s{_SEP}]*"
    return f"[^{_SEP}]*?"


def compile_format(fmt: str, field_patterns: dict[str, str] | None = None) -> CompiledFormat:
    """Compile a Loghub format string.

    Parameters
    ----------
    fmt
        e.g. ``<Date> <Time> <Pid> <Level> <Component>: <Content>``; the last field takes the
        rest of the line.
    field_patterns
        Java regex per field name overriding the default pattern (forces the regex plan).
    """
    overrides = dict(field_patterns or {})
    parts = _FIELD.split(fmt)
    literals = parts[0::2]
    fields = tuple(p[1:-1] for p in parts[1::2])
    if not fields:
        raise ConfigError(f"log format {fmt!r} has no <Field>")
    if len(set(fields)) != len(fields):
        raise ConfigError(f"log format {fmt!r} repeats a field name")
    for name in fields:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"log format {fmt!r}: bad field name {name!r}")
    if literals[-1]:
        raise ConfigError(f"log format {fmt!r} must end with a field (the message)")

    # Java regex, Loghub semantics: runs of spaces match \s+.
    regex = "^"
    for i, name in enumerate(fields):
        # Loghub's optional parts are groups: make them non-capturing so $1..$n stay fields.
        literal = re.sub(r"(?<!\\)\((?!\?)", "(?:", literals[i])
        regex += re.sub(" +", r"\\s+", literal)
        nxt = literals[i + 1] if i + 1 < len(fields) else None
        pattern = _field_pattern(nxt, overrides, name)
        if re.search(r"(?<!\\)\((?!\?)", pattern):
            raise ConfigError(f"field pattern for {name} must not capture: {pattern!r}")
        regex += f"({pattern})"
    regex += "$"

    plain = [_unescape_literal(lit) for lit in literals]
    # Fixed single-space separators only: a run of blanks in the format ("  ") means fields
    # are padded to varying widths, which the regex plan handles.
    delimited = (
        not overrides
        and all(p is not None for p in plain)
        and not any("  " in lit for lit in literals)
    )
    separators: list[Separator] = []
    if delimited:
        try:
            separators = [_separator(str(p)) for p in plain[1:-1]]
        except ValueError:
            delimited = False
        if any(not s.core and not (s.lead_ws or s.trail_ws) for s in separators):
            delimited = False  # two fields with nothing between them
        if plain[0] and plain[0] != plain[0].strip():
            delimited = False
    if delimited:
        return CompiledFormat(fields, "delimited", regex, tuple(separators), prefix=str(plain[0]))
    return CompiledFormat(fields, "regex", regex)


_TS_TOKEN = re.compile(r"(y+|M+|d+|H+|m+|s+|S+|[A-Za-z]+|'[^']*'|[^A-Za-z'])")
_TS_FIXED = {"yy": 2, "yyyy": 4, "MM": 2, "dd": 2, "HH": 2, "mm": 2, "ss": 2}


def _fixed_fields(pattern: str) -> tuple[dict[str, tuple[int, int]], int] | None:
    """``({letter: (1-based position, width)}, length)`` of a fixed-width numeric timestamp
    pattern, or None when ``pattern`` is not one (a field of varying width, a name, a letter
    twice, or no year, month and day)."""
    pos = 1
    parts: dict[str, tuple[int, int]] = {}
    for token in _TS_TOKEN.findall(pattern):
        letter = token[0]
        if token.startswith("'"):
            pos += len(token) - 2
            continue
        if not letter.isalpha():
            pos += 1
            continue
        width = len(token)
        if (letter != "S" or width > 6) and _TS_FIXED.get(token) != width or letter in parts:
            return None
        parts[letter] = (pos, width)
        pos += width
    if not {"y", "M", "d"} <= parts.keys():
        return None
    return parts, pos - 1


def _timestamp_plan(fields: dict[str, tuple[int, int]], length: int) -> str:
    """:func:`_fixed_fields` as the Java function ``logcrnn_fn.fixed_timestamp`` reads it
    (``lib/logcrnn/jvm/FixedTimestamp.java``): the text's length, then per field its letter,
    0-based position and width, joined by ``;``."""
    return ";".join([str(length), *[f"{k}{p - 1}:{w}" for k, (p, w) in fields.items()]])


def fixed_width_timestamp(text: Column, pattern: str, jvm_zone: str | None = None) -> Column | None:
    """A timestamp from ``text`` by arithmetic, or None if ``pattern`` is not fixed-width.

    Fixed-width numeric patterns (``yyMMdd HHmmss``, ``yyyy-MM-dd HH:mm:ss,SSS``) are read as
    integer substrings into ``make_timestamp``: several times cheaper than ``to_timestamp``,
    which runs a datetime formatter per row.  Text of the wrong length, non-digits or
    impossible dates give null, as ``to_timestamp`` would; literal characters are not checked.
    With ``jvm_zone`` (the session's time zone, which ``make_timestamp`` reads in) the
    project's Java function ``logcrnn_fn.fixed_timestamp`` reads the digits in one call: the
    same result for ASCII digits; it takes no blanks or signs around them.
    """
    fixed = _fixed_fields(pattern)
    if fixed is None:
        return None
    fields, length = fixed
    if jvm_zone is not None:
        plan = _timestamp_plan(fields, length)
        return F.call_function(JVM_FIXED_TIMESTAMP, text, F.lit(plan), F.lit(jvm_zone))
    parts = {k: F.substring(text, p, w).cast("int") for k, (p, w) in fields.items()}
    year = parts["y"] + (2000 if fields["y"][1] == 2 else 0)  # Spark's "yy" base year
    zero = F.lit(0)
    seconds = parts.get("s", zero).cast("decimal(16,6)")
    if "S" in parts:
        seconds = seconds + parts["S"].cast("decimal(16,6)") / F.lit(10 ** fields["S"][1])
    ts = F.make_timestamp(
        year,
        parts["M"],
        parts["d"],
        parts.get("H", zero),
        parts.get("m", zero),
        seconds.cast("decimal(8,6)"),
    )
    return F.when(F.length(text) == length, ts)
