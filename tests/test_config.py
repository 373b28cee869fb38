from __future__ import annotations

from pathlib import Path

import pytest

from logcrnn.config import available_sources, load_config, load_source
from logcrnn.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[1]


def test_layers_merge_and_overrides_apply() -> None:
    cfg = load_config(
        REPO / "conf" / "local.yaml",
        overrides=["spark.conf.spark.sql.shuffle.partitions=3", "ingest.max_parse_bytes=10"],
        lake="/tmp/x",
    )
    assert cfg.spark.master == "local[*]"  # from local.yaml
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"  # from base.yaml
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == 3
    assert cfg.ingest.max_parse_bytes == 10
    assert cfg.lake.root == "/tmp/x"
    assert Path(cfg.sources_dir) == REPO / "conf" / "sources"


def test_cluster_conf_leaves_master_to_spark_submit() -> None:
    cfg = load_config(REPO / "conf" / "cluster.yaml")
    assert cfg.spark.master is None


def test_config_is_frozen() -> None:
    cfg = load_config(REPO / "conf" / "local.yaml")
    with pytest.raises(AttributeError):
        cfg.lake.root = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.spark.conf["x"] = 1  # type: ignore[index]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("lake:\n  rooot: x\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'lake\.rooot'"):
        load_config(conf)
    with pytest.raises(ConfigError, match=r"unknown config key 'ingest\.nope'"):
        load_config(REPO / "conf" / "local.yaml", overrides=["ingest.nope=1"])


def test_wrong_type_and_missing_file_are_named(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("ingest:\n  max_parse_bytes: lots\n")
    with pytest.raises(ConfigError, match=r"ingest\.max_parse_bytes: expected an integer"):
        load_config(conf)
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(child)


def test_training_loop_settings_come_from_the_config() -> None:
    cfg = load_config(
        REPO / "conf" / "local.yaml",
        overrides=["train.unknown_template_rate=0.25", "train.epochs=4"],
    )
    fit = cfg.train.fit_settings()
    assert (fit["unknown_template_rate"], fit["epochs"], fit["unknown_rate"]) == (0.25, 4, 0.05)
    for bad in ("train.unknown_template_rate=1", "train.threshold_shrink=1.5"):
        key = bad.split("=")[0]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(REPO / "conf" / "local.yaml", overrides=[bad])


def test_all_sixteen_loghub_sources_load() -> None:
    cfg = load_config(REPO / "conf" / "local.yaml")
    names = available_sources(cfg)
    assert len(names) == 16
    for name in names:
        spec = load_source(cfg, name)
        assert spec.format.rstrip().endswith("<Content>"), name
    assert [k.regex for k in load_source(cfg, "hdfs").session_keys] == [r"blk_-?\d+"]


def test_unknown_source_is_a_usage_error() -> None:
    cfg = load_config(REPO / "conf" / "local.yaml")
    with pytest.raises(UsageError, match="unknown source 'nosuch'"):
        load_source(cfg, "nosuch")
