"""spark-submit entry: bronze.raw_lines -> silver.events, silver.templates (Drain3, distributed).

spark-submit jobs/mine_templates.py --conf conf/cluster.yaml --source hdfs --date 2008-11-09
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["mine", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
