"""Ophthalmology-style free-text reports for PhantomFundus cases, and each lesion's localization phrase.

:func:`write_fundus_report` describes a sampled :class:`~training.phantoms.fundus.schema.FundusCase` in ``EYE:``,
``FINDINGS:`` and ``IMPRESSION:`` sections and sets ``lesion.phrase``: a short noun phrase naming the lesion and
its region ("scattered hard exudates at the macula", "flame haemorrhage along the superotemporal arcade"). The
phrase occurs verbatim in the report, inside one sentence of :func:`afloc.text.tokenizer.split_sentences`, and is the
ground-truth prompt for localization.

Conventions (as PhantomCXR's :mod:`training.phantoms.reports`):

* Held-out phrasing: in the ``test`` split every phrase uses a noun from :data:`TEST_ONLY_NOUNS` or a region form
  from :data:`TEST_ONLY_PLACES` (or both); these never occur in a train or val report. Val uses train words.
* Absent lesions may be negated ("No haemorrhages."); a present lesion never is. Every report describes the optic
  disc, the macula and the vessels, so that the words "disc", "cup", "macula" and "fovea" are seen in context.
* No decimals (the reference text cleaning splits sentences at "."): the cup is described in words.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..reports import pick, set_phrases
from .schema import LESION_KINDS, REGIONS, FundusCase, Lesion


class Place(NamedTuple):
    """A region's words: ``text`` follows the noun ("at the macula") or, if ``prenominal``, precedes it."""

    text: str
    prenominal: bool = False


TRAIN_NOUNS: dict[str, tuple[str, ...]] = {
    "hard_exudates": ("hard exudates", "exudates", "lipid exudates", "yellow exudates"),
    "haemorrhage": ("haemorrhage", "retinal haemorrhage", "intraretinal haemorrhage"),
    "microaneurysms": ("microaneurysms", "capillary microaneurysms"),
    "cotton_wool_spots": ("cotton wool spots", "cotton-wool spots"),
    "drusen": ("drusen", "drusen deposits"),
}
TEST_ONLY_NOUNS: dict[str, tuple[str, ...]] = {
    "hard_exudates": ("exudative deposits", "waxy lipid deposits"),
    "haemorrhage": ("hemorrhage", "retinal bleed"),
    "microaneurysms": ("micro-aneurysms", "punctate red dots"),
    "cotton_wool_spots": ("soft exudates", "nerve fibre layer infarcts"),
    "drusen": ("drusenoid deposits", "colloid bodies"),
}
# Haemorrhage patterns: the pattern word goes before the noun ("blot haemorrhage").
PATTERN_WORDS = {"dot": ("dot",), "blot": ("blot",), "flame": ("flame", "flame-shaped", "splinter")}
TEST_ONLY_PATTERN_WORDS = ("flame-shaped", "splinter")

TRAIN_PLACES: dict[str, tuple[Place, ...]] = {
    "macula": (Place("at the macula"), Place("in the macula"), Place("macular", True)),
    "temporal_to_macula": (Place("temporal to the macula"),),
    "superotemporal_arcade": (Place("along the superotemporal arcade"), Place("near the superotemporal arcade")),
    "inferotemporal_arcade": (Place("along the inferotemporal arcade"), Place("near the inferotemporal arcade")),
    "superonasal": (Place("in the superonasal quadrant"), Place("superonasal", True), Place("superonasally")),
    "inferonasal": (Place("in the inferonasal quadrant"), Place("inferonasal", True), Place("inferonasally")),
    "nasal_to_disc": (Place("nasal to the disc"), Place("nasal to the optic disc")),
    "peripapillary": (Place("peripapillary", True), Place("around the disc"), Place("at the disc margin")),
}
TEST_ONLY_PLACES: dict[str, tuple[Place, ...]] = {
    "macula": (Place("at the fovea"), Place("foveal", True), Place("in the foveal region")),
    "temporal_to_macula": (Place("temporal to the fovea"),),
    "superotemporal_arcade": (Place("along the superior temporal vascular arcade"),),
    "inferotemporal_arcade": (Place("along the inferior temporal vascular arcade"),),
    "superonasal": (Place("in the upper nasal quadrant"),),
    "inferonasal": (Place("in the lower nasal quadrant"),),
    "nasal_to_disc": (Place("nasal to the optic nerve head"),),
    "peripapillary": (Place("around the optic nerve head"), Place("juxtapapillary", True)),
}

