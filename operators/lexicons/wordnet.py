"""A reader for the WordNet 3.0 database files (``data.*``, ``index.*``, ``*.exc``, ``cntlist.rev``).

Only what :mod:`operators.lexicons.build_wordnet` needs, parsed straight from
the files of Debian's ``wordnet-base`` (format: wndb(5WN), senseidx(5WN)), so
no nltk. Nothing here decides what goes into a lexicon; that is the builder's
recipe.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPONYM = ("~", "~i")  # hyponym, instance hyponym
TOPIC = ";c"  # this synset belongs to that topic domain
USAGE = ";u"  # this synset belongs to that usage domain (slang, obscenity...)
DERIVATION = "+"  # derivationally related form (stored in both directions)
PERTAINYM = "\\"  # adjective pertaining to a noun (stored from the adjective only)

# Lexicographer file names by number, fixed by WordNet 3.0 (lexnames(5WN)); Debian ships no lexnames file.
LEXNAMES: tuple[str, ...] = tuple("""adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact
noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion
verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl""".split())

SynsetId = tuple[str, int]
"""(part of speech in ``n v a r``, byte offset in that ``data.*`` file)."""


@dataclass(frozen=True)
class Synset:
    """One line of a WordNet ``data.*`` file, reduced to what the lexicon builder uses."""

    id: SynsetId
    lexfile: str
    lemmas: tuple[str, ...]
    lex_ids: tuple[int, ...]
    pointers: tuple[tuple[str, SynsetId], ...]
    """Every pointer as (symbol, target synset)."""
    word_links: tuple[tuple[str, int, SynsetId, int], ...]
    """Lexical pointers: (symbol, index of our lemma, target synset, index of the target's lemma)."""
    gloss: str


def parse_data_line(line: str, pos: str) -> Synset:
    """Parse one synset line of ``data.<pos>`` (``pos`` in ``n v a r``).

    >>> s = parse_data_line("02760117 01 a 01 medical 0 003 + 00142361 n 0105 + 00612160 n 0101 "
    ...                     "\\\\ 00612160 n 0101 | relating to the study or practice of medicine", "a")
    >>> s.id, s.lexfile, s.lemmas, s.word_links[2]
    (('a', 2760117), 'adj.pert', ('medical',), ('\\\\', 0, ('n', 612160), 0))
    """
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lexfile, n_words = int(fields[0]), int(fields[1]), int(fields[3], 16)
    # Adjective lemmas may carry a syntactic marker such as "(a)" or "(ip)".
    lemmas = tuple(re.sub(r"\([a-z]+\)$", "", fields[4 + 2 * i]) for i in range(n_words))
    lex_ids = tuple(int(fields[5 + 2 * i], 16) for i in range(n_words))
    i = 4 + 2 * n_words
    pointers, word_links = [], []
    for _ in range(int(fields[i])):
        symbol, target, target_pos, words = fields[i + 1], int(fields[i + 2]), fields[i + 3], fields[i + 4]
        # Satellite adjectives ("s") live in data.adj like head adjectives.
        target_id = ("a" if target_pos == "s" else target_pos, target)
        pointers.append((symbol, target_id))
        if words != "0000":  # "ssTT": lemma ss of this synset to lemma TT of the target, 1-based hex
            word_links.append((symbol, int(words[:2], 16) - 1, target_id, int(words[2:], 16) - 1))
        i += 4
    return Synset((pos, offset), LEXNAMES[lexfile], lemmas, lex_ids, tuple(pointers), tuple(word_links),
                  gloss.strip())


def _records(path: Path) -> Iterable[str]:
    # Data and index files open with a licence header whose lines start with two spaces.
    with open(path, encoding="utf-8") as f:
        yield from (line for line in f if not line.startswith("  "))


def read_synsets(wordnet_dir: Path) -> dict[SynsetId, Synset]:
    """Every synset of the four ``data.*`` files."""
    return {
        synset.id: synset
        for pos, name in POS_FILES.items()
        for synset in (parse_data_line(line, pos) for line in _records(wordnet_dir / f"data.{name}"))
    }


def parse_index_line(line: str) -> tuple[tuple[str, str], tuple[SynsetId, ...]]:
    """One ``index.<pos>`` line → ((lemma, pos), its synsets in sense order, most frequent first).

    >>> parse_index_line("medical a 3 3 ! \\\\ + 3 3 02760117 01168988 02607456  ")
    (('medical', 'a'), (('a', 2760117), ('a', 1168988), ('a', 2607456)))
    """
    fields = line.split()
    lemma, pos, n_senses = fields[0], fields[1], int(fields[2])
    pos = "a" if pos == "s" else pos
    return (lemma, pos), tuple((pos, int(offset)) for offset in fields[-n_senses:])


def read_index(wordnet_dir: Path) -> dict[tuple[str, str], tuple[SynsetId, ...]]:
    """(lower-case lemma, pos) → its synsets in sense order, from the four ``index.*`` files."""
    return dict(
        parse_index_line(line) for name in POS_FILES.values() for line in _records(wordnet_dir / f"index.{name}")
    )


def read_exceptions(wordnet_dir: Path, pos_name: str) -> dict[str, list[str]]:
    """Base form → irregular inflected forms, from ``<pos>.exc`` (stored inflected → base)."""
    forms: dict[str, list[str]] = defaultdict(list)
    for line in (wordnet_dir / f"{pos_name}.exc").read_text(encoding="utf-8").splitlines():
        inflected, *bases = line.split()
        for base in bases:
            forms[base].append(inflected)
    return dict(forms)


def read_sense_counts(
    wordnet_dir: Path, synsets: Mapping[SynsetId, Synset]
) -> tuple[dict[str, int], dict[tuple[str, SynsetId], int]]:
    """SemCor tag counts from ``cntlist.rev``: per lemma (all parts of speech) and per (lemma, synset).

    A sense key ``bank%1:14:00::`` names lemma, part of speech (1 noun, 2 verb,
    3/5 adjective, 4 adverb), lexicographer file and lex id; a data line gives
    the same four for each of its lemmas, which maps keys to synsets.
    Satellite keys also name a head word, which we ignore: a collision only
    mixes the counts of two satellite senses of one adjective.
    """
    lexfile_numbers = {name: n for n, name in enumerate(LEXNAMES)}
    by_key: dict[tuple[str, str, int, int], SynsetId] = {}
    for synset in synsets.values():
        number = lexfile_numbers[synset.lexfile]
        for lemma, lex_id in zip(synset.lemmas, synset.lex_ids):
            by_key.setdefault((lemma.lower(), synset.id[0], number, lex_id), synset.id)
    ss_pos = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
    per_lemma: dict[str, int] = defaultdict(int)
    per_sense: dict[tuple[str, SynsetId], int] = defaultdict(int)
    for line in (wordnet_dir / "cntlist.rev").read_text(encoding="utf-8").splitlines():
        key, _, count = line.split()
        lemma, _, rest = key.partition("%")
        ss_type, lexfile, lex_id = rest.split(":")[:3]
        per_lemma[lemma] += int(count)
        synset_id = by_key.get((lemma, ss_pos[ss_type], int(lexfile), int(lex_id)))
        if synset_id is not None:
            per_sense[(lemma, synset_id)] += int(count)
    return dict(per_lemma), dict(per_sense)


class WordNet:
    """The parsed database with the look-ups the lexicon builder needs (loads in about 15 s).

    Skipped as a doctest because it needs Debian's ``wordnet-base``:

    >>> wn = WordNet(Path("/usr/share/wordnet"))  # doctest: +SKIP
    >>> wn.synset("medicine.n.02").lemmas  # doctest: +SKIP
    ('medicine', 'medication', 'medicament', 'medicinal_drug')
    """

    def __init__(self, wordnet_dir: Path) -> None:
        self.wordnet_dir = wordnet_dir
        self.synsets = read_synsets(wordnet_dir)
        self.index = read_index(wordnet_dir)
        self.noun_exceptions = read_exceptions(wordnet_dir, "noun")
        self.verb_exceptions = read_exceptions(wordnet_dir, "verb")
        self.lemma_counts, self.sense_counts = read_sense_counts(wordnet_dir, self.synsets)
        self.lemmas = {lemma for lemma, _ in self.index}
        self._usage_cache: dict[tuple[str, ...], frozenset[SynsetId]] = {}
        self.members: dict[SynsetId, list[SynsetId]] = defaultdict(list)
        """Topic synset → the synsets tagged with it (``;c`` reversed)."""
        self.related: dict[tuple[SynsetId, int], list[tuple[SynsetId, int]]] = defaultdict(list)
        """(synset, lemma index) → derivationally related lemmas and the adjectives pertaining to it."""
        for synset in self.synsets.values():
            for symbol, target in synset.pointers:
                if symbol == TOPIC:
                    self.members[target].append(synset.id)
            for symbol, source, target, target_word in synset.word_links:
                if symbol == DERIVATION:
                    self.related[(synset.id, source)].append((target, target_word))
                elif symbol == PERTAINYM and synset.id[0] == "a":  # reversed: law → legal
                    self.related[(target, target_word)].append((synset.id, source))

    def synset(self, name: str) -> Synset:
        """Resolve ``lemma.pos.NN`` (WordNet's sense numbering, as in NLTK)."""
        lemma, pos, number = name.rsplit(".", 2)
        senses = self.index.get((lemma, pos), ())
        if not number.isdigit() or not 1 <= int(number) <= len(senses):
            raise ValueError(
                f"synset {name!r} does not exist in WordNet 3.0 ({lemma!r}.{pos} has {len(senses)} senses)"
            )
        return self.synsets[senses[int(number) - 1]]

    def hyponym_closure(self, start: SynsetId) -> set[SynsetId]:
        """``start`` and everything below it (hyponyms and instances)."""
        seen, todo = {start}, [start]
        while todo:
            for symbol, target in self.synsets[todo.pop()].pointers:
                if symbol in HYPONYM and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    def tagged_with_usage(self, usage_names: Iterable[str]) -> frozenset[SynsetId]:
        """Synsets whose usage domain (``;u``) is one of the named synsets (cached: a full scan)."""
        key = tuple(sorted(usage_names))
        if key not in self._usage_cache:
            usages = {self.synset(name).id for name in key}
            self._usage_cache[key] = frozenset(
                s.id for s in self.synsets.values() if any(sym == USAGE and t in usages for sym, t in s.pointers)
            )
        return self._usage_cache[key]
