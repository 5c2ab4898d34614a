"""Build the shipped domain lexicons from the WordNet 3.0 database files.

Run ``python -m operators.lexicons.build_wordnet [--wordnet-dir /usr/share/wordnet]
[--out operators/lexicons/data]`` (Debian package ``wordnet-base``). It reads
``data.*``, ``index.*``, ``noun.exc``, ``verb.exc`` and ``cntlist.rev`` directly
(no nltk; the reader is :mod:`operators.lexicons.wordnet`) and writes one
``<domain>.txt`` per domain plus ``PROVENANCE.md`` and ``LICENSE-WordNet.txt``.
The output is deterministic. ``--explain WORD`` prints which synsets bring a
word into which domain, to review or tune the recipe.

Recipe, per domain (see :data:`RECIPES`; synsets are named ``lemma.pos.NN``
with WordNet's sense numbering, as in NLTK):

1. **Topic domains.** WordNet tags synsets with the topic they belong to
   (pointer ``;c``, e.g. *prescribe* → *medicine*). For each topic synset of
   the recipe we take it, its hyponyms (sub-fields such as *dentistry* under
   *medicine*), and every synset tagged with any of them.
2. **Hyponym closure of roots.** Topic tags are sparse (75 synsets for
   medicine), so a few root synsets add everything below them, instances
   included: kinds of *disease*, *medicine*, *musical instrument*, *weapon*...
   ``synsets`` add a synset's own lemmas without its closure where the closure
   strays (under *drug* sit the liquors), and ``exclude`` cuts a subtree.
3. **Lexicographer files** add whole WordNet categories where one matches a
   domain: ``noun.food`` for food, ``noun.animal`` and ``noun.plant`` for
   nature, ``noun.feeling`` for psychology.

Synsets that WordNet marks as slang, obscene, disparaging or an ethnic slur
(usage-domain pointers ``;u``) are skipped. Each remaining synset contributes
its lemmas, filtered:

- multi-word lemmas (``blood_pressure``) are dropped: DSS matches single word
  tokens, and a collocation's parts mostly appear on their own anyway; so are
  lemmas shorter than ``MIN_LENGTH`` or with characters other than letters and
  inner hyphens or apostrophes;
- **sense dominance**: a lemma is kept only if the domain's synset is a main
  sense of the word. When SemCor has at least ``MIN_TAGGED`` tagged uses of
  the word (all parts of speech, ``cntlist.rev``), the synset must hold at
  least ``MIN_SHARE`` of them (this drops *general* from the military, *run*
  from sport); otherwise it must be the word's first sense in its part of
  speech (``MAX_SENSE_RANK``);
- proper nouns are lower-cased and kept only if that is the word's first
  sense, the word is no other part of speech and does not look like an
  inflection of another lemma (drops *Nice*, *Turkey* the country,
  *Wheeling*); people's names (``noun.person`` proper nouns) are dropped,
  since in chat they are mostly namesakes and first names;
- words in :data:`GENERIC_WORDS`, which every conversation uses, are dropped;
- one hop further, adjectives derived from or pertaining to the collected
  lemmas are added (``+`` and reversed ``\\`` pointers: law → legal,
  surgery → surgical) when the linked sense is among the adjective's first
  ``DERIVED_MAX_RANK``; derived verbs are not, as they are mostly everyday
  words (hope, fear, tell);
- inflected forms are added (noun plurals; verb -s, -ed, -ing), irregular ones
  from WordNet's exception lists, so the scorer needs no stemmer;
- a word that lands in more than ``MAX_DOMAINS`` domains says little about
  any one of them and is removed from all;
- finally, a short hand-picked list per domain (``words``) adds everyday domain
  words that WordNet 3.0 lacks (*app*) or whose domain sense is not the word's
  main one (*program*, *server*, *interest*); PROVENANCE.md lists them.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from operators.lexicons.wordnet import POS_FILES, Synset, SynsetId, WordNet

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
DEBIAN_COPYRIGHT = Path("/usr/share/doc/wordnet-base/copyright")
LICENSE_FILE = "LICENSE-WordNet.txt"

MIN_LENGTH = 3
MIN_TAGGED = 5
MIN_SHARE = 1 / 3
MAX_SENSE_RANK = 1
DERIVED_MAX_RANK = 3
MAX_DOMAINS = 3
EXCLUDED_USAGES = ("slang.n.02", "obscenity.n.02", "disparagement.n.01", "ethnic_slur.n.01")

# A lexicon entry: lower-case ASCII letters, optionally joined by inner hyphens or apostrophes (x-ray, o'clock).
_ENTRY = re.compile(r"[a-z]+(?:['-][a-z]+)*")


@dataclass(frozen=True)
class DomainRecipe:
    """Which WordNet synsets feed one domain (names ``lemma.pos.NN``).

    >>> DomainRecipe(roots=("weapon.n.01",)).proper_nouns
    True
    """

    topics: tuple[str, ...] = ()
    """Topic-domain synsets: they, their hyponyms, and every synset tagged with one of them."""
    roots: tuple[str, ...] = ()
    """Synsets whose whole hyponym closure (instances included) belongs to the domain."""
    synsets: tuple[str, ...] = ()
    """Synsets whose own lemmas belong to the domain, without their closure."""
    exclude: tuple[str, ...] = ()
    """Synsets whose hyponym closure, and what is topic-tagged with it, is removed from the above."""
    lexfiles: tuple[str, ...] = ()
    """Lexicographer files taken whole, e.g. ``noun.food``."""
    words: tuple[str, ...] = ()
    """Hand-picked everyday words of the domain that WordNet lacks (app) or whose domain sense is not the
    word's main one (program, server, interest): kept without the sense filter and the cross-domain limit,
    and inflected when WordNet knows the word."""
    proper_nouns: bool = True
    """False drops capitalised lemmas (the Latin genus names of ``noun.animal``)."""


# Names resolve through index.* sense order; PROVENANCE.md lists each with its gloss for review.
RECIPES: dict[str, DomainRecipe] = {
    "medicine": DomainRecipe(
        words=("hospital", "clinic", "patient", "cough", "diagnosis", "diagnose", "treatment", "vaccine",
               "vaccination", "infection", "pill", "prescription", "prescribe", "blood", "heart", "allergy",
               "allergic", "nurse", "surgeon", "physician", "dose", "symptom", "medication", "health",
               "healthy", "sick", "illness", "flu", "asthma", "ache", "headache", "stomachache"),
        topics=("medicine.n.01", "medicine.n.03", "pathology.n.01", "surgery.n.01", "dentistry.n.01",
                "obstetrics.n.01", "pharmacology.n.01", "anatomy.n.01", "physiology.n.01"),
        roots=("disease.n.01", "symptom.n.01", "medicine.n.02", "medical_care.n.01",
               "medical_procedure.n.01", "health_professional.n.01", "injury.n.01", "illness.n.01",
               "medical_institution.n.01", "organ.n.01", "pain.n.01"),
        synsets=("drug.n.01",),  # its closure adds drugs of abuse and liquors, so only the word itself
    ),
    "law": DomainRecipe(
        words=("judge", "sue", "lawsuit", "illegal", "police", "arrest", "trial", "jury", "verdict", "rights",
               "tenant", "landlord", "custody", "divorce", "attorney", "lawyer", "legislation", "copyright",
               "lawful", "unlawful", "felony", "prosecutor"),
        topics=("law.n.01", "law.n.02", "criminal_law.n.01", "contract.n.01", "crime.n.01"),
        roots=("lawyer.n.01", "crime.n.01", "court.n.01", "legal_document.n.01", "lawsuit.n.01",
               "law.n.02", "judge.n.01", "legal_right.n.01", "punishment.n.01", "criminal.n.01"),
    ),
    "computing": DomainRecipe(
        words=("program", "programmer", "programming", "code", "coding", "coder", "python", "javascript",
               "java", "server", "database", "bug", "debug", "browser", "app", "apps", "password", "network",
               "data", "memory", "compiler", "software", "hardware", "website", "internet", "online",
               "download", "upload", "laptop", "smartphone", "keyboard", "algorithm", "function", "variable",
               "api", "backend", "frontend", "linux", "github", "repository"),
        topics=("computer_science.n.01", "computer.n.01", "electronics.n.01", "telecommunication.n.01",
                "internet.n.01"),
        roots=("computer.n.01", "software.n.01", "computer_code.n.01", "computer_programmer.n.01",
               "programming_language.n.01", "data_structure.n.01", "computer_network.n.01",
               "peripheral.n.01", "algorithm.n.01", "electronic_device.n.01", "memory_device.n.01"),
    ),
    "finance": DomainRecipe(
        words=("mortgage", "interest", "invest", "investor", "investment", "stock", "shares", "bond", "credit",
               "retirement", "insurance", "inflation", "price", "economy", "budget", "salary", "tax", "loan",
               "bank", "banking", "profit", "revenue", "crypto", "bitcoin"),
        topics=("economics.n.01", "finance.n.01", "commerce.n.01", "accounting.n.02", "stock_exchange.n.01",
                "tax.n.01", "corporation.n.01", "banking.n.01"),
        roots=("money.n.01", "financial_institution.n.01", "tax.n.01", "investment.n.01", "security.n.04",
               "payment.n.01", "financier.n.01", "monetary_unit.n.01", "loan.n.01", "debt.n.01",
               "price.n.02", "financial_gain.n.01", "cost.n.01", "accountant.n.01", "economist.n.01"),
        # commerce's subtree holds every industry (farming, mining, tourism...): keep only the money side.
        exclude=("industry.n.02", "tourism.n.01", "fishing.n.02", "butchery.n.02", "storage.n.03",
                 "publication.n.04", "printing.n.02", "packaging.n.01", "agribusiness.n.01",
                 "construction.n.07", "transportation.n.05"),
    ),
    "sport": DomainRecipe(
        words=("match", "player", "score", "goal", "league", "championship", "olympics", "olympic", "training",
               "marathon", "gym", "workout", "coach", "tournament", "referee", "stadium", "fitness"),
        topics=("sport.n.01", "game.n.01"),
        roots=("sport.n.01", "athlete.n.01", "sports_equipment.n.01", "contest.n.01", "athletic_game.n.01",
               "team.n.01", "sports_implement.n.01", "playing_field.n.01", "stadium.n.01"),
    ),
    "music": DomainRecipe(
        words=("band", "concert", "album", "lyrics", "jazz", "rock", "rap", "pop", "melody", "rhythm", "chord",
               "guitar", "drum", "drums", "singer", "concerto", "playlist"),
        topics=("music.n.01", "music.n.02"),
        roots=("musical_instrument.n.01", "musician.n.01", "musician.n.02", "musical_composition.n.01",
               "music_genre.n.01", "singer.n.01", "musical_notation.n.01", "musical_organization.n.01",
               "song.n.01", "musical_interval.n.01", "tone.n.01"),
    ),
    "food": DomainRecipe(
        words=("recipe", "cook", "cooking", "cake", "fruit", "oven", "bake", "baking", "ingredient",
               "ingredients", "delicious", "tasty", "vegan", "vegetarian"),
        topics=("cooking.n.01",),
        roots=("cook.n.01", "cook.v.02", "kitchen_utensil.n.01", "cooking_utensil.n.01", "meal.n.01",
               "restaurant.n.01", "beverage.n.01", "flavorer.n.01", "tableware.n.01", "eating.n.01"),
        lexfiles=("noun.food",),
    ),
    "biology": DomainRecipe(
        words=("evolution", "organism", "photosynthesis", "chromosome", "ecosystem", "species", "genetic",
               "biology", "cell", "dna", "mutation"),
        topics=("biology.n.01", "genetics.n.01", "botany.n.02", "zoology.n.02", "ecology.n.02",
                "biochemistry.n.01", "microbiology.n.01", "cytology.n.01", "embryology.n.01"),
        roots=("cell.n.02", "gene.n.01", "biologist.n.01", "tissue.n.01", "protein.n.01", "dna.n.01",
               "organic_process.n.01", "microorganism.n.01", "evolution.n.02", "bacteria.n.01", "virus.n.01"),
        exclude=("sexual_activity.n.01",),  # under organic_process, but sex talk is not biology
    ),
    "nature": DomainRecipe(
        words=("garden", "gardening", "wildlife", "pet", "pets"),
        roots=("animal.n.01", "plant.n.02", "fungus.n.01", "pet.n.01", "garden.n.01", "gardener.n.01",
               "weather.n.01", "atmospheric_phenomenon.n.01"),
        lexfiles=("noun.animal", "noun.plant"),
        proper_nouns=False,
    ),
    "chemistry": DomainRecipe(
        words=("element", "compound", "bond", "molecule", "atom", "chemical", "reaction", "periodic"),
        topics=("chemistry.n.01", "biochemistry.n.01"),
        roots=("chemical_element.n.01", "compound.n.02", "acid.n.01", "alkali.n.01", "chemical_reaction.n.01",
               "chemical_bond.n.01", "chemist.n.01", "molecule.n.01", "atom.n.01", "chemical_process.n.01",
               "solution.n.01", "salt.n.01"),
    ),
    "physics": DomainRecipe(
        words=("force", "mass", "velocity", "acceleration", "momentum", "photon", "quantum", "friction",
               "voltage", "refraction", "gravity", "gravitational", "relativity", "electron", "magnet",
               "magnetic", "particle"),
        topics=("physics.n.01", "optics.n.01", "electricity.n.01", "astronomy.n.01", "cosmology.n.02",
                "mechanics.n.01", "thermodynamics.n.01", "nuclear_physics.n.01", "quantum_physics.n.01"),
        roots=("physicist.n.01", "elementary_particle.n.01", "force.n.02", "energy.n.01", "radiation.n.01",
               "celestial_body.n.01", "astronomer.n.01", "wave.n.01", "electromagnetic_radiation.n.01"),
    ),
    "mathematics": DomainRecipe(
        words=("calculus", "derivative", "integral", "probability", "theorem", "fraction", "angle", "equation",
               "algebra", "geometry", "math", "maths", "multiply", "divide"),
        topics=("mathematics.n.01", "statistics.n.01", "geometry.n.01", "arithmetic.n.01",
                "algebra.n.01", "calculus.n.03", "logic.n.01"),
        roots=("mathematics.n.01", "mathematician.n.01", "mathematical_relation.n.01",
               "mathematical_statement.n.01", "plane_figure.n.01", "solid.n.03", "statistic.n.01",
               "arithmetic_operation.n.01", "mathematical_process.n.01", "set.n.02"),
    ),
    "religion": DomainRecipe(
        words=("god", "pray", "prayer", "jesus", "heaven", "spiritual", "christ", "allah", "bible", "faith",
               "worship"),
        topics=("religion.n.01", "religion.n.02", "theology.n.01", "roman_catholic.n.02", "old_testament.n.01",
                "new_testament.n.01", "judaism.n.01", "judaism.n.02", "christianity.n.01", "hinduism.n.01",
                "hinduism.n.02", "islam.n.01", "islam.n.02", "buddhism.n.01", "buddhism.n.02",
                "church_service.n.01"),
        roots=("religion.n.01", "religious_person.n.01", "clergyman.n.01", "spiritual_being.n.01",
               "place_of_worship.n.01", "religious_ceremony.n.01", "sacred_text.n.01", "worship.n.01",
               "prayer.n.01", "sacrament.n.01", "religious_doctrine.n.01", "religionist.n.01"),
    ),
    "politics": DomainRecipe(
        words=("president", "policy", "campaign", "democrat", "republican", "minister", "senator", "congress",
               "parliament", "government", "vote", "voter", "politician"),
        topics=("politics.n.01", "politics.n.02", "government.n.01", "election.n.01"),
        roots=("politician.n.01", "politician.n.02", "legislature.n.01", "political_party.n.01",
               "political_system.n.01", "election.n.01", "government.n.01", "head_of_state.n.01",
               "legislator.n.01", "political_orientation.n.01", "administrative_unit.n.01", "diplomat.n.01",
               "campaign.n.03", "vote.n.01"),
    ),
    "art": DomainRecipe(
        words=("gallery", "painting", "painter", "sculpture", "museum", "artist", "artwork", "exhibition"),
        topics=("art.n.01", "fine_arts.n.01", "architecture.n.01", "architecture.n.02", "photography.n.01",
                "handicraft.n.01", "sculpture.n.02", "painting.n.02", "performing_arts.n.01", "dancing.n.01"),
        roots=("artist.n.01", "work_of_art.n.01", "art.n.01", "painting.n.01", "sculpture.n.01",
               "art_movement.n.01", "graphic_art.n.01", "photograph.n.01", "museum.n.01", "architect.n.01",
               "drawing.n.02", "paint.n.01", "actor.n.01", "theater.n.01", "dancer.n.01", "film.n.01"),
    ),
    "literature": DomainRecipe(
        words=("chapter", "character", "plot", "essay", "novel", "poem", "poetry", "author", "fiction"),
        topics=("literature.n.01", "poetry.n.01", "drama.n.01", "dramaturgy.n.01", "writing.n.01",
                "prosody.n.01", "rhetoric.n.01", "grammar.n.01", "linguistics.n.01"),
        roots=("writer.n.01", "literary_composition.n.01", "poem.n.01", "novel.n.01", "book.n.01",
               "literary_genre.n.01", "figure_of_speech.n.01", "publication.n.01", "dramatist.n.01",
               "part_of_speech.n.01", "story.n.01", "fiction.n.01"),
    ),
    "psychology": DomainRecipe(
        words=("stress", "therapist", "therapy", "mental", "trauma", "anxiety", "depression", "self-esteem",
               "emotion", "emotional", "lonely", "loneliness"),
        topics=("psychology.n.01", "psychoanalysis.n.01", "psychiatry.n.01"),
        roots=("psychologist.n.01", "mental_disorder.n.01", "psychological_state.n.01", "emotion.n.01",
               "personality.n.01", "motivation.n.01", "behavior.n.01",
               "psychotherapy.n.01", "emotional_state.n.01"),
        lexfiles=("noun.feeling",),
    ),
    "education": DomainRecipe(
        words=("university", "college", "class", "classroom", "homework", "exam", "degree", "lecture",
               "tuition", "student", "teacher", "curriculum", "semester"),
        topics=("education.n.01", "education.n.02", "pedagogy.n.01", "academia.n.01"),
        roots=("educational_institution.n.01", "student.n.01", "educator.n.01", "course.n.01",
               "academic_degree.n.01", "examination.n.02", "education.n.01", "school.n.01",
               "lesson.n.01", "textbook.n.01", "classroom.n.01", "academic_program.n.01",
               "schoolwork.n.01", "grade.n.01"),
        synsets=("learning.n.01",),
    ),
    "travel": DomainRecipe(
        words=("travel", "traveling", "travelling", "flight", "visa", "itinerary", "sightseeing", "tourist",
               "tourism", "hotel", "vacation"),
        topics=("air_travel.n.01", "navigation.n.01", "seafaring.n.01", "driving.n.02", "geography.n.01",
                "tourism.n.01"),
        roots=("travel.n.01", "journey.n.01", "traveler.n.01", "hotel.n.01", "airport.n.01", "aircraft.n.01",
               "ship.n.01", "train.n.01", "country.n.02", "city.n.01", "national_capital.n.01",
               "continent.n.01", "geological_formation.n.01", "body_of_water.n.01", "baggage.n.01",
               "passport.n.01", "ticket.n.01", "lodging.n.01", "tourist.n.01", "vacation.n.01", "beach.n.01"),
    ),
    "military": DomainRecipe(
        words=("troops", "missile", "veteran", "warfare"),
        topics=("military.n.01", "terrorism.n.01", "war.n.01"),
        roots=("weapon.n.01", "military_unit.n.01", "military_officer.n.01", "serviceman.n.01",
               "military_action.n.01", "war.n.01", "armament.n.01", "military_vehicle.n.01",
               "warship.n.01", "ammunition.n.01", "soldier.n.01", "military_rank.n.01", "battle.n.01",
               "army.n.01", "navy.n.01", "air_force.n.01", "fortification.n.01"),
    ),
}

# Words every kind of conversation uses; a lexicon listing them would score small talk as domain talk.
GENERIC_WORDS: frozenset[str] = frozenset(
    """
    able about act action activity age amount answer area baby back bad bit black blue boy break call
    care case cause change check child close cold color come common condition control cool cover cut day
    deal detail difference direction door down end example face fact fall family father feel feeling
    figure form free friend front fun girl give good green ground group guy hand head help high hold home
    hour idea issue job kind last late left level life light line list little long look lot love low main
    make man mark matter mean measure meet member middle mind minute moment month morning mother move
    name need new night number object open order part people person picture piece place plan point
    position power present problem put question range reason red rest result return right round run
    second sense set side sign simple size small sort start state step stop stuff take talk term thing
    time today top touch turn type use value view way week white whole woman word work world year young
    aware comfortable easy house interested nice odd popular prepared reasonable sure together write written
    """.split()
)


def looks_inflected(wn: WordNet, word: str) -> bool:
    """Whether ``word`` looks like an inflected form of another WordNet lemma (wheeling, wales)."""
    stems: list[str] = []
    for suffix, replacements in (("ies", ("y",)), ("es", ("",)), ("s", ("",)), ("ied", ("y",)),
                                 ("ed", ("", "e")), ("ing", ("", "e"))):
        if word.endswith(suffix) and not word.endswith("ss"):
            stems += [word[: -len(suffix)] + r for r in replacements]
    return any(len(stem) >= MIN_LENGTH and stem in wn.lemmas for stem in stems)


def keeps_sense(wn: WordNet, raw_lemma: str, synset: Synset) -> bool:
    """The sense-dominance filter: is ``synset`` a main sense of the word ``raw_lemma``?"""
    word, pos = raw_lemma.lower(), synset.id[0]
    senses = wn.index.get((word, pos), ())
    if synset.id not in senses:
        return False
    rank = senses.index(synset.id) + 1
    if raw_lemma != word:  # a proper noun, looked up lower-case
        if synset.lexfile == "noun.person" or rank != 1:
            return False
        other_pos = any((word, p) in wn.index for p in POS_FILES if p != pos)
        return not other_pos and not looks_inflected(wn, word)
    total = wn.lemma_counts.get(word, 0)
    if total >= MIN_TAGGED:
        return wn.sense_counts.get((word, synset.id), 0) >= MIN_SHARE * total
    return rank <= MAX_SENSE_RANK


def collect_synsets(wn: WordNet, recipe: DomainRecipe) -> set[SynsetId]:
    """All synsets feeding one domain, before any word filter (usage-excluded ones removed)."""
    chosen: set[SynsetId] = set()
    for name in recipe.topics:
        for topic in wn.hyponym_closure(wn.synset(name).id):
            chosen.add(topic)
            chosen.update(wn.members.get(topic, ()))
    for name in recipe.roots:
        chosen |= wn.hyponym_closure(wn.synset(name).id)
    chosen.update(wn.synset(name).id for name in recipe.synsets)
    if recipe.lexfiles:
        chosen.update(s.id for s in wn.synsets.values() if s.lexfile in recipe.lexfiles)
    for name in recipe.exclude:
        for cut in wn.hyponym_closure(wn.synset(name).id):
            chosen.discard(cut)
            chosen.difference_update(wn.members.get(cut, ()))  # and what is tagged with the cut topics
    return chosen - wn.tagged_with_usage(EXCLUDED_USAGES)


def plural(noun: str) -> str | None:
    """Regular English plural of ``noun``, or None where a rule would guess wrong.

    >>> [plural(w) for w in ("doctor", "virus", "allergy", "match", "diagnosis")]
    ['doctors', 'viruses', 'allergies', 'matches', None]
    """
    if re.search(r"(ics|ness|ism|is)$", noun):  # mass nouns, or Greek -is plurals that noun.exc lists
        return None
    if re.search(r"(ss|us|as|x|z|ch|sh)$", noun):
        return noun + "es"
    if noun.endswith("s"):  # already plural (skittles) or irregular
        return None
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def verb_forms(verb: str, irregular: Iterable[str] = ()) -> list[str]:
    """Third person -s, past -ed and -ing of ``verb``; ``irregular`` forms replace the guessed ones.

    >>> verb_forms("diagnose"), verb_forms("copy"), verb_forms("run", ["ran", "running"])
    (['diagnoses', 'diagnosed', 'diagnosing'], ['copies', 'copied', 'copying'], ['runs', 'ran', 'running'])
    """
    irregular = list(irregular)
    forms = [plural(verb) or verb + "es"]  # third person follows the plural spelling; -s verbs (focus) get -es
    if not irregular:  # the exception list holds irregular pasts and doubled consonants (ran, running)
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
    """``word`` and its inflected forms for its part of speech (none for proper nouns, adjectives, adverbs)."""
    if proper or pos in "ar":
        return [word]
    if pos == "v":
        return [word, *verb_forms(word, wn.verb_exceptions.get(word, ()))]
    if word in wn.noun_exceptions:
        return [word, *wn.noun_exceptions[word]]
    if word.endswith("man") and word[:-3] in wn.lemmas:  # compounds of man: fireman → firemen
        return [word, word[:-3] + "men"]
    regular = plural(word)
    return [word] if regular is None else [word, regular]


def _is_entry(text: str) -> bool:
    return len(text) >= MIN_LENGTH and _ENTRY.fullmatch(text) is not None


def word_sources(wn: WordNet, recipe: DomainRecipe) -> dict[str, set[SynsetId]]:
    """Each word of one domain (inflections included) → the synsets that bring it, before the cross-domain filter.

    Lemmas of the recipe's synsets that pass the filters, then, one hop away,
    the adjectives derived from or pertaining to them (surgery → surgical,
    law → legal) when the linked sense is among the adjective's first
    ``DERIVED_MAX_RANK``: adjective senses are fine-grained and split their
    SemCor counts (*political* has three senses about politics), so the
    share rule would reject them.
    """
    sources: dict[str, set[SynsetId]] = defaultdict(set)
    banned = wn.tagged_with_usage(EXCLUDED_USAGES)

    def add(synset: Synset, i: int, derived: bool = False) -> bool:
        raw = synset.lemmas[i]
        word = raw.lower()
        proper = raw != word
        if (proper and not recipe.proper_nouns) or not _is_entry(word) or word in GENERIC_WORDS:
            return False
        if synset.id in banned:
            return False
        if derived:  # adjective senses are fine-grained and split their counts: judge by rank alone
            if synset.id not in wn.index.get((word, "a"), ())[:DERIVED_MAX_RANK]:
                return False
        elif not keeps_sense(wn, raw, synset):
            return False
        for form in inflections(wn, word, synset.id[0], proper):
            if _is_entry(form) and form not in GENERIC_WORDS:
                sources[form].add(synset.id)
        return True

    core = [(sid, i) for sid in sorted(collect_synsets(wn, recipe)) for i in range(len(wn.synsets[sid].lemmas))]
    for sid, i in core:
        add(wn.synsets[sid], i)
    # From every core lemma, kept or not: the *practice* sense of "medicine" is not that word's main sense,
    # but "medical" derives from it and is its own main sense; the filter judges each word on its own.
    # Adjectives only: derived verbs are mostly everyday words (fear → fear, hope → hope, story → tell).
    for sid, i in core:
        for target, j in wn.related.get((sid, i), ()):
            if target[0] == "a":
                add(wn.synsets[target], j, derived=True)
    return dict(sources)


def curated_forms(wn: WordNet, word: str) -> list[str]:
    """A hand-picked word and its inflections for every part of speech WordNet knows it as."""
    forms = [word]
    for pos in ("n", "v"):
        if (word, pos) in wn.index:
            forms += inflections(wn, word, pos, proper=False)
    return list(dict.fromkeys(forms))


def build_lexicons(wn: WordNet, recipes: Mapping[str, DomainRecipe] = RECIPES) -> dict[str, list[str]]:
    """Domain → sorted words: WordNet words in at most ``MAX_DOMAINS`` domains, plus the hand-picked ones."""
    per_domain = {domain: set(word_sources(wn, recipe)) for domain, recipe in recipes.items()}
    domain_count: dict[str, int] = defaultdict(int)
    for words in per_domain.values():
        for word in words:
            domain_count[word] += 1
    lexicons = {}
    for domain, words in sorted(per_domain.items()):
        kept = {w for w in words if domain_count[w] <= MAX_DOMAINS}
        for word in recipes[domain].words:
            if not _is_entry(word):
                raise ValueError(f"RECIPES[{domain!r}].words has {word!r}: need one lower-case word; fix RECIPES")
            kept.update(form for form in curated_forms(wn, word) if _is_entry(form))
        lexicons[domain] = sorted(kept)
    return lexicons


def explain(wn: WordNet, word: str, recipes: Mapping[str, DomainRecipe] = RECIPES) -> list[str]:
    """Lines saying which synsets bring ``word`` into which domain (before the cross-domain filter)."""
    lines = []
    for domain, recipe in sorted(recipes.items()):
        for synset_id in sorted(word_sources(wn, recipe).get(word, ())):
            synset = wn.synsets[synset_id]
            lemmas = "/".join(synset.lemmas[:3])
            lines.append(f"{domain}: {synset_id[0]}:{synset_id[1]:08d} {lemmas} — {synset.gloss[:70]}")
    return lines or [f"{word!r} is in no domain"]


def wordnet_license(copyright_file: Path = DEBIAN_COPYRIGHT) -> str:
    """The WordNet 3.0 licence text from the Debian copyright file (deb822 continuation lines)."""
    lines = copyright_file.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "License: WordNet3.0")
    except StopIteration:
        raise ValueError(
            f"copyright={str(copyright_file)!r} has no 'License: WordNet3.0' stanza; "
            f"pass wordnet-base's copyright file"
        ) from None
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        body.append("" if line.strip() == "." else line[1:])
    return "\n".join(body).rstrip() + "\n"


def _debian_version(package: str = "wordnet-base") -> str:
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (dpkg-query unavailable)"
    return result.stdout.strip()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(wn: WordNet, lexicons: Mapping[str, list[str]], recipes: Mapping[str, DomainRecipe] = RECIPES) -> str:
    """The text of ``PROVENANCE.md``: source, command, counts, and the recipe with glosses."""
    out = [
        "# Provenance of the shipped domain lexicons",
        "",
        "- Source: **WordNet 3.0**, Princeton University (https://wordnet.princeton.edu/),",
        f"  as shipped by the Debian package `wordnet-base` version `{_debian_version()}`.",
        f"- Licence: the WordNet 3.0 licence, reproduced in `{LICENSE_FILE}` as it requires.",
        "  WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.",
        "- Regenerate (deterministic, no timestamps; under a minute):",
        "",
        "  ```",
        "  apt-get install wordnet-base",
        "  python -m operators.lexicons.build_wordnet --wordnet-dir /usr/share/wordnet --out operators/lexicons/data",
        "  ```",
        "",
        "- Recipe: see the docstring of `operators/lexicons/build_wordnet.py`; per-domain synsets below.",
        f"  Parameters: MIN_LENGTH={MIN_LENGTH}, MIN_TAGGED={MIN_TAGGED}, MIN_SHARE={MIN_SHARE:.3f}, "
        f"MAX_SENSE_RANK={MAX_SENSE_RANK}, DERIVED_MAX_RANK={DERIVED_MAX_RANK}, MAX_DOMAINS={MAX_DOMAINS};",
        f"  {len(GENERIC_WORDS)} generic words excluded;",
        f"  synsets with usage domain {', '.join(EXCLUDED_USAGES)} skipped.",
        "- Each lexicon lists lemmas and their inflected forms (noun plurals; verb -s, -ed, -ing), one per line.",
        "- Hand-picked words (listed per domain below) are edgetune's own additions, not WordNet data.",
        "",
        "## Input files (sha256)",
        "",
    ]
    inputs = [f"data.{p}" for p in POS_FILES.values()] + [f"index.{p}" for p in POS_FILES.values()]
    for name in [*inputs, "noun.exc", "verb.exc", "cntlist.rev"]:
        out.append(f"- `{name}` `{_sha256(wn.wordnet_dir / name)}`")
    out += ["", "## Word counts", "", "| domain | words |", "|---|---:|"]
    out += [f"| {domain} | {len(words)} |" for domain, words in lexicons.items()]
    out += [f"| **total** | {sum(len(w) for w in lexicons.values())} |", "", "## Recipe per domain", ""]
    for domain, recipe in sorted(recipes.items()):
        out += [f"### {domain}", ""]
        for label, names in (("topic domains (members of these and of their hyponyms)", recipe.topics),
                             ("hyponym closure of", recipe.roots), ("own lemmas of", recipe.synsets),
                             ("minus the hyponym closure of", recipe.exclude)):
            if names:
                out.append(f"- {label}:")
                out += [f"  - `{n}` — {wn.synset(n).gloss.split(';')[0]}" for n in names]
        if recipe.lexfiles:
            out.append(f"- lexicographer files: {', '.join(f'`{n}`' for n in recipe.lexfiles)}")
        if recipe.words:
            out.append(f"- hand-picked words (edgetune, not WordNet): {' '.join(recipe.words)}")
        if not recipe.proper_nouns:
            out.append("- proper nouns dropped")
        out.append("")
    return "\n".join(out)


def write_outputs(out_dir: Path, wn: WordNet, lexicons: Mapping[str, list[str]], license_text: str) -> None:
    """Write ``<domain>.txt`` files, ``PROVENANCE.md`` and the licence; lexicons of dropped domains are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.txt"):
        if stale.stem not in lexicons and stale.name != LICENSE_FILE:
            stale.unlink()
    for domain, words in lexicons.items():
        header = (f"# {domain}: {len(words)} words, derived from WordNet 3.0 (Princeton University) plus the few\n"
                  f"# hand-picked ones PROVENANCE.md lists; WordNet licence in {LICENSE_FILE}.\n"
                  f"# Generated by python -m operators.lexicons.build_wordnet: do not edit by hand.\n")
        (out_dir / f"{domain}.txt").write_text(header + "\n".join(words) + "\n", encoding="utf-8")
    (out_dir / "PROVENANCE.md").write_text(provenance(wn, lexicons), encoding="utf-8")
    preface = ("The word lists in this folder are derived from WordNet 3.0, which is distributed under\n"
               "the following licence (copied from Debian's wordnet-base copyright file):\n\n")
    (out_dir / LICENSE_FILE).write_text(preface + license_text, encoding="utf-8")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m operators.lexicons.build_wordnet", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR,
                        help="folder with WordNet 3.0's data.noun etc. (Debian: apt-get install wordnet-base)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write the lexicons into")
    parser.add_argument("--copyright", type=Path, default=DEBIAN_COPYRIGHT,
                        help="Debian copyright file holding the WordNet 3.0 licence text")
    parser.add_argument("--explain", metavar="WORD",
                        help="print which synsets bring WORD into which domain; write nothing")
    args = parser.parse_args(None if argv is None else list(argv))
    if not (args.wordnet_dir / "data.noun").exists():
        parser.error(f"--wordnet-dir={args.wordnet_dir}: no data.noun there; "
                     f"install wordnet-base or pass WordNet 3.0's dict folder")
    wn = WordNet(args.wordnet_dir)
    if args.explain:
        print("\n".join(explain(wn, args.explain.lower())))
        return 0
    lexicons = build_lexicons(wn)
    write_outputs(args.out, wn, lexicons, wordnet_license(args.copyright))
    for domain, words in lexicons.items():
        print(f"{domain:12s} {len(words):6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
