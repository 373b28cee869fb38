"""The distributed-engine seam: run one worker function on ``np`` processes.

:func:`run_workers` calls ``worker_fn(*args, collective_factory)`` on every worker and returns
the per-rank results (rank order).  The engine decides where the workers run and which
collective they get:

* ``horovod``: ``horovod.spark.run`` (Gloo), one Spark task per worker, each with a
  :class:`HorovodCollective` over ``horovod.torch``;
* ``torch_distributor``: ``pyspark.ml.torch.distributor.TorchDistributor`` in local mode
  (workers on the driver machine, ``torchrun``), each with a :class:`TorchCollective` over
  ``torch.distributed`` (Gloo);
* ``local``: one worker in this process with :class:`LocalCollective` (``np`` must be 1).

The worker code never imports an engine: it receives the factory.  A worker that raises
fails the whole run with a :class:`~logcrnn.errors.LogcrnnError` carrying that worker's
error (the same class when the worker raised a ``logcrnn.errors`` exception); the other
workers' consequent "peer went away" errors are not what is reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from logcrnn import errors
from logcrnn.errors import LogcrnnError, UsageError
from logcrnn.model.fitting import Collective, LocalCollective

log = logging.getLogger(__name__)

ENGINES = ("horovod", "local", "torch_distributor")

#: Error texts of workers that stopped because another one failed (not the cause).
_CONSEQUENCES = ("HorovodInternalError", "Horovod has been shut down", "Connection closed by peer")


# --------------------------------------------------------------------------------------------
# collectives


class HorovodCollective:
    """The :class:`~logcrnn.model.fitting.Collective` protocol over ``horovod.torch``.

    Constructing it initialises Horovod in this process.
    """

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()  # Horovod: join the job (Gloo rendezvous with the other workers)
        self.hvd = hvd

    def rank(self) -> int:
        return int(self.hvd.rank())

    def size(self) -> int:
        return int(self.hvd.size())

    def local_size(self) -> int:
        return int(self.hvd.local_size())

    def allreduce_mean(self, value: float, name: str) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        return float(self.hvd.allreduce(tensor, name=name, op=self.hvd.Average)[0])

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module
    ) -> torch.optim.Optimizer:
        wrapped = self.hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters()
        )
        horovod_zero_grad = wrapped.zero_grad

        def zero_grad(set_to_none: bool = True) -> None:
            # Horovod 0.28's zero_grad takes no argument (it checks that no all-reduce is
            # pending, then clears the gradients with torch's default, set_to_none=True)
            horovod_zero_grad()

        wrapped.zero_grad = zero_grad
        return cast(torch.optim.Optimizer, wrapped)

    def close(self) -> None:
        self.hvd.shutdown()


class _AveragedGradients:
    """An optimizer whose ``step`` first averages every gradient over the workers (one flat
    all-reduce per step; a parameter without a gradient counts as zeros on that worker)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], size: int):
        self.optimizer = optimizer
        self.params = params
        self.world = size

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(self.params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return self.optimizer.step(closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class TorchCollective:
    """The Collective protocol over ``torch.distributed`` (Gloo), as started by torchrun."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # Horovod: (stand-in) rendezvous via torchrun env
        self.dist = dist

    def rank(self) -> int:
        return int(self.dist.get_rank())

    def size(self) -> int:
        return int(self.dist.get_world_size())

    def local_size(self) -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", self.size()))

    def allreduce_mean(self, value: float, name: str) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        self.dist.all_reduce(tensor)
        return float(tensor[0]) / self.size()

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, src=0)
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self.dist.broadcast(value, src=0)

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module
    ) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return cast(torch.optim.Optimizer, _AveragedGradients(optimizer, params, self.size()))

    def gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.size()
        self.dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# the guarded worker call (runs inside each worker process)


def _failure(exc: BaseException) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {
        "ok": False,
        "type": type(exc).__name__,
        "message": lines[0] if lines else type(exc).__name__,
        "traceback": traceback.format_exc(),
        "rank": int(os.environ.get("HOROVOD_RANK", os.environ.get("RANK", "0"))),
    }


def horovod_task(worker_fn: Callable[..., Any], args: Sequence[Any]) -> dict[str, Any]:
    """What ``horovod.spark.run`` runs on each rank: the worker, its error caught and
    returned (so the driver learns the message), Horovod shut down either way (which makes
    the other ranks' pending operations fail fast instead of waiting)."""
    collective: HorovodCollective | None = None

    def factory() -> Collective:
        nonlocal collective
        collective = HorovodCollective()
        return collective

    try:
        return {"ok": True, "value": worker_fn(*args, factory)}
    except BaseException as exc:
        return _failure(exc)
    finally:
        if collective is not None:
            collective.close()


def torch_task(worker_fn: Callable[..., Any], args: Sequence[Any], run_dir: str) -> Any:
    """What TorchDistributor runs on each rank.  Success: every rank returns the list of all
    ranks' results (TorchDistributor keeps one rank's output file, whichever writes last);
    failure: the error is written to ``run_dir`` (on the driver's machine: local mode) and
    re-raised, so torchrun stops the other ranks."""
    collective: TorchCollective | None = None

    def factory() -> Collective:
        nonlocal collective
        collective = TorchCollective()
        return collective

    try:
        value = worker_fn(*args, factory)
    except BaseException as exc:
        failure = _failure(exc)
        path = Path(run_dir) / f"error-{failure['rank']}.json"
        path.write_text(json.dumps(failure))
        raise
    try:
        if collective is None:
            return [{"ok": True, "value": value}]
        return collective.gather({"ok": True, "value": value})
    finally:
        if collective is not None:
            collective.close()


# --------------------------------------------------------------------------------------------
# the driver side


def _raise_worker_error(failures: Sequence[dict[str, Any]]) -> None:
    causes = [f for f in failures if not any(c in f"{f['type']} {f['message']}"
                                             for c in _CONSEQUENCES)]  # fmt: skip
    first = sorted(causes or failures, key=lambda f: f["rank"])[0]
    log.debug("worker %s traceback:\n%s", first["rank"], first.get("traceback", ""))
    cls = getattr(errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, LogcrnnError)):
        cls = LogcrnnError
        message = f"training worker {first['rank']} failed: {first['type']}: {first['message']}"
    else:
        message = f"training worker {first['rank']}: {first['message']}"
    raise cls(message)


def _unwrap(results: Sequence[dict[str, Any]]) -> list[Any]:
    failures = [r for r in results if not r.get("ok")]
    if failures:
        _raise_worker_error(failures)
    return [r["value"] for r in results]


def worker_env(python_includes: Sequence[str] = ()) -> dict[str, str]:
    """The environment the Horovod workers run with: this one, with the workers' Python
    pinned to the driver's interpreter unless the deployment set ``PYSPARK_PYTHON``.

    ``python_includes`` (the file names of the application's ``--py-files`` archives) go
    first on ``PYTHONPATH``, as relative paths: a worker process runs in its executor's
    working directory, where Spark fetched them.  The driver's own ``PYTHONPATH`` names the
    driver's copies, which other hosts do not have.
    """
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    if python_includes:
        rest = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([*python_includes, *rest])
    # Horovod: its background thread wakes every cycle (1 ms by default) and shares the
    # worker's core; for this model's ~30 ms steps on CPU, 5 ms measured 15-20% more
    # windows/s with 2 workers on 2 cores (a deployment may set its own)
    env.setdefault("HOROVOD_CYCLE_TIME", "5")
    return env


def run_workers(
    worker_fn: Callable[..., Any],
    args: Sequence[Any],
    np: int,
    engine: str,
) -> list[Any]:
    """Run ``worker_fn(*args, collective_factory)`` on ``np`` workers; per-rank results.

    ``worker_fn`` must be a top-level function (it is pickled to the workers).  The Horovod
    and TorchDistributor engines need an active SparkSession.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown training engine {engine!r} (known: {', '.join(ENGINES)})")
    if np < 1:
        raise UsageError(f"--np must be >= 1, got {np}")
    log.info("running %d %s worker(s)", np, engine)
    if engine == "local":
        if np != 1:
            raise UsageError(f"the local engine runs one worker, not {np}: use horovod")
        try:
            return [worker_fn(*args, LocalCollective)]
        except LogcrnnError:
            raise
        except Exception as exc:
            raise LogcrnnError(f"training worker 0 failed: {type(exc).__name__}: {exc}") from exc
    if engine == "horovod":
        return _run_horovod(worker_fn, args, np)
    return _run_torch_distributor(worker_fn, args, np)


def _retried_py4j_send(record: logging.LogRecord) -> bool:
    """False for py4j's INFO record of a send it retried (and that then succeeded).  py4j
    logs it on the root logger, traceback and all, when a thread's connection went stale:
    the first Spark call after a Horovod run (its thread's connection closes) meets one."""
    return not (
        record.levelno == logging.INFO and record.getMessage() == "Exception while sending command."
    )


def _run_horovod(worker_fn: Callable[..., Any], args: Sequence[Any], np: int) -> list[Any]:
    import horovod.spark
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    # Horovod: the --py-files archives, by the names the executors fetched them under
    includes = list(getattr(sc, "_python_includes", None) or [])

    root = logging.getLogger()
    if _retried_py4j_send not in root.filters:  # stays: the noise comes after the run too
        root.addFilter(_retried_py4j_send)
    try:
        results = horovod.spark.run(
            horovod_task,
            args=(worker_fn, tuple(args)),
            num_proc=np,
            env=worker_env(includes),
            # the workers' stdout must not interleave with a --json line on ours
            stdout=sys.stderr,
            stderr=sys.stderr,
            verbose=0,
        )
    except Exception as exc:  # a worker process died outright (no result to read)
        text = str(exc).strip().splitlines()
        raise LogcrnnError(
            f"horovod run failed: {text[0] if text else type(exc).__name__}"
        ) from exc
    return _unwrap(results)


def _run_torch_distributor(
    worker_fn: Callable[..., Any], args: Sequence[Any], np: int
) -> list[Any]:
    from pyspark.ml.torch.distributor import TorchDistributor

    run_dir = tempfile.mkdtemp(prefix="logcrnn-train-")
    try:
        distributor = TorchDistributor(
            num_processes=np, local_mode=True, use_gpu=torch.cuda.is_available()
        )
        try:
            # TorchDistributor echoes the workers' output (stderr too) on stdout, where a
            # --json line goes
            with contextlib.redirect_stdout(sys.stderr):
                results = distributor.run(torch_task, worker_fn, tuple(args), run_dir)
        except Exception as exc:
            failures = [json.loads(p.read_text()) for p in Path(run_dir).glob("error-*.json")]
            if failures:
                _raise_worker_error(failures)
            text = str(exc).strip().splitlines()
            raise LogcrnnError(
                f"TorchDistributor run failed: {text[0] if text else type(exc).__name__}"
            ) from exc
        if not isinstance(results, list):
            raise LogcrnnError(f"TorchDistributor returned {type(results).__name__}, no results")
        return _unwrap(results)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
