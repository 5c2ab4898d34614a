"""python -m benchmarks.selection: the selection table's steps (see benchmarks/selection/__init__.py)."""

from benchmarks.selection.cli import main

raise SystemExit(main())
