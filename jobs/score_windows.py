"""spark-submit entry: gold.windows of one night -> gold.anomalies (the current model).

spark-submit jobs/score_windows.py --conf conf/cluster.yaml --source hdfs --date 2008-11-09
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["score", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
