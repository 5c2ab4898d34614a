"""Build the shipped domain lexicons from the WordNet 3.0 database files.

Run ``python -m operators.lexicons.build_wordnet [--wordnet-dir /usr/share/wordnet]
[--out operators/lexicons/data]`` (Debian package ``wordnet-base``). It reads
``data.{noun,verb,adj,adv}``, ``index.*``, ``*.exc`` and ``cntlist.rev``
directly, so no nltk is needed, and writes one ``<domain>.txt`` per domain plus
``PROVENANCE.md`` and ``LICENSE-WordNet.txt``. The output is deterministic.

Recipe, per domain (see :data:`RECIPES`):

1. **Topic domains.** WordNet tags synsets with the topic domain they belong
   to (pointer ``;c``, e.g. *prescribe* → *medicine*). For each topic synset
   of the recipe we take it and its hyponyms (sub-fields such as *surgery*
   under *medicine*), then every synset tagged with any of them.
2. **Hyponym closure of roots.** Topic tags are sparse (75 synsets for
   medicine), so a few root synsets add everything below them, instances
   included: kinds of *disease*, *drug*, *musical instrument*, *weapon*...
3. **Lexicographer files** add whole WordNet categories where one matches a
   domain: ``noun.food`` for food, ``noun.feeling`` for psychology.

Every synset contributes its lemmas, which are then filtered:

- multi-word lemmas (``blood_pressure``) are dropped: DSS matches single word
  tokens, and a collocation's parts usually appear on their own anyway;
- lemmas shorter than 3 characters, or that are not one word token, are dropped;
- **sense dominance**: a lemma is kept only if the domain's sense is a main
  sense of that word. When SemCor has at least ``MIN_TAGGED`` tagged uses of
  the word (all parts of speech, from ``cntlist.rev``), the domain's synset must
  hold at least ``MIN_SHARE`` of them (drops *general* from the military,
  *run* from sport); otherwise it must be among the word's first
  ``MAX_SENSE_RANK`` senses of its part of speech. A proper noun (*Paris*) is
  kept lower-cased only if it is the word's first sense and the word is no
  other part of speech (drops *Nice*, *Turkey* the country);
- a short list of generic conversational words (:data:`GENERIC_WORDS`) is dropped;
- inflected forms are added (noun plurals; verb -s, -ed, -ing), irregular
  ones from WordNet's exception lists, so the scorer needs no stemmer;
- finally, a word that lands in more than ``MAX_DOMAINS`` domains says little
  about any of them and is removed from all.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from operators.scores.dss import tokenize

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
DEBIAN_COPYRIGHT = Path("/usr/share/doc/wordnet-base/copyright")

MIN_LENGTH = 3
MIN_TAGGED = 5
MIN_SHARE = 1 / 3
MAX_SENSE_RANK = 2
MAX_DOMAINS = 3

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPONYM = ("~", "~i")
TOPIC_MEMBER = "-c"

SynsetId = tuple[str, int]
"""(part of speech in ``n v a r``, byte offset in that ``data.*`` file)."""


@dataclass(frozen=True)
class Synset:
    """One line of a WordNet ``data.*`` file, reduced to what the recipe uses."""

    id: SynsetId
    lexfile: str
    lemmas: tuple[str, ...]
    lex_ids: tuple[int, ...]
    pointers: tuple[tuple[str, SynsetId], ...]
    gloss: str


@dataclass(frozen=True)
class DomainRecipe:
    """Which WordNet synsets feed one domain, by NLTK-style names (``lemma.pos.NN``)."""

    topics: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()
    lexfiles: tuple[str, ...] = ()
    proper_nouns: bool = True  # False drops capitalised lemmas (e.g. Latin genus names in noun.animal)


# Each name is checked against its gloss at build time (see PROVENANCE.md for glosses).
RECIPES: dict[str, DomainRecipe] = {
    "medicine": DomainRecipe(
        topics=("medicine.n.01", "medicine.n.03", "pathology.n.01", "surgery.n.01", "dentistry.n.01",
                "obstetrics.n.01", "pharmacology.n.01", "anatomy.n.01", "physiology.n.01"),
        roots=("disease.n.01", "symptom.n.01", "drug.n.01", "medicine.n.02", "medical_care.n.01",
               "medical_procedure.n.01", "health_professional.n.01", "injury.n.01", "illness.n.01",
               "medical_institution.n.01", "organ.n.01", "pain.n.01"),
    ),
    "law": DomainRecipe(
        topics=("law.n.01", "law.n.02", "criminal_law.n.01", "contract.n.01", "crime.n.01"),
        roots=("lawyer.n.01", "crime.n.01", "court.n.01", "legal_document.n.01", "lawsuit.n.01",
               "law.n.02", "judge.n.01", "legal_right.n.01", "punishment.n.01", "criminal.n.01"),
    ),
    "computing": DomainRecipe(
        topics=("computer_science.n.01", "computer.n.01", "electronics.n.01", "telecommunication.n.01",
                "internet.n.01"),
        roots=("computer.n.01", "software.n.01", "computer_code.n.01", "computer_programmer.n.01",
               "programming_language.n.01", "data_structure.n.01", "computer_network.n.01",
               "peripheral.n.01", "algorithm.n.01", "electronic_device.n.01", "memory_device.n.01"),
    ),
    "finance": DomainRecipe(
        topics=("economics.n.01", "finance.n.01", "commerce.n.01", "accounting.n.02", "stock_exchange.n.01",
                "tax.n.01", "corporation.n.01", "commercial_enterprise.n.02", "banking.n.01"),
        roots=("money.n.01", "financial_institution.n.01", "tax.n.01", "investment.n.01", "security.n.04",
               "payment.n.01", "financier.n.01", "monetary_unit.n.01", "loan.n.01", "debt.n.01",
               "price.n.02", "financial_gain.n.01", "cost.n.01", "accountant.n.01", "economist.n.01"),
    ),
    "sport": DomainRecipe(
        topics=("sport.n.01", "game.n.01"),
        roots=("sport.n.01", "athlete.n.01", "sports_equipment.n.01", "contest.n.01", "athletic_game.n.01",
               "team.n.01", "sports_implement.n.01", "playing_field.n.01", "stadium.n.01"),
    ),
    "music": DomainRecipe(
        topics=("music.n.01", "music.n.02"),
        roots=("musical_instrument.n.01", "musician.n.01", "musician.n.02", "musical_composition.n.01",
               "music_genre.n.01", "singer.n.01", "musical_notation.n.01", "musical_organization.n.01",
               "song.n.01", "musical_interval.n.01", "tone.n.01"),
    ),
    "food": DomainRecipe(
        topics=("cooking.n.01",),
        roots=("cook.n.01", "cook.v.02", "kitchen_utensil.n.01", "cooking_utensil.n.01", "meal.n.01",
               "restaurant.n.01", "beverage.n.01", "flavorer.n.01", "tableware.n.01", "eating.n.01"),
        lexfiles=("noun.food",),
    ),
    "biology": DomainRecipe(
        topics=("biology.n.01", "genetics.n.01", "botany.n.02", "zoology.n.02", "ecology.n.02",
                "biochemistry.n.01", "microbiology.n.01", "cytology.n.01", "embryology.n.01"),
        roots=("cell.n.02", "gene.n.01", "biologist.n.01", "tissue.n.01", "protein.n.01", "dna.n.01",
               "organic_process.n.01", "microorganism.n.01", "evolution.n.02", "bacteria.n.01", "virus.n.01"),
    ),
    "nature": DomainRecipe(
        roots=("animal.n.01", "plant.n.02", "fungus.n.01", "pet.n.01", "garden.n.01", "gardener.n.01",
               "weather.n.01", "atmospheric_phenomenon.n.01"),
        lexfiles=("noun.animal", "noun.plant"),
        proper_nouns=False,
    ),
    "chemistry": DomainRecipe(
        topics=("chemistry.n.01", "biochemistry.n.01"),
        roots=("chemical_element.n.01", "compound.n.02", "acid.n.01", "alkali.n.01", "chemical_reaction.n.01",
               "chemical_bond.n.01", "chemist.n.01", "molecule.n.01", "atom.n.01", "chemical_process.n.01",
               "solution.n.01", "salt.n.01"),
    ),
    "physics": DomainRecipe(
        topics=("physics.n.01", "optics.n.01", "electricity.n.01", "astronomy.n.01", "cosmology.n.02",
                "mechanics.n.01", "thermodynamics.n.01", "nuclear_physics.n.01", "quantum_physics.n.01"),
        roots=("physicist.n.01", "elementary_particle.n.01", "force.n.02", "energy.n.01", "radiation.n.01",
               "celestial_body.n.01", "astronomer.n.01", "wave.n.01", "electromagnetic_radiation.n.01",
               "physical_phenomenon.n.01"),
    ),
    "mathematics": DomainRecipe(
        topics=("mathematics.n.01", "statistics.n.01", "geometry.n.01", "arithmetic.n.01",
                "algebra.n.01", "calculus.n.03", "logic.n.01"),
        roots=("mathematics.n.01", "mathematician.n.01", "mathematical_relation.n.01",
               "mathematical_statement.n.01", "plane_figure.n.01", "solid.n.03", "statistic.n.01",
               "arithmetic_operation.n.01", "mathematical_process.n.01", "number.n.02", "set.n.02"),
    ),
    "religion": DomainRecipe(
        topics=("religion.n.01", "religion.n.02", "theology.n.01", "roman_catholic.n.02", "old_testament.n.01",
                "new_testament.n.01", "judaism.n.01", "judaism.n.02", "christianity.n.01", "hinduism.n.01", "hinduism.n.02",
                "islam.n.01", "islam.n.02", "buddhism.n.01",
                "buddhism.n.02", "church_service.n.01"),
        roots=("religion.n.01", "religious_person.n.01", "clergyman.n.01", "spiritual_being.n.01",
               "place_of_worship.n.01", "religious_ceremony.n.01", "sacred_text.n.01", "worship.n.01",
               "prayer.n.01", "sacrament.n.01", "religious_doctrine.n.01", "religionist.n.01"),
    ),
    "politics": DomainRecipe(
        topics=("politics.n.01", "politics.n.02", "government.n.01", "election.n.01"),
        roots=("politician.n.01", "politician.n.02", "legislature.n.01", "political_party.n.01",
               "political_system.n.01", "election.n.01", "government.n.01", "head_of_state.n.01",
               "legislator.n.01", "political_orientation.n.01", "administrative_unit.n.01", "diplomat.n.01",
               "campaign.n.03", "vote.n.01"),
    ),
    "art": DomainRecipe(
        topics=("art.n.01", "fine_arts.n.01", "architecture.n.01", "architecture.n.02", "photography.n.01",
                "handicraft.n.01", "sculpture.n.02", "painting.n.02", "performing_arts.n.01", "dancing.n.01"),
        roots=("artist.n.01", "work_of_art.n.01", "art.n.01", "painting.n.01", "sculpture.n.01",
               "art_movement.n.01", "graphic_art.n.01", "photograph.n.01", "museum.n.01", "architect.n.01",
               "drawing.n.02", "paint.n.01", "actor.n.01", "theater.n.01", "dancer.n.01", "film.n.01"),
    ),
    "literature": DomainRecipe(
        topics=("literature.n.01", "poetry.n.01", "drama.n.01", "dramaturgy.n.01", "writing.n.01",
                "prosody.n.01", "rhetoric.n.01", "grammar.n.01", "linguistics.n.01"),
        roots=("writer.n.01", "literary_composition.n.01", "poem.n.01", "novel.n.01", "book.n.01",
               "literary_genre.n.01", "figure_of_speech.n.01", "publication.n.01", "dramatist.n.01",
               "part_of_speech.n.01", "story.n.01", "fiction.n.01"),
    ),
    "psychology": DomainRecipe(
        topics=("psychology.n.01", "psychoanalysis.n.01", "psychiatry.n.01"),
        roots=("psychologist.n.01", "mental_disorder.n.01", "psychological_state.n.01", "emotion.n.01",
               "personality.n.01", "trait.n.01", "motivation.n.01", "behavior.n.01",
               "psychotherapy.n.01", "emotional_state.n.01"),
        lexfiles=("noun.feeling",),
    ),
    "education": DomainRecipe(
        topics=("education.n.01", "education.n.02", "pedagogy.n.01", "academia.n.01"),
        roots=("educational_institution.n.01", "student.n.01", "educator.n.01", "course.n.01",
               "academic_degree.n.01", "examination.n.02", "education.n.01", "school.n.01",
               "lesson.n.01", "textbook.n.01", "classroom.n.01", "learning.n.01", "academic_program.n.01",
               "schoolwork.n.01", "grade.n.01"),
    ),
    "travel": DomainRecipe(
        topics=("air_travel.n.01", "navigation.n.01", "seafaring.n.01", "driving.n.02", "geography.n.01",
                "tourism.n.01"),
        roots=("travel.n.01", "journey.n.01", "traveler.n.01", "hotel.n.01", "airport.n.01", "aircraft.n.01",
               "ship.n.01", "train.n.01", "country.n.02", "city.n.01", "national_capital.n.01",
               "continent.n.01", "geological_formation.n.01", "body_of_water.n.01", "baggage.n.01",
               "passport.n.01", "ticket.n.01", "lodging.n.01", "tourist.n.01", "vacation.n.01", "beach.n.01"),
    ),
    "military": DomainRecipe(
        topics=("military.n.01", "terrorism.n.01", "war.n.01"),
        roots=("weapon.n.01", "military_unit.n.01", "military_officer.n.01", "serviceman.n.01",
               "military_action.n.01", "war.n.01", "armament.n.01", "military_vehicle.n.01",
               "warship.n.01", "ammunition.n.01", "soldier.n.01", "military_rank.n.01", "battle.n.01",
               "army.n.01", "navy.n.01", "air_force.n.01", "fortification.n.01"),
    ),
}

# Words that every kind of conversation uses; a lexicon listing them would score small talk as domain talk.
GENERIC_WORDS: frozenset[str] = frozenset(
    """
    able about account act action activity age aid air amount answer area arm art back bad balance bar base
    bit black blue board body book boss box boy break building business call care case cause center
    change charge check child children class clean close code cold color come common company condition
    control cool course cover cross cut day deal degree design detail difference direction dog door
    down draw drive drop earth end energy english event example eye face fact fall family father feel
    feeling field figure file fire floor force form free friend front fun game girl give good ground
    group guy hand head heart help high hold home hour house idea issue job key kind land language
    last late law leader left level life light line list little long look love low main make man mark
    market matter mean measure meet member middle mind minute model moment money month morning mother
    move name need net new news night note number object office open order page paper part party pass
    people person picture piece place plan plant play point position power present problem program
    public put question range rate reason record red rest result return right ring road rock room round
    rule run school science second sense service set shape share show side sign simple size skin small
    sound space spring stage stand start state step stop store story street study style system table
    take talk team term test thing time today top touch track trade training turn type unit use value
    view voice wall want watch water way week white whole woman word work world year young
    """.split()
)


def _lemma_text(raw: str) -> str:
    # Adjective lemmas carry a syntactic marker such as "(a)" or "(ip)" in data.adj.
    return re.sub(r"\([a-z]+\)$", "", raw)


def read_synsets(wordnet_dir: Path) -> dict[SynsetId, Synset]:
    """Every synset of the four ``data.*`` files (license header lines skipped)."""
    synsets: dict[SynsetId, Synset] = {}
    for pos, name in POS_FILES.items():
        with open(wordnet_dir / f"data.{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                offset, lexfile, n_words = int(fields[0]), int(fields[1]), int(fields[3], 16)
                lemmas = tuple(_lemma_text(fields[4 + 2 * i]) for i in range(n_words))
                lex_ids = tuple(int(fields[5 + 2 * i], 16) for i in range(n_words))
                i = 4 + 2 * n_words
                pointers = []
                for _ in range(int(fields[i])):
                    symbol, target, target_pos = fields[i + 1], int(fields[i + 2]), fields[i + 3]
                    # Satellite adjectives ("s") live in data.adj like head adjectives.
                    pointers.append((symbol, ("a" if target_pos == "s" else target_pos, target)))
                    i += 4
                synsets[(pos, offset)] = Synset((pos, offset), LEXNAMES[lexfile], lemmas, lex_ids,
                                                tuple(pointers), gloss.strip())
    return synsets


# Lexicographer file names by number, fixed by WordNet 3.0 (lexnames(5WN)); Debian ships no lexnames file.
LEXNAMES: tuple[str, ...] = tuple("""adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact
noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion
verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl""".split())


def read_index(wordnet_dir: Path) -> dict[tuple[str, str], tuple[SynsetId, ...]]:
    """(lower-case lemma, pos) → its synsets in sense order (most frequent first)."""
    index: dict[tuple[str, str], tuple[SynsetId, ...]] = {}
    for pos, name in POS_FILES.items():
        with open(wordnet_dir / f"index.{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split()
                n_senses = int(fields[2])
                index[(fields[0], pos)] = tuple((pos, int(o)) for o in fields[-n_senses:])
    return index


def read_exceptions(wordnet_dir: Path, pos_name: str) -> dict[str, list[str]]:
    """Base form → irregular inflected forms, from ``<pos>.exc`` (stored inflected → base)."""
    forms: dict[str, list[str]] = defaultdict(list)
    for line in (wordnet_dir / f"{pos_name}.exc").read_text(encoding="utf-8").splitlines():
        inflected, *bases = line.split()
        for base in bases:
            forms[base].append(inflected)
    return forms


def read_sense_counts(wordnet_dir: Path, synsets: dict[SynsetId, Synset]) -> tuple[dict, dict]:
    """SemCor tag counts from ``cntlist.rev``: per lemma (all parts of speech) and per (lemma, synset).

    A sense key ``bank%1:14:00::`` names lemma, part of speech (1 noun, 2 verb,
    3/5 adjective, 4 adverb), lexicographer file and lex id; a data line gives
    the same four for each of its lemmas, which lets us map keys to synsets.
    Satellite keys also name a head word, which we ignore: a collision only
    mixes counts between two satellite senses of the same adjective.
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
    """The parsed database plus the look-ups the recipe needs."""

    def __init__(self, wordnet_dir: Path) -> None:
        self.wordnet_dir = wordnet_dir
        self.synsets = read_synsets(wordnet_dir)
        self.index = read_index(wordnet_dir)
        self.noun_exceptions = read_exceptions(wordnet_dir, "noun")
        self.verb_exceptions = read_exceptions(wordnet_dir, "verb")
        self.lemma_counts, self.sense_counts = read_sense_counts(wordnet_dir, self.synsets)
        self.members: dict[SynsetId, list[SynsetId]] = defaultdict(list)
        for synset in self.synsets.values():
            for symbol, target in synset.pointers:
                if symbol == ";c":
                    self.members[target].append(synset.id)

    def synset(self, name: str) -> Synset:
        """Resolve ``lemma.pos.NN`` (NLTK-style sense numbering) or fail naming the recipe entry."""
        lemma, pos, number = name.rsplit(".", 2)
        senses = self.index.get((lemma, pos), ())
        if not 1 <= int(number) <= len(senses):
            raise ValueError(f"recipe synset {name!r} does not exist in WordNet 3.0 ({len(senses)} senses); fix RECIPES")
        return self.synsets[senses[int(number) - 1]]

    def hyponym_closure(self, start: SynsetId) -> set[SynsetId]:
        """``start`` and everything below it (hyponyms and instances), iteratively."""
        seen, todo = {start}, [start]
        while todo:
            for symbol, target in self.synsets[todo.pop()].pointers:
                if symbol in HYPONYM and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    def keeps_sense(self, raw_lemma: str, synset_id: SynsetId) -> bool:
        """Whether ``synset_id`` is a main sense of the word (the sense-dominance filter)."""
        word = raw_lemma.lower()
        senses = self.index.get((word, synset_id[0]), ())
        if synset_id not in senses:
            return False
        rank = senses.index(synset_id) + 1
        if raw_lemma != word:  # proper noun: first sense only, and not another part of speech
            other_pos = any((word, p) in self.index for p in POS_FILES if p != synset_id[0])
            return rank == 1 and not other_pos
        total = self.lemma_counts.get(word, 0)
        if total >= MIN_TAGGED:
            return self.sense_counts.get((word, synset_id), 0) >= MIN_SHARE * total
        return rank <= MAX_SENSE_RANK


