"""spark-submit entry: raw log files -> bronze.raw_lines.

    spark-submit jobs/ingest_logs.py --conf conf/cluster.yaml --source hdfs \
        --input 's3a://logs/hdfs/2008-11-09/*.gz' --date 2008-11-09
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["ingest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
