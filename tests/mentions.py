"""Search an output tree for strings that must not be there (PII, a forgotten user's words).

Every file is searched as bytes; a Parquet file is also read as values, since its pages may
be compressed or dictionary-encoded, so a string in a column need not appear in the raw bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq


def mentions(roots: Iterable[Path], needles: Iterable[str], *, hidden_parquet: bool) -> list[str]:
    """``"<file relative to its root>: <needle>"`` for each needle found in each file under ``roots``.

    ``hidden_parquet``: also read as values a Parquet file whose name starts with "." (one no
    reader opens). The forget test asks for it: any copy of a forgotten user's rows counts. The
    PII test reads as values only the parts a reader opens; every file is still searched as bytes.
    """
    needles = list(needles)
    found = []
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                data = path.read_bytes()
                if name.endswith(".parquet") and (hidden_parquet or not name.startswith(".")):
                    data += json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
                found += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return found