def collect_synsets(wn: WordNet, recipe: DomainRecipe) -> set[SynsetId]:
    """All synsets feeding one domain: topic members, hyponym closures, lexicographer files."""
    chosen: set[SynsetId] = set()
    for name in recipe.topics:
        for topic in wn.hyponym_closure(wn.synset(name).id):
            chosen.add(topic)
            chosen.update(wn.members.get(topic, ()))
    for name in recipe.roots:
        chosen |= wn.hyponym_closure(wn.synset(name).id)
    if recipe.lexfiles:
        chosen.update(s.id for s in wn.synsets.values() if s.lexfile in recipe.lexfiles)
    return chosen


def _plural(noun: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def _verb_forms(verb: str, irregular: list[str]) -> list[str]:
    forms = [_plural(verb)]  # the third person singular follows the plural spelling rules
    if not irregular:  # exceptions list irregular pasts and doubled consonants (ran, running)
        if verb.endswith("e"):
            forms.append(verb + "d")
        elif re.search(r"[^aeiou]y$", verb):
            forms.append(verb[:-1] + "ied")
        else:
            forms.append(verb + "ed")
    if not any(form.endswith("ing") for form in irregular):
        if verb.endswith("ie"):
            forms.append(verb[:-2] + "ying")
        elif verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
            forms.append(verb[:-1] + "ing")
        else:
            forms.append(verb + "ing")
    return forms + irregular


def inflections(wn: WordNet, word: str, pos: str, proper: bool) -> list[str]:
    """The word and its regular and irregular inflected forms for its part of speech."""
    if proper or pos in "ar":
        return [word]
    if pos == "n":
        if word.endswith(("ics", "ness", "ism")) or word in wn.noun_exceptions:
            return [word, *wn.noun_exceptions.get(word, [])]  # -ics/-ness/-ism are mass nouns
        return [word, _plural(word)]
    return [word, *_verb_forms(word, wn.verb_exceptions.get(word, []))]


def _is_word(text: str) -> bool:
    return len(text) >= MIN_LENGTH and tokenize(text) == [text] and text.isascii()


def domain_words(wn: WordNet, recipe: DomainRecipe) -> set[str]:
    """The filtered, inflected word set of one domain, before the cross-domain filter."""
    words: set[str] = set()
    for synset_id in collect_synsets(wn, recipe):
        for raw in wn.synsets[synset_id].lemmas:
            word = raw.lower()
            if "_" in word or not _is_word(word) or word in GENERIC_WORDS:
                continue
            if not wn.keeps_sense(raw, synset_id):
                continue
            words.update(w for w in inflections(wn, word, synset_id[0], raw != word) if _is_word(w))
    return words - GENERIC_WORDS


def build_lexicons(wn: WordNet, recipes: dict[str, DomainRecipe] = RECIPES) -> dict[str, list[str]]:
    """Domain → sorted words, with words in more than ``MAX_DOMAINS`` domains removed."""
    per_domain = {domain: domain_words(wn, recipe) for domain, recipe in recipes.items()}
    domain_count: dict[str, int] = defaultdict(int)
    for words in per_domain.values():
        for word in words:
            domain_count[word] += 1
    return {d: sorted(w for w in words if domain_count[w] <= MAX_DOMAINS) for d, words in sorted(per_domain.items())}


def wordnet_license(copyright_file: Path = DEBIAN_COPYRIGHT) -> str:
    """The WordNet 3.0 licence text from the Debian copyright file (deb822 continuation lines)."""
    lines = copyright_file.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "License: WordNet3.0")
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        body.append("" if line.strip() == "." else line[1:])
    return "\n".join(body).rstrip() + "\n"


