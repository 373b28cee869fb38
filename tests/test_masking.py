"""Masking in Spark: one scan per token group, a first-character look-ahead that changes nothing,
masked text and values from one scan (Spark's built-ins, or the project's Java function)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from logcrnn.config import Config, available_sources, load_source
from logcrnn.masking import (
    JVM_MASK,
    JVM_MASK_VALUES,
    MARK,
    Branch,
    Masker,
    first_chars,
    jvm_branches,
    look_ahead,
    masks_for,
)
from logcrnn.spark import jvm_function
from logcrnn.templates import DEFAULT_MASKS, MaskRule

LOGHUB = Path(__file__).resolve().parents[1] / "data" / "sample" / "loghub_2k"


@pytest.mark.parametrize(
    ("regex", "first"),
    [
        (r"blk_-?\d+", "b"),
        (r"(?<![\w.])/?\d{1,3}(?:\.\d{1,3}){3}", r"\/\d"),
        (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])", r"\-+\d"),
        (r"[\w./-]+|[a-]", r"\w./\-a\-"),
        (r"\b[0-9a-f]{8}-", "0-9a-f"),
        (r"(?:ab|cd)e|x*y", "acxy"),
        (r"(?<user>\w+)@", r"\w"),
        (r"\p{L}+", r"\p{L}"),
        # anything that may start anywhere or match nothing gets no look-ahead
        (r".*x", None),
        (r"a?", None),
        (r"\d*", None),
        (r"(?i)error", None),
        (r"[^a]b", None),
        (r"x|", None),
        (r"[a[b]]", None),
    ],
)
def test_first_chars(regex: str, first: str | None) -> None:
    assert first_chars(regex) == first


@pytest.mark.parametrize(
    ("regex", "ahead"),
    [
        (r"blk_-?\d+", "(?=[b])"),
        # a rule that starts at a word boundary keeps it in its branch of the look-ahead,
        # with its first two characters where the regex says what they are
        (r"(?:blk_\d+)|(?:\b[0-9a-f]{8}-)|(?:\b0x\d+)", r"(?=[b]|\b[0-9a-f0][0-9a-fx])"),
        (r"\b[0-9a-f]{8}-", r"(?=\b[0-9a-f][0-9a-f])"),
        (r"\b\d{2,}", r"(?=\b[\d][\d])"),
        (r"\ba+c", r"(?=\b[a][ac])"),
        # one character where a match may be one character long or the first may be absent
        (r"(?:\bx)|(?:\bab)", r"(?=\b[xa])"),
        (r"\ba+", r"(?=\b[a])"),
        (r"\b[KGTM]?B\b", r"(?=\b[KGTMB])"),
        (r"(?:(?:\bx)|y)", r"(?=[y]|\b[x])"),
        # a repeated group is not a whole alternative: its \b is not looked into
        (r"(?:\bx)+|y", r"(?=[xy])"),
        (r"(?:\bx)|.*", None),
    ],
)
def test_look_ahead(regex: str, ahead: str | None) -> None:
    assert look_ahead(regex) == ahead


def test_jvm_branches_say_what_rules_each_branch_out() -> None:
    hdfs = "|".join(f"(?:{r.regex})" for r in (MaskRule("block", r"blk_-?\d+"), *DEFAULT_MASKS))
    got = jvm_branches(hdfs)
    assert got is not None
    assert [(b.firsts, b.word_start, b.seconds, b.not_after) for b in got] == [
        ("b", False, "l", None),  # blk_
        ("0-9a-fA-F", True, "0-9a-fA-F", None),  # uuid
        (r"\/\d", False, None, r"\w."),  # ip:port, behind (?<![\w.])
        ("0", True, "xX", None),  # 0x hex
        (r"\-+\d", False, None, r"\w."),  # number
    ]
    assert [b.regex for b in got] == [r"blk_-?\d+", *(r.regex for r in DEFAULT_MASKS)]
    # a whole group opens up into its alternatives; what cannot be analysed is tried anywhere
    assert jvm_branches(r"(?:ab|(?<=x)c*)|d") == [
        Branch("ab", "a", seconds="b"), Branch("(?<=x)c*", None), Branch("d", "d")
    ]  # fmt: skip
    # back-references would be renumbered in a subset of the branches
    assert jvm_branches(r"(a)\1|b") is None
    assert jvm_branches("(?:" * 2 + "a") is None  # unbalanced
    assert jvm_branches("|".join("x" * 64)) is None  # more than 63 branches
    assert Masker((MaskRule("any", r"a?"),)).jvm_scans[0][2] == ""  # nothing to test


def test_rules_with_one_token_share_a_scan_unless_they_read_masked_text() -> None:
    rules = (
        MaskRule("a", r"(?<!\w)\d+"),
        MaskRule("b", r"0x[0-9a-f]+"),
        MaskRule("c", r"<\*>:<\*>", "<*>"),
        MaskRule("d", r"\w+@\w+", "<EMAIL>"),
    )
    scans = Masker(rules).scans
    assert [token for _, token in scans] == ["<*>", "<*>", "<EMAIL>"]
    assert scans[0][0] == r"(?=[\d0])(?:(?:(?<!\w)\d+)|(?:0x[0-9a-f]+))"


def test_masking_and_values(spark: SparkSession) -> None:
    text = (
        "Got 42 bytes from /10.250.19.102:54106 at 0x7f3a id 3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    )
    df = spark.createDataFrame([(text,)], "t string")
    masker = Masker(DEFAULT_MASKS)
    row = df.select(
        masker.masked(F.col("t")).alias("m"), masker.values(F.col("t")).alias("v")
    ).first()
    assert row is not None
    assert row.m == "Got <*> bytes from <*> at <*> id <*>"
    assert row.v == ["42", "/10.250.19.102:54106", "0x7f3a", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"]


def test_one_scan_masked_values_equal_the_two_scans(spark: SparkSession) -> None:
    start, end = MARK
    texts = [
        "Got 42 bytes from /10.250.19.102:54106 at 0x7f3a",
        "nothing to mask here",
        "",
        None,
        f"marker {start}in{end} the text 7 and {end} 8",
        f"{start}12{end}",
        "ünïcode 12 ∆ 0xff",
    ]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, t string")
    for rules in (DEFAULT_MASKS, (MaskRule("a", r"\d+"), MaskRule("b", r"<\*>-<\*>"))):
        masker = Masker(rules)
        both = masker.with_masked_values(df, F.col("t"), "m", "v", jvm=False)
        plan = both._jdf.queryExecution().optimizedPlan().toString()
        # one scan when the rules make one: the marking replacement is in the plan, once
        assert plan.count(f"{start}$0{end}") == (1 if len(masker.scans) == 1 else 0)
        got = both.orderBy("i").collect()
        want = (
            df.select(
                "i", "t", masker.masked(F.col("t")).alias("m"), masker.values(F.col("t")).alias("v")
            )
            .orderBy("i")
            .collect()
        )
        assert got == want


def _loghub_lines(cfg: Config) -> list[tuple[str, str]]:
    """(source, line) of the 16 systems' Loghub 2k samples."""
    rows = []
    for source in available_sources(cfg):
        folder = next((p for p in LOGHUB.iterdir() if p.name.lower() == source), None)
        if folder is None:
            continue
        lines = gzip.decompress(next(folder.glob("*_2k.log.gz")).read_bytes()).decode()
        rows += [(source, line) for line in lines.splitlines()]
    return rows


