"""Scoring: the numeric core without Spark, attention-named templates, bad model/windows."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import SparkSession

from logcrnn import score
from logcrnn.cli import main
from logcrnn.config import Config, ScoreSettings
from logcrnn.errors import DataError
from logcrnn.lake import Lake
from logcrnn.model.crnn import CRNN, CRNNConfig
from logcrnn.model.data import TemplateVectors


def _scorer(
    seq_len: int = 6, n_features: int = 2, threshold: float = 0.5, sem_dim: int = 0
) -> score.Scorer:
    torch.manual_seed(0)
    vectors = np.random.default_rng(0).normal(size=(8, sem_dim)) if sem_dim else None
    config = CRNNConfig(vocab_size=8, seq_len=seq_len, n_features=n_features, sem_dim=sem_dim)
    model = CRNN(config, vectors)
    return score.Scorer(
        model_blob=model.to_bytes(),
        version=f"v-test-{sem_dim}",  # workers cache a loaded model by its version
        threshold=threshold,
        feature_index=(0, 2)[:n_features],
        texts={"a": "open <*>", "b": "close <*>"},
    )


def _windows(n: int, seq_len: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(2, 8, size=seq_len)) for _ in range(n)]
    return pd.DataFrame(
        {
            "window_id": [f"w{i}" for i in range(n)],
            "kind": "session",
            "key": [f"blk_{i}" for i in range(n)],
            "start_ts": datetime(2008, 11, 9),
            "end_ts": datetime(2008, 11, 9, 1),
            "length": [seq_len] * n,
            "template_ids": [["a", "b", "a", "c", "b", "a"][:seq_len] for _ in range(n)],
            "sequence": seqs,
            "semantic": [list(rng.normal(size=4)) for _ in range(n)],
            "features_std": [list(rng.normal(size=3)) for _ in range(n)],
            "label": [None] * n,
            "first_file": "f.log",
            "first_line": list(range(n)),
            "last_file": "f.log",
            "last_line": list(range(1, n + 1)),
        }
    )


def test_score_frame_matches_the_model_and_applies_the_threshold() -> None:
    scorer = _scorer()
    pdf = _windows(5)
    out = score.score_frame(pdf, scorer)
    model = CRNN.from_bytes(scorer.model_blob)
    with torch.no_grad():
        expected = torch.sigmoid(
            model(
                torch.tensor(np.stack(pdf["sequence"].tolist())),
                torch.tensor(pdf["length"].to_numpy()),
                torch.tensor(
                    np.stack(pdf["features_std"].tolist())[:, [0, 2]], dtype=torch.float32
                ),
            ).logit
        ).numpy()
    assert out["score"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert (out["is_anomaly"] == (out["score"] >= 0.5)).all()
    assert list(out["window_id"]) == list(pdf["window_id"]) and list(out["last_line"]) == [
        1,
        2,
        3,
        4,
        5,
    ]
    # batching does not change the scores
    small = score.score_frame(pdf, score.Scorer(**{**scorer.__dict__, "batch_size": 2}))
    assert small["score"].to_numpy() == pytest.approx(out["score"].to_numpy(), abs=1e-6)


def test_windows_of_mixed_lengths_keep_their_own_scores_and_templates() -> None:
    # score_frame batches windows by length; every output row must still be its own window's
    scorer = dataclasses.replace(_scorer(sem_dim=4), batch_size=2)
    rng = np.random.default_rng(4)
    scorer = dataclasses.replace(
        scorer, vectors=TemplateVectors.of({t: rng.normal(size=4) for t in "abcdefg"})
    )
    lengths = [6, 2, 4, 1, 6, 3, 5]
    pdf = _windows(len(lengths))
    pdf["length"] = lengths
    # each window's events are its own letter, so a row given another window's attention
    # would name another template
    pdf["template_ids"] = [[t] * n for t, n in zip("abcdefg", lengths, strict=True)]
    seqs = zip(pdf["sequence"], lengths, strict=True)
    pdf["sequence"] = [list(s[:n]) + [0] * (6 - n) for s, n in seqs]
    pdf.at[1, "sequence"] = [1, 9, 0, 0, 0, 0]  # unknown, and outside the vocabulary (8)
    pdf.at[3, "sequence"] = [1, 0, 0, 0, 0, 0]
    out = score.score_frame(pdf, scorer)
    assert list(out["window_id"]) == list(pdf["window_id"])
    for i, t in enumerate("abcdefg"):
        alone = score.score_frame(pdf.iloc[i : i + 1], scorer)
        assert float(out["score"].iloc[i]) == pytest.approx(float(alone["score"].iloc[0]), abs=1e-6)
        assert [x["template_id"] for x in out["top_templates"].iloc[i]] == [t]
        assert out["top_templates"].iloc[i][0]["weight"] == pytest.approx(1.0, abs=1e-5)
    assert len(set(np.round(out["score"].to_numpy(), 6))) == len(lengths)
    # the events each window's model read, and those of unknown templates among them
    assert list(out["events"]) == lengths
    assert list(out["unseen_events"]) == [
        sum(1 for x in s[:n] if x == 1 or x >= 8)
        for s, n in zip(pdf["sequence"], lengths, strict=True)
    ]


def test_top_templates_sum_attention_per_template() -> None:
    att = np.array([0.1, 0.3, 0.2, 0.05, 0.25, 0.1])
    top = score.top_templates(["a", "b", "a", "c", "b", "a"], att, {"a": "open <*>"})
    assert [t["template_id"] for t in top] == ["b", "a", "c"]
    assert top[0]["weight"] == pytest.approx(0.55) and top[1]["weight"] == pytest.approx(0.4)
    assert top[1]["template"] == "open <*>" and top[0]["template"] == ""
    assert score.top_templates([], att, {}) == []
    # Spark's Arrow path hands array columns over as numpy arrays
    as_numpy = score.top_templates(np.array(["a", "b", "a", "c", "b", "a"]), att, {})
    assert [t["template_id"] for t in as_numpy] == ["b", "a", "c"]


def test_windows_of_another_sequence_length_are_refused() -> None:
    with pytest.raises(DataError, match="the model takes 6"):
        score.score_frame(_windows(3, seq_len=4), _scorer())


def test_the_window_semantic_vectors_reach_the_model() -> None:
    scorer = _scorer(sem_dim=4)
    windows = _windows(5)
    first = score.score_frame(windows, scorer)["score"].to_numpy()
    moved = windows.assign(semantic=[[v + 1.0 for v in row] for row in windows["semantic"]])
    assert (score.score_frame(moved, scorer)["score"].to_numpy() != first).all()
    short = windows.assign(semantic=[row[:3] for row in windows["semantic"]])
    with pytest.raises(DataError, match="semantic of length 3, the model takes 4"):
        score.score_frame(short, scorer)


def test_each_event_reads_its_own_template_vector_when_scored() -> None:
    base = _scorer(sem_dim=4)
    rng = np.random.default_rng(2)
    vectors = {t: rng.normal(size=4) for t in "abc"}
    scorer = dataclasses.replace(base, vectors=TemplateVectors.of(vectors))
    windows = _windows(4)
    first = score.score_frame(windows, scorer)["score"].to_numpy()
    # "c" (an unseen template: its events read as the unknown id) with another vector
    moved = dataclasses.replace(
        scorer, vectors=TemplateVectors.of({**vectors, "c": vectors["c"] + 1.0})
    )
    assert (score.score_frame(windows, moved)["score"].to_numpy() != first).all()
    # without vectors (a model saved before event vectors) the table is read
    # and reading the vectors by template id gives what the table gives by vocabulary index
    table = CRNN.from_bytes(base.model_blob).template_vectors.numpy()
    index = {"a": 2, "b": 3, "c": 4}
    by_index = dataclasses.replace(
        scorer, vectors=TemplateVectors.of({t: table[i] for t, i in index.items()})
    )
    same = windows.assign(sequence=[[index[t] for t in ids] for ids in windows["template_ids"]])
    torch.testing.assert_close(
        score.score_frame(same, by_index)["score"].to_numpy(),
        score.score_frame(same, base)["score"].to_numpy(),
    )


def test_templates_outside_the_vocabulary_score_as_unknown() -> None:
    scorer = _scorer()
    pdf = _windows(2)
    pdf.at[0, "sequence"] = [2, 3, 99, 4, 5, 6]  # a vocabulary from another model
    unknown = pdf.copy()
    unknown.at[0, "sequence"] = [2, 3, 1, 4, 5, 6]
    a = score.score_frame(pdf, scorer)["score"].to_numpy()
    b = score.score_frame(unknown, scorer)["score"].to_numpy()
    assert a == pytest.approx(b)


# --------------------------------------------------------------------------------------------
# score_night on a real lake: the bundled BGL 2k sample, trained on its first 75% (night N1),
# scored on the rest (N2); N3 has no data


N1, N2, N3 = "2005-06-03", "2005-06-04", "2005-06-05"
BGL_2K = Path(__file__).resolve().parents[1] / "data/sample/loghub_2k/BGL/BGL_2k.log.gz"


@pytest.fixture(scope="module")
def scored_lake(spark: SparkSession, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from logcrnn import ingest, mining, selection, windows
    from logcrnn.train import job

    tmp = tmp_path_factory.mktemp("score")
    root = str(tmp / "lake")
    train = dataclasses.replace(cfg.train, engine="local", np=1, epochs=2, threads=1)
    conf = dataclasses.replace(cfg, train=train, lake=dataclasses.replace(cfg.lake, root=root))
    lake = Lake(spark, root)
    lines = gzip.decompress(BGL_2K.read_bytes()).decode().splitlines()
    cut = int(len(lines) * 0.75)
    for night, part in ((N1, lines[:cut]), (N2, lines[cut:])):
        path = tmp / f"{night}.log"
        path.write_text("\n".join(part) + "\n")
        ingest.run(spark, conf, "bgl", [str(path)], night, lake=lake)
        mining.mine_night(spark, conf, lake, "bgl", night)
        windows.build_windows(spark, conf, lake, "bgl", night, use_stats=False)
    selection.select_features(spark, conf, lake, "bgl", N1, N1)
    for night in (N1, N2):
        windows.build_windows(spark, conf, lake, "bgl", night)
    report = job.train(spark, conf, lake, "bgl", N1, N1)
    return SimpleNamespace(conf=conf, lake=lake, root=root, model=report, tmp=tmp)


@pytest.mark.slow
def test_two_scoring_runs_at_once_leave_one_consistent_partition(scored_lake: Any) -> None:
    lake, conf = scored_lake.lake, scored_lake.conf
    n_windows = lake.read("gold.windows", N2, "bgl").count()
    outcomes: list[Any] = []

    def run() -> None:
        try:
            outcomes.append(score.score_night(lake.spark, conf, lake, "bgl", N2))
        except Exception as exc:  # a lost race must fail cleanly, not corrupt the night
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports = [o for o in outcomes if isinstance(o, score.ScoreReport)]
    assert reports, outcomes
    rows = lake.read("gold.anomalies", N2, "bgl")
    assert rows.count() == n_windows > 0
    assert rows.select("window_id").distinct().count() == n_windows
    assert rows.select("scored_at").distinct().count() == 1  # one run's rows, not a mix
    assert {r.model_version for r in rows.select("model_version").distinct().collect()} == {
        scored_lake.model.version
    }
    for r in reports:
        assert r.windows == n_windows and r.model_version == scored_lake.model.version


@pytest.mark.slow
def test_the_report_counts_events_of_templates_unseen_in_training(
    scored_lake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from logcrnn.model.artifact import current_artifact, load_artifact

    lake, conf = scored_lake.lake, scored_lake.conf
    model = load_artifact(current_artifact(lake.root, "bgl", conf.train.models_dir)).model
    seq_len, vocab = model.config.seq_len, model.config.vocab_size
    rows = lake.read("gold.windows", N2, "bgl").select("length", "sequence").collect()
    read = [list(r.sequence)[: min(r.length, seq_len)] for r in rows]
    events = sum(len(seq) for seq in read)
    unseen = sum(1 for seq in read for x in seq if x == 1 or x >= vocab)
    report = score.score_night(lake.spark, conf, lake, "bgl", N2)
    assert (report.events, report.unseen_events) == (events, unseen)
    assert 0 < unseen < events  # the scored night has templates the training night had not
    assert report.as_dict()["unseen_share"] == pytest.approx(unseen / events, abs=1e-6)
    # a warning above the configured share only
    for share, warned in ((1.0, False), (unseen / events / 2, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="logcrnn.score"):
            again = score.score_night(
                lake.spark, dataclasses.replace(conf, score=ScoreSettings(share)), lake, "bgl", N2
            )
        assert again.unseen_events == unseen
        assert ("not trained on" in caplog.text) is warned, caplog.text


@pytest.mark.slow
def test_templates_new_on_the_scored_night_are_scored_with_their_own_vectors(
    scored_lake: Any,
) -> None:
    from logcrnn.features import vectors_by_id
    from logcrnn.model.artifact import current_artifact, load_artifact
    from logcrnn.windows import load_stats

    lake, conf = scored_lake.lake, scored_lake.conf
    score.score_night(lake.spark, conf, lake, "bgl", N2)
    nightly = dict(lake.read("gold.anomalies", N2, "bgl").select("window_id", "score").collect())
    art = load_artifact(current_artifact(lake.root, "bgl", conf.train.models_dir))
    assert art.model.config.event_vectors
    pdf = lake.read("gold.windows", N2, "bgl").select(*score.INPUT_COLUMNS).toPandas()
    # the same model reading the unknown id's (zero) vector for every unseen template
    by_index = score.Scorer(model_blob=art.model.to_bytes(), version="by-index",
                            threshold=art.threshold, feature_index=tuple(art.feature_index),
                            texts={})  # fmt: skip
    plain = score.score_frame(pdf, by_index).set_index("window_id")["score"]
    # each unseen template's own vector (zeros when none of its tokens was in training)
    stats = load_stats(lake, "bgl", art.stats_night)
    assert stats is not None
    vectors = vectors_by_id(lake.read("silver.templates", N2, "bgl").collect(), stats)
    told, silent = [], []
    for wid, ids, seq in zip(pdf["window_id"], pdf["template_ids"], pdf["sequence"], strict=True):
        new = [t for t, i in zip(ids, seq, strict=False) if i == 1]
        if new:
            (told if any(vectors[t].any() for t in new) else silent).append(wid)
    assert len(told) >= 10  # the later part of the log brings templates N1 never showed
    assert all(nightly[w] != plain[w] for w in told)
    assert all(nightly[w] == plain[w] for w in silent)


@pytest.mark.slow
def test_a_night_without_windows_is_an_empty_partition_and_exit_0(
    scored_lake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["score", "--lake", scored_lake.root, "--source", "bgl", "--date", N3])
    assert code == 0
    assert "0 windows scored" in capsys.readouterr().out
    assert scored_lake.lake.read("gold.anomalies", N3, "bgl").count() == 0


@pytest.mark.slow
def test_missing_or_corrupt_model_is_one_line_naming_the_path(
    scored_lake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = scored_lake.tmp / "no-such-model"
    code = main(["score", "--lake", scored_lake.root, "--source", "bgl", "--date", N2,
                 "--model", str(missing)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and str(missing) in err[-1]
    broken = scored_lake.tmp / "broken"
    shutil.copytree(scored_lake.model.path, broken)
    (broken / "weights.pt").write_bytes(b"not a torch file")
    before = scored_lake.lake.history("gold.anomalies")
    code = main(["score", "--lake", scored_lake.root, "--source", "bgl", "--date", N2,
                 "--model", str(broken)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and str(broken) in err[-1]
    assert len(scored_lake.lake.history("gold.anomalies")) == len(before)  # nothing written


@pytest.mark.slow
def test_windows_built_with_other_statistics_are_refused(scored_lake: Any) -> None:
    from logcrnn import selection, windows

    lake, conf = scored_lake.lake, scored_lake.conf
    selection.select_features(lake.spark, conf, lake, "bgl", N2, N2)  # statistics of N2
    windows.build_windows(lake.spark, conf, lake, "bgl", N2, stats_night=N2)
    try:
        with pytest.raises(DataError, match="rebuild the windows with --stats 2005-06-03"):
            score.score_night(lake.spark, conf, lake, "bgl", N2)
    finally:
        windows.build_windows(lake.spark, conf, lake, "bgl", N2, stats_night=N1)


@pytest.mark.slow
def test_nightly_rerun_changes_nothing_and_a_night_without_files_exits_0(
    scored_lake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lake, pattern = scored_lake.lake, str(scored_lake.tmp / "{date}.log")
    args = ["nightly", "--lake", scored_lake.root, "--source", "bgl", "--input", pattern]

    tables = ("bronze.raw_lines", "silver.events", "gold.windows", "gold.anomalies")

    def counts() -> dict[str, int]:
        return {t: lake.read(t, N2, "bgl").count() for t in tables}

    assert main([*args, "--date", N2]) == 0
    first = counts()
    assert first["bronze.raw_lines"] == 500 and first["gold.anomalies"] == first["gold.windows"]
    assert main([*args, "--date", N2]) == 0
    assert counts() == first  # every stage replaced its partition
    capsys.readouterr()
    assert main([*args, "--date", N3]) == 0  # no file for N3
    out = capsys.readouterr().out
    assert "no raw files" in out
    assert lake.read("gold.anomalies", N3, "bgl").count() == 0
    assert counts() == first  # the night before was rebuilt from the same events
