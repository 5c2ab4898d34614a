"""operators/ is the product's logic alone: importing every module of it loads no engine and no torch."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import operators

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"bytewax", "torch", "transformers", "peft", "flows", "models"})))
"""


def test_importing_all_of_operators_loads_no_bytewax_torch_flows_or_models():
    names = [m.name for m in pkgutil.walk_packages(operators.__path__, "operators.")]
    assert "operators.rows" in names and "operators.state" in names  # the walk found the modules
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(names)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []
