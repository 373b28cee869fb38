"""Masking in Spark: a source's mask rules turn variable parts of messages into tokens.

Masking runs on the executors with Spark's built-in ``regexp_replace`` (Java regex syntax), so
Drain3 only ever sees masked text, where variables are already ``<*>``.  Rules come from the
source's ``masks`` in ``conf/sources`` (the defaults below when it lists none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from logcrnn.config import SourceSpec
from logcrnn.spark import jvm_function
from logcrnn.templates import DEFAULT_MASKS, MaskRule


def masks_for(spec: SourceSpec) -> tuple[MaskRule, ...]:
    """The source's own mask rules, then (unless it turns them off) the default ones."""
    own = tuple(MaskRule(m.name, m.regex, m.token) for m in spec.masks)
    return own + (DEFAULT_MASKS if spec.default_masks else ())


@dataclass(frozen=True)
class Masker:
    """A source's mask rules, applied with Spark's built-in regex functions or, when the
    session has them, the project's Java functions (``lib/logcrnn/jvm``), which give the
    same output.

    Consecutive rules with the same token are tried as one alternation, in one scan of the
    text: at each position the first listed rule that matches wins.  A rule that refers to an
    earlier rule's output (its regex mentions ``<``) starts a new scan.  Each scan is prefixed
    with a look-ahead for the characters a match can start with (when :func:`first_chars` can
    tell), so Java's matcher skips most positions after one character test.  Rules that start
    with ``\\b`` (UUIDs, hex) get a branch of their own, ``\\b`` and their first two
    characters, so a letter inside a word is not a candidate just because a UUID may start
    with it.  On HDFS lines this makes masking about 1.5x cheaper, with identical output
    (docs/BENCHMARKS.md).  The Java functions go further: they test each rule's start
    (:attr:`jvm_scans`) in a plain loop and ask the regex, with only the rules left, only
    where one is left, instead of starting a match attempt at every position.
    """

    rules: tuple[MaskRule, ...]
    #: Prefix each scan with the first-character look-ahead (off only to measure its effect).
    guard: bool = True

    @property
    def scans(self) -> list[tuple[str, str]]:
        """``(regex, token)`` per scan."""
        scans = []
        for alternation, token in self._groups():
            ahead = look_ahead(alternation) if self.guard else None
            scans.append((f"{ahead}(?:{alternation})" if ahead else alternation, token))
        return scans

    @property
    def jvm_scans(self) -> list[tuple[str, str, str]]:
        """``(regex, token, starts)`` per scan, for the Java functions
        (``lib/logcrnn/jvm/Scan.java``).  ``starts`` lists the scan's branches
        (:func:`jvm_branches`), each with the tests that rule it out at a position: its
        first characters, a leading ``\\b``, its second characters, the characters its
        leading negative look-behind rejects.  The Java scan runs those tests itself and asks
        the regex only where a branch is left, with only the branches left, so the regex goes
        without the look-ahead of :attr:`scans`, which only restates them.  Where
        :func:`jvm_branches` cannot split the scan, or the look-ahead is off, ``starts`` is
        ``""`` (every position is tried with the whole regex) and the regex is the scan's
        own."""
        out = []
        for (alternation, token), (regex, _) in zip(self._groups(), self.scans, strict=True):
            branches = jvm_branches(alternation) if self.guard else None
            if branches is None or all(b.firsts is None for b in branches):
                out.append((regex, token, ""))
                continue
            out.append((alternation, token, _JVM_BRANCH.join(b.encoded() for b in branches)))
        return out

    def _groups(self) -> list[tuple[str, str]]:
        """``(alternation, token)`` per scan, without the look-ahead."""
        groups: list[tuple[list[str], str]] = []
        for rule in self.rules:
            if groups and groups[-1][1] == rule.token and not _refers_to_tokens(rule.regex):
                groups[-1][0].append(rule.regex)
            else:
                groups.append(([rule.regex], rule.token))
        return [("|".join(f"(?:{r})" for r in regexes), token) for regexes, token in groups]

    def masked(self, text: Column, jvm: bool | None = None) -> Column:
        """``text`` with every rule applied: one ``regexp_replace`` per scan, or one call per
        scan of the project's Java function ``logcrnn_mask`` (the same output; it asks the
        regex only where a match can start).  ``jvm``: None uses the Java function when the
        active session has it registered, False never."""
        if jvm is None:
            spark = SparkSession.getActiveSession()
            jvm = spark is not None and jvm_function(spark, JVM_MASK)
        out = text
        if jvm:
            for regex, token, starts in self.jvm_scans:
                out = F.call_function(JVM_MASK, out, F.lit(regex), F.lit(token), F.lit(starts))
            return out
        for regex, token in self.scans:
            out = F.regexp_replace(out, regex, _replacement(token))
        return out

    def values(self, text: Column) -> Column:
        """The substrings of ``text`` the rules replace, in text order."""
        scans = self.scans
        union = scans[0][0] if len(scans) == 1 else "|".join(f"(?:{r})" for r, _ in scans)
        return F.regexp_extract_all(text, F.lit(union), 0)

    def with_masked_values(
        self,
        df: DataFrame,
        text: Column,
        masked: str = "masked",
        values: str = "values",
        jvm: bool | None = None,
    ) -> DataFrame:
        """``df`` with the columns ``masked`` and ``values`` (as :meth:`masked` and
        :meth:`values`) added, in one scan of the rules instead of two.

        When the session has the project's Java function ``logcrnn_mask_values``
        (``lib/logcrnn/jvm/MaskValues.java``), one pass of one matcher gives both, asking the
        regex only where a match can start (``jvm``: None uses it when registered, False
        never).  Otherwise, with Spark's built-ins, the
        one scan wraps every match in the control characters ``MARK`` and the masked text
        and the values are then cut from that marked text with a trivial regex each; texts
        that contain those characters themselves take the two-scan path.  Maskers of more
        than one scan always take the two-scan path.  The struct or the marked text is a
        column of its own projection: Spark keeps a projection whose expensive column is
        used twice, so it is computed once.
        """
        scans = self.scans
        if len(scans) != 1:
            return df.withColumns({masked: self.masked(text, jvm), values: self.values(text)})
        regex, token = scans[0]
        if jvm is None:
            jvm = jvm_function(df.sparkSession, JVM_MASK_VALUES)
        if jvm:
            tmp = "__mask_values"
            args = [F.lit(arg) for arg in self.jvm_scans[0]]
            both = F.call_function(JVM_MASK_VALUES, text, *args)
            return (
                df.withColumn(tmp, both)
                .withColumns({masked: F.col(tmp)["masked"], values: F.col(tmp)["values"]})
                .drop(tmp)
            )
        start, end = MARK
        tmp_text, tmp_marked = "__mask_text", "__mask_marked"
        staged = df.withColumn(tmp_text, text).withColumn(
            tmp_marked, F.regexp_replace(F.col(tmp_text), regex, f"{start}$0{end}")
        )
        t, marked = F.col(tmp_text), F.col(tmp_marked)
        clean = ~(t.contains(start) | t.contains(end))
        cut = f"{start}([^{end}]*){end}"
        return staged.withColumns({
            masked: F.when(clean, F.regexp_replace(marked, cut, _replacement(token)))
            .otherwise(self.masked(t, jvm=False)),
            values: F.when(clean, F.regexp_extract_all(marked, F.lit(cut), 1))
            .otherwise(self.values(t)),
        }).drop(tmp_text, tmp_marked)  # fmt: skip