def _debian_version(package: str = "wordnet-base") -> str:
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True)
        return result.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (dpkg-query unavailable)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(wn: WordNet, lexicons: dict[str, list[str]], recipes: dict[str, DomainRecipe]) -> str:
    """The text of ``PROVENANCE.md``: source, command, counts, recipe with glosses."""
    out = [
        "# Provenance of the shipped domain lexicons",
        "",
        "- Source: **WordNet 3.0**, Princeton University (https://wordnet.princeton.edu/),",
        f"  as shipped by the Debian package `wordnet-base` version `{_debian_version()}`.",
        "- Licence: the WordNet 3.0 licence, reproduced in `LICENSE-WordNet.txt` as it requires.",
        "  WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.",
        "- Regenerate (deterministic; no timestamps):",
        "",
        "  ```",
        "  apt-get install wordnet-base",
        "  python -m operators.lexicons.build_wordnet --wordnet-dir /usr/share/wordnet --out operators/lexicons/data",
        "  ```",
        "",
        "- Recipe: see the docstring of `operators/lexicons/build_wordnet.py`. Parameters:",
        f"  MIN_LENGTH={MIN_LENGTH}, MIN_TAGGED={MIN_TAGGED}, MIN_SHARE={MIN_SHARE:.3f}, "
        f"MAX_SENSE_RANK={MAX_SENSE_RANK}, MAX_DOMAINS={MAX_DOMAINS}; {len(GENERIC_WORDS)} generic words excluded.",
        "- Lexicons list lemmas and their inflected forms (noun plurals; verb -s, -ed, -ing), one per line.",
        "",
        "## Input files (sha256)",
        "",
    ]
    for name in [f"data.{p}" for p in POS_FILES.values()] + [f"index.{p}" for p in POS_FILES.values()] + [
        "noun.exc", "verb.exc", "cntlist.rev"]:
        out.append(f"- `{name}` `{_sha256(wn.wordnet_dir / name)}`")
    out += ["", "## Word counts", "", "| domain | words |", "|---|---:|"]
    out += [f"| {domain} | {len(words)} |" for domain, words in lexicons.items()]
    out += [f"| **total** | {sum(len(w) for w in lexicons.values())} |", "", "## Recipe per domain", ""]
    for domain, recipe in sorted(recipes.items()):
        out.append(f"### {domain}")
        out.append("")
        for label, names in (("topic domains (members of these and their hyponyms)", recipe.topics),
                             ("hyponym closure of", recipe.roots)):
            if names:
                out.append(f"- {label}:")
                out += [f"  - `{n}` — {wn.synset(n).gloss.split(';')[0]}" for n in names]
        if recipe.lexfiles:
            out.append(f"- lexicographer files: {', '.join(f'`{n}`' for n in recipe.lexfiles)}")
        out.append("")
    return "\n".join(out)


