"""The pinned stack that `make setup` installs is the one present (DESIGN.md section 3)."""

from __future__ import annotations

import importlib.metadata as md


def test_pins() -> None:
    assert md.version("pyspark") == "3.5.7"
    assert md.version("pyarrow") == "14.0.2"  # petastorm 0.13.1 needs pyarrow.filesystem
    assert md.version("numpy").startswith("1.26.")
    assert md.version("pandas").startswith("2.1.")
    assert md.version("torch").startswith("2.13.0")
    assert md.version("horovod") == "0.28.1"
    assert md.version("petastorm") == "0.13.1"
    assert md.version("drain3") == "0.9.11"
    assert md.version("deltalake").startswith("1.6")
    assert md.version("delta-spark").startswith("3.")


def test_horovod_has_pytorch_and_gloo() -> None:
    import horovod.torch as hvd

    assert hvd.gloo_built()
    assert not hvd.mpi_built()


def test_petastorm_imports_with_pinned_pyarrow() -> None:
    import petastorm  # noqa: F401
    from petastorm import make_batch_reader  # noqa: F401
    from pyarrow import filesystem  # noqa: F401  (removed in pyarrow 15)
