"""``python -m benchmarks.policy_table``: see the package's docstring."""

import sys

from benchmarks.policy_table.cli import main

if __name__ == "__main__":
    sys.exit(main())