#: The Java functions of :meth:`Masker.with_masked_values` and :meth:`Masker.masked`
#: (``logcrnn.spark.JVM_FUNCTIONS``).
JVM_MASK_VALUES = "logcrnn_mask_values"
JVM_MASK = "logcrnn_mask"
#: Join the branches of a start set, and the fields of a branch (:attr:`Masker.jvm_scans`).
_JVM_BRANCH, _JVM_FIELD = "\u0001", "\u0002"
#: Most branches a start set holds (the Java scan keeps a set of branches in a long).
_JVM_MAX_BRANCHES = 63

#: Characters that bracket each match in :meth:`Masker.with_masked_values`'s one scan.
MARK = ("\x01", "\x02")


def _refers_to_tokens(regex: str) -> bool:
    """Whether a rule's regex mentions ``<`` outside look-behinds and named groups."""
    return "<" in re.sub(r"\(\?<[=!]?", "", regex)


def _replacement(token: str) -> str:
    return token.replace("\\", "\\\\").replace("$", "\\$")


# first characters of a regex's matches (for the masking look-ahead)

_ZERO_WIDTH_ESCAPES = set("bBAzZG")
_CLASS_ESCAPES = set("dDwWsShHvV")


def _close_paren(s: str, i: int) -> int:
    """Index of the ')' closing the group opened at s[i] == '('; -1 if unbalanced."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            end = _close_bracket(s, j)
            if end < 0:
                return -1
            j = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def _close_bracket(s: str, i: int) -> int:
    """Index of the ']' closing the class opened at s[i] == '['; -1 if unsupported."""
    j = i + 1
    if j < len(s) and s[j] == "^":
        j += 1
    if j < len(s) and s[j] == "]":
        j += 1
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "[" or s.startswith("&&", j):
            return -1  # nested classes / intersections: not analysed
        if c == "]":
            return j
        j += 1
    return -1


def _split_alternatives(s: str) -> list[str] | None:
    parts, start, j = [], 0, 0
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            end = _close_bracket(s, j)
            if end < 0:
                return None
            j = end + 1
            continue
        if c == "(":
            end = _close_paren(s, j)
            if end < 0:
                return None
            j = end + 1
            continue
        if c == "|":
            parts.append(s[start:j])
            start = j + 1
        j += 1
    parts.append(s[start:])
    return parts


def first_chars(regex: str) -> str | None:
    """A Java character-class body (for ``[...]``) covering every first character of a match
    of ``regex``.

    ``None`` when the regex can match the empty string, starts with ``.`` or a negated class,
    uses inline flags, or uses syntax this analysis does not follow.
    """
    alternatives = _split_alternatives(regex)
    if alternatives is None:
        return None
    out = []
    for alt in alternatives:
        first = _first_of_sequence(alt)
        if first is None:
            return None
        out.append(first)
    return "".join(out)


def look_ahead(regex: str) -> str | None:
    r"""A look-ahead ``(?=...)`` that every match of ``regex`` passes at its start.

    Alternatives (at the top level or inside a group that is a whole alternative) that start
    with ``\b`` keep that assertion in front of their first characters, and of their second
    too when the regex says what it is for all of them: ``(?=[...]|\b[...][...])``.
    ``None`` where :func:`first_chars` cannot tell.
    """
    parts = _look_ahead_parts(regex)
    if parts is None:
        return None
    plain, bounded = parts
    branches = [f"[{plain}]"] if plain else []
    if bounded:
        firsts = "".join(first for first, _ in bounded)
        seconds = [second for _, second in bounded if second is not None]
        pair = f"[{''.join(seconds)}]" if len(seconds) == len(bounded) else ""
        branches.append(f"\\b[{firsts}]{pair}")
    return f"(?={'|'.join(branches)})"


def _look_ahead_parts(regex: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    r"""First characters of the plain alternatives; (first, second or ``None``) characters
    of each alternative behind a leading ``\b`` (:func:`_branches`); ``None`` when any
    alternative's first characters are not known."""
    branches = _branches(regex)
    if branches is None or any(b.firsts is None for b in branches):
        return None
    plain = "".join(b.firsts or "" for b in branches if not b.word_start)
    bounded = [(b.firsts or "", b.seconds) for b in branches if b.word_start]
    return plain, bounded


