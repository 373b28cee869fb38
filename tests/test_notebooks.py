"""Notebooks run top to bottom on a lake the demo wrote (they read, they define no job logic)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from pyspark.sql import SparkSession

from logcrnn import ingest
from logcrnn.config import Config
from logcrnn.lake import Lake

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.mark.slow
def test_explore_bronze_notebook_runs(spark: SparkSession, cfg: Config, tmp_path: Path) -> None:
    lake = Lake(spark, str(tmp_path / "lake"))
    ingest.run(
        spark, cfg, "hdfs", [str(SAMPLE / "hdfs" / "HDFS_20000.log.gz")], "2008-11-09", lake=lake
    )
    nb = nbformat.read(REPO / "notebooks" / "01_explore_bronze.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = (
        f"LAKE = {str(tmp_path / 'lake')!r}\nNIGHT = '2008-11-09'\n"
        f"CONF = {str(REPO / 'conf' / 'local.yaml')!r}\n"
    )
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "20000" in outputs  # the per-source table shows every line
    assert not [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