def write_outputs(out_dir: Path, wn: WordNet, lexicons: dict[str, list[str]], license_text: str) -> None:
    """Write ``<domain>.txt`` files, ``PROVENANCE.md`` and ``LICENSE-WordNet.txt``; stale lexicons are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.txt"):
        if stale.stem not in lexicons and stale.name != "LICENSE-WordNet.txt":
            stale.unlink()
    for domain, words in lexicons.items():
        header = (f"# {domain}: {len(words)} words derived from WordNet 3.0 (Princeton University);\n"
                  f"# licence in LICENSE-WordNet.txt, recipe in PROVENANCE.md.\n")
        (out_dir / f"{domain}.txt").write_text(header + "\n".join(words) + "\n", encoding="utf-8")
    (out_dir / "PROVENANCE.md").write_text(provenance(wn, lexicons, RECIPES), encoding="utf-8")
    (out_dir / "LICENSE-WordNet.txt").write_text(license_text, encoding="utf-8")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m operators.lexicons.build_wordnet", description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR,
                        help="folder with WordNet 3.0 data.noun etc. (Debian: apt-get install wordnet-base)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write the lexicons into")
    parser.add_argument("--copyright", type=Path, default=DEBIAN_COPYRIGHT,
                        help="Debian copyright file holding the WordNet 3.0 licence text")
    args = parser.parse_args(None if argv is None else list(argv))
    if not (args.wordnet_dir / "data.noun").exists():
        parser.error(f"--wordnet-dir={args.wordnet_dir}: no data.noun there; install wordnet-base or point to WordNet 3.0's dict folder")
    wn = WordNet(args.wordnet_dir)
    lexicons = build_lexicons(wn)
    write_outputs(args.out, wn, lexicons, wordnet_license(args.copyright))
    for domain, words in lexicons.items():
        print(f"{domain:12s} {len(words):6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
