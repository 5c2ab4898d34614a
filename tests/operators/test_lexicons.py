"""Domain lexicons: the shipped WordNet-derived set, user folders, and the builder's pure parts."""

import os
import re
from pathlib import Path

import pytest

from operators.lexicons import DATA_DIR, load_lexicons, read_lexicon
from operators.lexicons import _default_lexicons
from operators.lexicons.build_wordnet import LICENSE_FILE, RECIPES, inflections, plural, verb_forms, wordnet_license
from operators.sample import GENERAL_DOMAIN
from operators.scores import DomainScorer, tokenize

WORDNET_DIR = Path("/usr/share/wordnet")


def test_shipped_lexicons_load_and_are_well_formed():
    lexicons = load_lexicons()
    assert set(lexicons) == set(RECIPES)
    assert 12 <= len(lexicons) <= 20
    assert GENERAL_DOMAIN not in lexicons
    for domain, words in lexicons.items():
        assert isinstance(words, frozenset) and len(words) >= 100, domain
        bad = [w for w in words if tokenize(w) != [w]]
        assert not bad, (domain, bad[:5])


def test_shipped_folder_carries_licence_and_provenance_and_stays_small():
    licence = (DATA_DIR / LICENSE_FILE).read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence
    assert "THIS SOFTWARE AND DATABASE IS PROVIDED \"AS IS\"" in licence
    provenance = (DATA_DIR / "PROVENANCE.md").read_text()
    assert "python -m operators.lexicons.build_wordnet" in provenance
    assert "wordnet-base" in provenance
    assert sum(p.stat().st_size for p in DATA_DIR.iterdir()) < 2_000_000


def test_provenance_word_counts_match_the_files():
    provenance = (DATA_DIR / "PROVENANCE.md").read_text()
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^\| ([a-z_]+) \| (\d+) \|$", provenance, re.M)}
    assert counts == {domain: len(words) for domain, words in load_lexicons().items()}


def test_default_load_is_read_once_and_callers_cannot_corrupt_it():
    first = load_lexicons()
    hits = _default_lexicons.cache_info().hits
    first["medicine"] = frozenset({"nothing"})
    second = load_lexicons()
    assert _default_lexicons.cache_info().hits == hits + 1
    assert "fever" in second["medicine"]


@pytest.fixture(scope="module")
def shipped_scorer() -> DomainScorer:
    return DomainScorer(load_lexicons())


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("The doctor prescribed antibiotics for my throat infection and the fever.", "medicine"),
        ("My lawyer says the contract is void and we could sue them in court.", "law"),
        ("How do I fix a memory leak in my Python program when the server crashes?", "computing"),
        ("Give me a recipe for chocolate cake with butter, flour and eggs.", "food"),
        ("Our team won the football match after a penalty in the last minute.", "sport"),
        ("Who won the election and which party controls parliament now?", "politics"),
        ("Hi! How are you doing today?", GENERAL_DOMAIN),
        ("Thanks, have a good one.", GENERAL_DOMAIN),
    ],
)
def test_shipped_lexicons_find_the_obvious_domain(shipped_scorer, text, domain):
    assert shipped_scorer.score(text).domain == domain


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_a_user_folder_replaces_the_shipped_lexicons(tmp_path):
    write(tmp_path, "gardening.txt", "# my words\nCompost\nmulch  # inline comment\n\nseedling\n")
    write(tmp_path, "README.md", "not a lexicon")
    write(tmp_path, "LICENSE-Mine.txt", "not a lexicon either")
    lexicons = load_lexicons(tmp_path)
    assert lexicons == {"gardening": frozenset({"compost", "mulch", "seedling"})}
    assert DomainScorer(lexicons).score("Compost the doctor").domain == "gardening"


def test_extend_layers_a_user_folder_over_the_shipped_lexicons(tmp_path):
    write(tmp_path, "gardening.txt", "compost\n")
    write(tmp_path, "medicine.txt", "leech\n")
    lexicons = load_lexicons(str(tmp_path), extend=True)
    assert set(lexicons) == set(RECIPES) | {"gardening"}
    assert lexicons["medicine"] == frozenset({"leech"})
    assert lexicons["sport"] == load_lexicons()["sport"]


def test_read_lexicon_normalises_case_and_drops_comments(tmp_path):
    write(tmp_path, "music.txt", "# header\nGuitar\n  piano # keys\n#\n")
    assert read_lexicon(tmp_path / "music.txt") == frozenset({"guitar", "piano"})


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({"README.md": "hi"}, {}, "has no lexicon files"),
        ({}, {}, "has no lexicon files"),
        ({"music.txt": "# only a comment\n"}, {}, "has no words"),
    ],
)
def test_bad_folders_raise_value_error(tmp_path, files, kwargs, message):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ValueError, match=message):
        load_lexicons(tmp_path, **kwargs)


def test_missing_folder_and_extend_without_folder_raise(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        load_lexicons(tmp_path / "nope")
    with pytest.raises(ValueError, match="extend=True needs a folder"):
        load_lexicons(extend=True)


def test_inflection_rules():
    assert [plural(w) for w in ("fever", "fox", "bus", "allergy", "day", "physics", "sinusitis", "news")] == [
        "fevers", "foxes", "buses", "allergies", "days", None, None, None,
    ]
    assert verb_forms("tie") == ["ties", "tied", "tying"]
    assert verb_forms("free") == ["frees", "freed", "freeing"]
    assert verb_forms("prescribe") == ["prescribes", "prescribed", "prescribing"]


class _FakeWordNet:
    noun_exceptions = {"analysis": ["analyses"]}
    verb_exceptions = {"run": ["ran", "running"]}
    lemmas = {"fire", "man"}


@pytest.mark.parametrize(
    ("word", "pos", "proper", "forms"),
    [
        ("analysis", "n", False, ["analysis", "analyses"]),
        ("fireman", "n", False, ["fireman", "firemen"]),
        ("doctor", "n", False, ["doctor", "doctors"]),
        ("run", "v", False, ["run", "runs", "ran", "running"]),
        ("paris", "n", True, ["paris"]),
        ("medical", "a", False, ["medical"]),
    ],
)
def test_inflections(word, pos, proper, forms):
    assert inflections(_FakeWordNet(), word, pos, proper) == forms


def test_wordnet_license_reads_the_deb822_stanza(tmp_path):
    copyright_file = tmp_path / "copyright"
    copyright_file.write_text(
        "Files: *\nLicense: WordNet3.0\n Permission to use.\n .\n WordNet 3.0 Copyright 2006.\n\nFiles: debian/*\n"
    )
    assert wordnet_license(copyright_file) == "Permission to use.\n\nWordNet 3.0 Copyright 2006.\n"
    copyright_file.write_text("Files: *\nLicense: GPL-2\n")
    with pytest.raises(ValueError, match="no 'License: WordNet3.0' stanza"):
        wordnet_license(copyright_file)


@pytest.mark.skipif(
    not (os.environ.get("EDGETUNE_TEST_WORDNET") and (WORDNET_DIR / "data.noun").exists()),
    reason="slow (about 20 s): set EDGETUNE_TEST_WORDNET=1 with Debian's wordnet-base installed",
)
def test_regeneration_reproduces_the_shipped_files(tmp_path):
    from operators.lexicons.build_wordnet import main

    assert main(["--wordnet-dir", str(WORDNET_DIR), "--out", str(tmp_path)]) == 0
    for shipped in sorted(DATA_DIR.iterdir()):
        assert (tmp_path / shipped.name).read_text() == shipped.read_text(), shipped.name