_AMOUNT_WORDS = {"few": ("a few", "few"), "several": ("several", "scattered"), "many": ("numerous", "multiple")}
_NEGATIONS = {
    "hard_exudates": ("No hard exudates.", "No exudates are seen.", "There are no hard exudates."),
    "haemorrhage": ("No haemorrhages.", "No retinal haemorrhages are seen.", "There are no haemorrhages."),
    "microaneurysms": ("No microaneurysms.", "No microaneurysms are seen."),
    "cotton_wool_spots": ("No cotton wool spots.", "There are no cotton wool spots."),
    "drusen": ("No drusen.", "No drusen are seen.", "The macula is free of drusen."),
}
_DR_KINDS = ("hard_exudates", "haemorrhage", "microaneurysms", "cotton_wool_spots")
_DISC_NORMAL = (
    "The optic disc is pink and well defined with a healthy rim.",
    "The optic disc is well perfused with a small physiological cup.",
    "Healthy optic disc with a normal cup.",
    "The disc margins are sharp and the cup is small.",
)
_DISC_CUPPED = (
    "The optic disc shows an enlarged cup with a thin rim.",
    "The cup of the optic disc is enlarged.",
    "Increased cupping of the optic disc.",
)
_MACULA_NORMAL = ("The macula is flat with a normal reflex.", "Normal macula.", "The macula appears healthy.")
_VESSELS = ("The vessels are of normal calibre.", "Normal vessel calibre and course.", "The arcades are unremarkable.")
_PERIPHERY = ("The retina is flat.", "Flat retina in all quadrants.", "No retinal detachment.")
_NORMAL_IMPRESSIONS = ("Normal fundus.", "No retinopathy.", "Healthy retina.")
_INDICATIONS = ("Diabetes screening.", "Annual review.", "Blurred vision.", "Routine examination.")


def write_fundus_report(case: FundusCase, rng: np.random.Generator) -> str:
    """Write a fundus report for ``case`` and set ``phrase`` on each of its lesions.

    Args:
        case: a sampled case; ``case.split`` selects the vocabulary (``"test"`` uses held-out phrasing).
        rng: the only source of randomness.

    Returns:
        The report: ``EYE:``, optional ``INDICATION:``, then ``FINDINGS:`` and ``IMPRESSION:``.

    Raises:
        ValueError: for an unknown split, lesion kind or region.
    """
    plurals = set_phrases(case, rng, _phrase)
    eye = {"right": "Right eye (OD).", "left": "Left eye (OS)."}[case.eye]
    lines = [f"EYE: {eye}"]
    if rng.random() < 0.3:
        lines.append(f"INDICATION: {pick(rng, _INDICATIONS)}")
    disc = pick(rng, _DISC_CUPPED if case.cup_ratio > 0.6 else _DISC_NORMAL)
    positives = [_sentence(lesion, plural, rng) for lesion, plural in zip(case.findings, plurals, strict=True)]
    present = {lesion.kind for lesion in case.findings}
    negations = [pick(rng, _NEGATIONS[k]) for k in LESION_KINDS if k not in present and rng.random() < 0.45]
    if not present & set(_DR_KINDS) and rng.random() < 0.5:
        negations.append("No signs of diabetic retinopathy.")
    negations = [negations[i] for i in rng.permutation(len(negations))][: max(1, 4 - len(positives))]
    body = positives + negations
    if rng.random() < 0.5:
        body = [body[i] for i in rng.permutation(len(body))]
    context = [disc]
    if "macula" not in {lesion.region for lesion in case.findings} and rng.random() < 0.6:
        context.append(pick(rng, _MACULA_NORMAL))
    if rng.random() < 0.5:
        context.append(pick(rng, _VESSELS))
    if not case.findings and rng.random() < 0.5:
        context.append(pick(rng, _PERIPHERY))
    lines.append("FINDINGS: " + " ".join(context + body))
    lines.append("IMPRESSION: " + _impression(case, rng))
    return "\n".join(lines)