@dataclass(frozen=True)
class Branch:
    """One alternative of a masking scan, with what rules it out at a position before the
    regex is asked (:func:`jvm_branches`).  Each class body covers every match's character
    there (``None``: no test)."""

    regex: str
    #: the first characters (``None``: not known, the branch is tried everywhere)
    firsts: str | None
    #: behind a leading ``\\b``: ruled out between two word characters
    word_start: bool = False
    #: the second characters
    seconds: str | None = None
    #: the characters its leading ``(?<![...])`` rejects before it
    not_after: str | None = None

    def encoded(self) -> str:
        """The branch as ``Scan.java`` reads it: five fields joined by U+0002 (the regex;
        the first characters; ``a`` when they are not known, ``w`` behind a leading
        ``\\b``, else empty; the second characters; the rejected characters before it)."""
        flag = "a" if self.firsts is None else ("w" if self.word_start else "")
        fields = (self.regex, self.firsts or "", flag, self.seconds or "", self.not_after or "")
        return _JVM_FIELD.join(fields)


def jvm_branches(regex: str) -> list[Branch] | None:
    r"""The alternatives of ``regex``, an alternative that is one whole non-capturing group
    opened up into its own, in order.  At any position the first of them that matches is the
    regex's match there, so the Java scan may leave out those a test rules out.  ``None``
    when the regex cannot be split (unbalanced or unsupported syntax), refers back to a group
    (a subset of the branches renumbers the groups), has more than 63 branches, or uses the
    separators of :attr:`Masker.jvm_scans`."""
    if re.search(r"\\(?:[1-9]|k<)", regex) or _JVM_BRANCH in regex or _JVM_FIELD in regex:
        return None
    out = _branches(regex)
    return out if out is not None and len(out) <= _JVM_MAX_BRANCHES else None


def _branches(regex: str) -> list[Branch] | None:
    """:func:`jvm_branches` without its limits: the alternatives of ``regex`` (whole
    non-capturing groups opened up) with their tests; ``None`` when it cannot be split."""
    alternatives = _split_alternatives(regex)
    if alternatives is None:
        return None
    out: list[Branch] = []
    for alt in alternatives:
        if alt.startswith("(?:") and _close_paren(alt, 0) == len(alt) - 1:
            inner = _branches(alt[3:-1])
            if inner is None:
                return None
            out += inner
            continue
        firsts = first_chars(alt)
        if firsts is None:
            out.append(Branch(alt, None))
        elif alt.startswith("\\b"):
            out.append(Branch(alt, firsts, word_start=True, seconds=_second_chars(alt[2:])))
        else:
            out.append(Branch(alt, firsts, seconds=_second_chars(alt), not_after=_not_after(alt)))
    return out


