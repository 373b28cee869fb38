"""spark-submit entry: gold.windows of a training period -> a CRNN model artifact.

spark-submit jobs/train_model.py --conf conf/cluster.yaml --source hdfs \
    --from 2008-11-01 --to 2008-11-09 --np 8 --engine horovod
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
