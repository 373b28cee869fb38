"""Drain3 wrapper: stable ids, incremental nights, state round-trip; GA/PA; parse-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logcrnn.cli import main
from logcrnn.errors import DataError
from logcrnn.parse_eval import grouping_accuracy, parsing_accuracy
from logcrnn.templates import TemplateMiner, template_id

LOGHUB = Path(__file__).resolve().parents[1] / "data" / "sample" / "loghub_2k"

NIGHT_1 = [
    "Receiving block <*> src: <*> dest: <*>",
    "Receiving block <*> src: <*> dest: <*>",
    "PacketResponder <*> for block <*> terminating",
    "Deleting block <*> file <*>",
]


def test_grouping_accuracy_by_hand() -> None:
    truth = ["A", "A", "B", "B", "C"]
    assert grouping_accuracy(truth, ["x", "x", "y", "y", "z"]) == 1.0
    # B split in two: its 2 lines are wrong, A and C right
    assert grouping_accuracy(truth, ["x", "x", "y", "w", "z"]) == pytest.approx(3 / 5)
    # A and C merged: 3 lines wrong
    assert grouping_accuracy(truth, ["x", "x", "y", "y", "x"]) == pytest.approx(2 / 5)


def test_parsing_accuracy_by_hand() -> None:
    assert parsing_accuracy(["a <*> b", "c  d"], ["a <*> b", "c d"]) == 1.0
    assert parsing_accuracy(["a <*> b", "c d"], ["a b b", "c d"]) == 0.5


def test_ids_are_stable_hashes_and_nights_add_only_new_templates() -> None:
    miner = TemplateMiner("hdfs").fit(NIGHT_1)
    assert miner.n_templates == 3
    tid = miner.match("PacketResponder <*> for block <*> terminating")
    assert tid == template_id("hdfs", "PacketResponder <*> for block <*> terminating")
    before = dict(miner.templates_)
    miner.fit(NIGHT_1)  # the same night again
    assert miner.templates_ == before
    miner.fit([*NIGHT_1, "Verification succeeded for <*>"])  # one new message type
    assert set(miner.templates_) - set(before) == {
        template_id("hdfs", "Verification succeeded for <*>")
    }


def test_generalised_template_keeps_old_id_resolving() -> None:
    miner = TemplateMiner("x").fit(["user alice logged in from web"])
    old = miner.match("user alice logged in from web")
    assert old is not None
    miner.fit(["user bob logged in from web"])  # Drain3 generalises the cluster
    new = miner.match("user bob logged in from web")
    assert new == template_id("x", "user <*> logged in from web") != old
    assert miner.resolve(old) == new
    assert old not in miner.templates_


def test_state_round_trip_gives_the_same_ids(tmp_path: Path) -> None:
    miner = TemplateMiner("hdfs", sim_th=0.5).fit([(m, 3) for m in NIGHT_1])
    restored = TemplateMiner.from_bytes(miner.to_bytes())
    assert restored.get_params() == miner.get_params()
    assert restored.templates_ == miner.templates_
    for message in NIGHT_1:
        assert restored.match(message) == miner.match(message)
    restored.fit(NIGHT_1)
    assert restored.templates_ == miner.templates_


def test_corrupt_or_foreign_state_is_a_clear_error() -> None:
    good = json.loads(TemplateMiner("a").fit(["x y"]).to_bytes())
    with pytest.raises(DataError, match="state.bin: not a template-miner state"):
        TemplateMiner.from_bytes(b"\x00\xffgarbage", name="state.bin")
    with pytest.raises(DataError, match="version 99"):
        TemplateMiner.from_bytes(json.dumps({**good, "version": 99}).encode(), name="s")
    with pytest.raises(DataError, match="s: corrupt template-miner state"):
        TemplateMiner.from_bytes(json.dumps({**good, "drain3_state": "!!"}).encode(), name="s")
    with pytest.raises(DataError, match="not been fitted"):
        TemplateMiner("a").match("x")


def test_parse_eval_hdfs_sample(capsys: pytest.CaptureFixture[str]) -> None:
    hdfs = LOGHUB / "HDFS"
    code = main(["parse-eval", "--source", "hdfs", "--log", str(hdfs / "HDFS_2k.log.gz"),
                 "--truth", str(hdfs / "HDFS_2k.log_structured.csv.gz"), "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["lines"] == 2000 and result["templates_true"] == 14
    # measured with the generic masks: 0.998 (the issue asks >= 0.99 for HDFS)
    assert result["grouping_accuracy"] >= 0.99


@pytest.mark.slow
def test_parse_eval_every_loghub_system(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's accuracy figures on the 16 Loghub 2k samples (measured: mean GA 0.964)."""
    assert main(["parse-eval", "--all", str(LOGHUB), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ga = {r["source"]: r["grouping_accuracy"] for r in result["systems"]}
    assert len(ga) == 16
    assert result["mean_ga"] >= 0.95
    assert min(ga.values()) >= 0.85, ga
    assert ga["hdfs"] >= 0.99 and ga["bgl"] >= 0.96