def _not_after(alt: str) -> str | None:
    """The class body of a leading negative look-behind of one character class,
    ``(?<![...])``; ``None`` for anything else."""
    if not alt.startswith("(?<!["):
        return None
    end = _close_bracket(alt, 4)
    if end < 0 or alt[5:6] == "^" or alt[end + 1 : end + 2] != ")":
        return None
    return _class_body(alt[5:end])


def _second_chars(seq: str) -> str | None:
    """A class body covering the second character of every match of the sequence ``seq``,
    when it starts with a single-character atom that the match cannot end with; ``None``
    otherwise."""
    atom = _atom(seq, 0)
    if atom is None:
        return None
    first, i = atom
    low, high, i = _repeats(seq, i)
    if low >= 2:
        return first
    if low < 1:
        return None
    rest = _first_of_sequence(seq[i:])
    if rest is None:
        return None
    return rest if high == 1 else first + rest


def _repeats(s: str, i: int) -> tuple[int, float, int]:
    """(least, most repeats, index after) of the quantifier at ``s[i]`` (none: once)."""
    inf = float("inf")
    if i >= len(s) or s[i] not in "?*+{":
        return 1, 1, i
    c = s[i]
    if c == "{":
        end = s.find("}", i)
        bounds = s[i + 1 : end].split(",") if end > 0 else []
        if not bounds or not all(b.strip().isdigit() or (k and not b.strip())
                                 for k, b in enumerate(bounds)):  # fmt: skip
            return 0, inf, i  # not a quantifier this analysis follows: claim nothing
        low = int(bounds[0])
        high = inf if len(bounds) > 1 and not bounds[1].strip() else int(bounds[-1])
        i = end + 1
    else:
        low, high = (0 if c in "?*" else 1), (1 if c == "?" else inf)
        i += 1
    if i < len(s) and s[i] in "?+":  # lazy / possessive
        i += 1
    return low, high, i


def _class_body(body: str) -> str:
    """A class body that keeps its meaning when concatenated with others into one class."""
    if body.startswith(("-", "^", "]")):
        body = "\\" + body
    if body.endswith("-") and not body.endswith("\\-"):
        body = body[:-1] + "\\-"
    return body


def _atom(s: str, i: int) -> tuple[str, int] | None:
    """(class body, index after) of the one-character atom at ``s[i]``: a character class,
    a class escape (``\\d``, ``\\p{L}``, ...), an escaped symbol or a literal character;
    ``None`` for anything else (groups, ``.``, negated classes, ``\\Q``, ``\\x..``, ...)."""
    c = s[i : i + 1]
    if c == "[":
        end = _close_bracket(s, i)
        if end < 0 or s[i + 1] == "^":
            return None
        return _class_body(s[i + 1 : end]), end + 1
    if c == "\\":
        e = s[i + 1 : i + 2]
        if not e or e in _ZERO_WIDTH_ESCAPES:
            return None
        if e in _CLASS_ESCAPES or not e.isalnum():
            return s[i : i + 2], i + 2
        if e in "pP" and s[i + 2 : i + 3] == "{":
            end = s.find("}", i)
            return s[i : end + 1], end + 1
        return None  # \Q, \x.., \u...., back-references: not analysed
    if not c or c in ".|()*+?{^$":
        return None
    return (c if c.isalnum() else f"\\{c}"), i + 1


def _first_of_sequence(s: str) -> str | None:
    acc = ""
    i = 0
    while i < len(s):
        c = s[i]
        if c in "^$":
            i += 1
            continue
        if c == "(":
            end = _close_paren(s, i)
            if end < 0:
                return None
            head = s[i + 1 : end]
            if head.startswith(("?=", "?!", "?<=", "?<!")):
                i = end + 1  # look-around: zero width
                continue
            if head.startswith("?:") or head.startswith("?>"):
                body = head[2:]
            elif head.startswith("?<"):
                close = head.find(">")
                body = head[close + 1 :]
            elif head.startswith("?"):
                return None  # inline flags and other constructs
            else:
                body = head
            part = first_chars(body)
            i = end + 1
        elif c == "\\" and s[i + 1 : i + 2] in _ZERO_WIDTH_ESCAPES:
            i += 2
            continue
        else:
            atom = _atom(s, i)
            if atom is None:
                return None
            part, i = atom
        if part is None:
            return None
        low, _, i = _repeats(s, i)
        acc += part
        if low > 0:
            return acc
    return None  # the whole sequence may match nothing
