"""spark-submit entry: lake upkeep (old nights dropped by retention, unused files vacuumed).

spark-submit jobs/maintain_lake.py --conf conf/cluster.yaml --date 2008-11-09
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from logcrnn.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["maintain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
