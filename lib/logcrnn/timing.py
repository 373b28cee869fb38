"""Phase timing for the jobs' logs."""

from __future__ import annotations

import logging
import time


class Phases:
    """Logs, on ``logger``, how long each phase of a job took since the previous one.

    >>> phase = Phases("hdfs 2008-11-09", logging.getLogger("x"))
    >>> phase("masked")  # logs "hdfs 2008-11-09: masked in 0.00s"
    """

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.log = logger
        self.last = time.perf_counter()

    def __call__(self, done: str) -> None:
        now = time.perf_counter()
        self.log.info("%s: %s in %.2fs", self.what, done, now - self.last)
        self.last = now