def held_out_terms() -> tuple[str, ...]:
    """Every held-out noun, pattern word and region form; none occurs in a train or val report."""
    terms = {form for nouns in TEST_ONLY_NOUNS.values() for noun in nouns for form in (noun, _plural(noun))}
    terms.update(_singular(noun) for noun in TEST_ONLY_NOUNS["cotton_wool_spots"])
    terms.update(TEST_ONLY_PATTERN_WORDS)
    terms.update(place.text for places in TEST_ONLY_PLACES.values() for place in places)
    return tuple(sorted(terms))


def _plural(noun: str) -> str:
    last = noun.split()[-1]
    if last in ("haemorrhage", "hemorrhage", "bleed"):
        return noun + "s"
    return noun


def _singular(noun: str) -> str:
    """One cotton wool spot, soft exudate or infarct (the other kinds are drawn as clusters: always plural)."""
    return noun[:-1] if noun.endswith("s") else noun


def _phrase(lesion: Lesion, rng: np.random.Generator, held_out: bool) -> tuple[str, bool]:
    """``(phrase, plural)``; with ``held_out`` the phrase uses a test-only noun, place or both."""
    if lesion.kind not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {lesion.kind!r}; expected one of {LESION_KINDS}")
    if lesion.region not in REGIONS:
        raise ValueError(f"unknown region {lesion.region!r}; expected one of {REGIONS}")
    mode = pick(rng, ("noun", "place", "both")) if held_out else "none"
    nouns = (TEST_ONLY_NOUNS if mode in ("noun", "both") else TRAIN_NOUNS)[lesion.kind]
    noun = pick(rng, nouns)
    words = []
    if lesion.kind == "haemorrhage":
        patterns = PATTERN_WORDS[lesion.pattern]
        if not held_out:
            patterns = tuple(w for w in patterns if w not in TEST_ONLY_PATTERN_WORDS)
        if rng.random() < 0.75:
            words.append(pick(rng, patterns))
    elif lesion.kind == "drusen" and rng.random() < 0.4:
        words.append(lesion.pattern)
    plural = lesion.count > 1
    if lesion.kind == "haemorrhage" and plural:
        noun = _plural(noun)
    elif lesion.kind == "cotton_wool_spots" and not plural:
        noun = _singular(noun)
    if plural and rng.random() < 0.5:
        words.insert(0, pick(rng, _AMOUNT_WORDS[lesion.amount]))
    places = (TEST_ONLY_PLACES if mode in ("place", "both") else TRAIN_PLACES)[lesion.region]
    place = pick(rng, places)
    if place.prenominal:
        return " ".join([*words, place.text, noun]), plural
    return " ".join([*words, noun, place.text]), plural


def _sentence(lesion: Lesion, plural: bool, rng: np.random.Generator) -> str:
    phrase = lesion.phrase
    starts_with_amount = phrase.split()[0] in ("a", "few", "several", "scattered", "numerous", "multiple", "many")
    if plural:
        templates = ["{P} are seen.", "{P} are present.", "{P}."] + ([] if starts_with_amount else ["There are {p}."])
    else:
        article = "" if starts_with_amount else ("an " if phrase[0] in "aeiou" else "a ")
        templates = ["{P} is seen.", "{P} is present.", "{P}.", "There is " + article + "{p}."]
    text = pick(rng, templates).format(P=phrase, p=phrase)
    return text[0].upper() + text[1:]


def _impression(case: FundusCase, rng: np.random.Generator) -> str:
    """A grading-style summary that never contradicts the findings."""
    kinds = {lesion.kind for lesion in case.findings}
    if not kinds:
        return pick(rng, _NORMAL_IMPRESSIONS) + (
            " Enlarged cup: glaucoma review advised." if case.cup_ratio > 0.6 else ""
        )
    items = []
    dr = kinds & set(_DR_KINDS)
    if dr:
        severe = len(dr) >= 3 or "cotton_wool_spots" in dr
        grade = "moderate" if severe or len(dr) == 2 else "mild"
        items.append(f"{grade.capitalize()} non-proliferative diabetic retinopathy.")
        if "hard_exudates" in dr and any(f.region == "macula" for f in case.findings if f.kind == "hard_exudates"):
            items.append("Exudates involving the macula: refer for macular oedema assessment.")
    if "drusen" in kinds:
        items.append(pick(rng, ("Drusen, consistent with early age-related macular degeneration.", "Drusen noted.")))
    if case.cup_ratio > 0.6:
        items.append("Enlarged cup: glaucoma review advised.")
    return " ".join(items)
