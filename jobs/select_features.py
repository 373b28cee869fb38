"""spark-submit entry: training-period gold.windows -> gold.feature_stats, feature_scores.

spark-submit jobs/select_features.py --conf conf/cluster.yaml --source hdfs \
    --from 2008-11-01 --to 2008-11-09
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["select-features", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