def test_the_java_function_gives_the_built_ins_output(spark: SparkSession, cfg: Config) -> None:
    """lib/logcrnn/jvm/MaskValues.java and Mask.java against the built-ins, on every Loghub
    sample and on the texts the built-ins' one scan treats apart (control characters, null,
    empty, huge), and on texts where a start character does not start a match."""
    if shutil.which("javac") is None and not jvm_function(spark, JVM_MASK_VALUES):
        pytest.skip("no JDK here: make setup could not build the Java functions")
    # with a JDK, make setup builds the jar and the session factory registers it
    assert jvm_function(spark, JVM_MASK_VALUES)
    start, end = MARK
    odd = [
        f"marker {start}in{end} the text 7 and {end} 8",
        f"{start}12{end}",
        "ünïcode 12 ∆ 0xff \U0001f600 😀 3",
        "",
        None,
        "1 " * 5000,
        "x" * 1_000_000 + " 42",
        "job_200811092030_0001 a1b2c3d4-0000-0000-0000-000000000000 deadbeef 0xff x0x1 é7 _12",
        "12abc 1.2.3.4.5 /1.2.3.4:80 b7 blk_-1 ab12cd34-ab12-cd34-ef56-ab12cd34ef56x",
        # the branch tests: a second character at the end, after a non-ASCII or a rejected
        # character, a first character alone
        "0",
        "0x",
        "a 0x",
        "b",
        "bl",
        "blk_1",
        "é12 ü0x1f .5 a.5 _5 x-5 -5 +5 é/1.2.3.4",
        "ab12cd34-ab12-cd34-ef56-ab12cd34ef5",
        "0xg 0X1 x0x1 a0x1 ∆0x1",
    ]
    rows = _loghub_lines(cfg) + [("hdfs", t) for t in odd]
    df = spark.createDataFrame(rows, "source string, t string").cache()
    skipping = 0  # sources whose scans test the branches' start characters
    for source in available_sources(cfg):
        masker = Masker(masks_for(load_source(cfg, source)))
        one = df.where(F.col("source") == source)
        java = masker.with_masked_values(one, F.col("t"), "m", "v", jvm=True)
        plan = java._jdf.queryExecution().optimizedPlan().toString()
        if len(masker.scans) == 1:
            assert plan.count(JVM_MASK_VALUES) == 1, source  # computed once per row
        built_in = masker.with_masked_values(one, F.col("t"), "m", "v", jvm=False)
        assert JVM_MASK_VALUES not in built_in._jdf.queryExecution().optimizedPlan().toString()
        got = java.select(F.to_json(F.struct("t", "m", "v")).alias("j"))
        want = built_in.select(F.to_json(F.struct("t", "m", "v")).alias("j"))
        assert got.exceptAll(want).count() == 0 and want.exceptAll(got).count() == 0, source
        assert got.count() == one.count()
        # the mask alone (the distinct-messages pass), every scan of the source
        masked = one.select(masker.masked(F.col("t"), jvm=True).alias("m"), "t")
        assert JVM_MASK in masked._jdf.queryExecution().optimizedPlan().toString()
        plain = one.select(masker.masked(F.col("t"), jvm=False).alias("m"), "t")
        assert JVM_MASK not in plain._jdf.queryExecution().optimizedPlan().toString()
        assert masked.exceptAll(plain).count() == 0 and plain.exceptAll(masked).count() == 0
        skipping += any(starts for _, _, starts in masker.jvm_scans)
    assert skipping == 16
    # rules whose \b stands before a non-word character, and a non-ASCII letter before a
    # word start
    odd_rules = Masker((MaskRule("neg", r"\b-\d+"), MaskRule("hex", r"\b[0-9a-f]{4}\b")))
    assert all(starts for _, _, starts in odd_rules.jvm_scans)
    texts = spark.createDataFrame(
        [(0, "a-12 -3 x-4 _-5 é-6 beef xbeef 9-9"), (1, "ébeef ébeefé ∆beef")], "i int, t string"
    )
    java_m = texts.select(odd_rules.masked(F.col("t"), jvm=True)).orderBy("i").collect()
    plain_m = texts.select(odd_rules.masked(F.col("t"), jvm=False)).orderBy("i").collect()
    assert java_m == plain_m  # where \b falls after a non-ASCII letter is the JDK's call
    assert java_m[0][0] == "a<*> -3 x<*> _<*> é<*> <*> xbeef 9<*>"
    # a scan of one branch jumps between occurrences of the branch's literal start: an
    # optional, repeated or escaped character ends it (each rule its own token, own scan)
    prefixed = Masker(
        tuple(
            MaskRule(f"r{i}", regex, f"<{i}>")
            for i, regex in enumerate(
                (r"ab?c\d", r"xy+z", r"job_\d+", r"qq-?\d", r"k\.\d", r"\bwe\d", r"(?<!a)rs\d")
            )
        )
    )
    assert all(starts for _, _, starts in prefixed.jvm_scans)
    lines = [
        "ac1 abc2 abbc3 abc xz xyz xyyz job_ job_7 jo_2 qq1 qq-2 qq--3 q1 k.4 kx5 k.",
        "we1 awe2 _we3 éwe4 rs1 ars2 brs3 ærs4 jjob_8 abcab c1 xyzz ac",
        "",
        "job_1job_2jjob_3",
    ]
    texts = spark.createDataFrame(list(enumerate(lines)), "i int, t string")
    java_m = texts.select(prefixed.masked(F.col("t"), jvm=True)).orderBy("i").collect()
    plain_m = texts.select(prefixed.masked(F.col("t"), jvm=False)).orderBy("i").collect()
    assert java_m == plain_m
    assert java_m[0][0] == (
        "<0> <0> abbc3 abc xz <1> <1> job_ <2> jo_2 <3> <3> qq--3 q1 <4> kx5 k."
    )
    hdfs = Masker(masks_for(load_source(cfg, "hdfs")))
    edge = df.where(F.col("t").isNull() | (F.length("t") > 9000))
    got = hdfs.with_masked_values(edge, F.col("t"), "m", "v", jvm=True).orderBy(F.length("t"))
    nothing, tokens, huge = got.collect()
    assert nothing.m is None and nothing.v is None
    assert tokens.v == ["1"] * 5000 and tokens.m == "<*> " * 5000
    assert huge.v == ["42"] and huge.m == "x" * 1_000_000 + " <*>"
    df.unpersist()


def test_the_look_ahead_changes_no_output_on_any_loghub_sample(
    spark: SparkSession, cfg: Config
) -> None:
    df = spark.createDataFrame(_loghub_lines(cfg), "source string, t string").cache()
    checked = 0
    for source in available_sources(cfg):
        rules = masks_for(load_source(cfg, source))
        fast, plain = Masker(rules), Masker(rules, guard=False)
        assert fast.scans != plain.scans or not any(first_chars(r) for r, _ in plain.scans)
        one = df.where(F.col("source") == source)
        both = fast.with_masked_values(one, F.col("t"), "m", "v")
        diff = both.where(
            (fast.masked(F.col("t")) != plain.masked(F.col("t")))
            | (F.to_json(fast.values(F.col("t"))) != F.to_json(plain.values(F.col("t"))))
            | (F.col("m") != plain.masked(F.col("t")))
            | (F.to_json(F.col("v")) != F.to_json(plain.values(F.col("t"))))
        )
        assert diff.count() == 0, source
        checked += one.count()
    df.unpersist()
    assert checked == 32000  # the 16 systems' 2k samples
