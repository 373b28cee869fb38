"""spark-submit entry: every stage of one night, in order (ingest D, mine D, windows and
scoring of D-1 and D), for cron or a scheduler that runs one application per night.

spark-submit jobs/nightly.py --conf conf/cluster.yaml --source hdfs bgl --date 2008-11-09 \\
    --input 's3a://bucket/raw/{source}/{date}/*.gz'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["nightly", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
