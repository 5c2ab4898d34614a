"""Domain lexicons for DSS: one word list per domain, read from a folder of text files.

A lexicon folder holds one ``<domain>.txt`` per domain, where ``<domain>`` is
lower-case letters, digits and underscores starting with a letter (e.g.
``medicine.txt``). Each file has one lower-case word per line; blank lines and
everything after a ``#`` are ignored. Other files in the folder (``*.md``,
``LICENSE-WordNet.txt`` and any name not of that shape) are not lexicons and
are skipped.

The shipped lexicons in ``operators/lexicons/data/`` are derived from WordNet
3.0; ``data/PROVENANCE.md`` says how (``python -m operators.lexicons.build_wordnet``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
"""The shipped lexicon folder (package data)."""

_DOMAIN_FILE = re.compile(r"[a-z][a-z0-9_]*\.txt")


def read_lexicon(path: str | Path) -> frozenset[str]:
    """The words of one lexicon file, lower-cased, comments and blank lines dropped.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "music.txt"
    >>> _ = p.write_text("# instruments\\nGuitar\\npiano  # keys\\n\\n")
    >>> sorted(read_lexicon(p))
    ['guitar', 'piano']
    """
    words = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip().lower()
        if word:
            words.add(word)
    return frozenset(words)


def _read_folder(folder: Path) -> dict[str, frozenset[str]]:
    if not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory: pass a folder holding <domain>.txt lexicon files")
    lexicons: dict[str, frozenset[str]] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and _DOMAIN_FILE.fullmatch(path.name)):
            continue
        words = read_lexicon(path)
        if not words:
            raise ValueError(f"lexicon file {str(path)!r} has no words: add one word per line or delete the file")
        lexicons[path.stem] = words
    if not lexicons:
        raise ValueError(
            f"folder={str(folder)!r} has no lexicon files: need one or more <domain>.txt files "
            f"(lower-case name, one word per line), e.g. medicine.txt"
        )
    return lexicons


@functools.lru_cache(maxsize=1)
def _default_lexicons() -> dict[str, frozenset[str]]:
    # Read once per process: the shipped folder is ~1 MB and every user's scorer shares it.
    return _read_folder(DATA_DIR)


def load_lexicons(folder: str | Path | None = None, *, extend: bool = False) -> dict[str, frozenset[str]]:
    """Domain name → word set, from ``folder`` or, by default, the shipped lexicons.

    A user ``folder`` replaces the shipped lexicons entirely, since the number
    of domains is part of DSS. With ``extend=True`` its files are layered over
    the shipped ones instead: a file with a shipped domain's name replaces that
    domain, other files add domains. Raises ``ValueError`` when the folder does
    not exist or holds no lexicon file.

    >>> lexicons = load_lexicons()
    >>> "medicine" in lexicons and "fever" in lexicons["medicine"]
    True
    """
    if folder is None:
        if extend:
            raise ValueError("extend=True needs a folder to layer over the shipped lexicons; pass folder=...")
        # A fresh dict so a caller's edits don't leak into the cached copy (the sets are frozen).
        return dict(_default_lexicons())
    user = _read_folder(Path(folder))
    return {**_default_lexicons(), **user} if extend else user
