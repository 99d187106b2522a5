"""Radiology-style free-text reports for PhantomCXR cases, and each finding's localization phrase.

:func:`write_report` describes a sampled :class:`~training.phantoms.schema.Case` in ``FINDINGS:`` /
``IMPRESSION:`` sections (sometimes with ``INDICATION:`` and ``COMPARISON:`` lines) and sets
``finding.phrase``: a short noun phrase naming the finding and where it is ("small right pleural effusion",
"18 mm nodule in the left upper lobe"). The phrase occurs verbatim in the report, so it survives
:func:`afloc.text.tokenizer.split_sentences` as contiguous words of one cleaned sentence and serves as the ground-truth
prompt for localization.

Conventions:

* Sides are the patient's ("right" / "left" / "bilateral"), as a radiologist writes them.
* Sizes are whole numbers ("18 mm nodule", "4 cm mass", "42 mm mass"): the reference cleaning splits at
  numbered-list markers, so "1.8 cm" would become the sentences "... 1" and "8 cm nodule ...".
* Held-out phrasing: in the ``test`` split every phrase uses at least one noun from
  :data:`TEST_ONLY_SYNONYMS` or location from :data:`TEST_ONLY_PLACES`, words that never occur in a train or
  val report, so test prompts measure generalisation to unseen (but synonymous) wording. Val uses the train
  vocabulary.
* Absent findings may be negated ("No pneumothorax."); a present finding never is. Support devices are
  described but are never findings.
"""

from __future__ import annotations

import numpy as np

from training.phantoms.schema import FINDING_KINDS, SPLITS, Case, Device, Finding

from .vocabulary import (
    ADJECTIVES,
    ADVERBS,
    AMOUNT_NOUNS,
    BACKGROUND,
    COMBINED_NEGATIONS,
    COMPARED,
    COUNTABLE,
    HEDGES,
    INDICATIONS,
    LUNGS_CLEAR,
    NEGATION_PROBABILITY,
    NEGATIONS,
    NORMAL_IMPRESSIONS,
    PARENCHYMAL,
    PATTERN_WORDS,
    PRESENT,
    SEVERITY_PROBABILITY,
    STATUSES,
    TEST_ONLY_PLACES,
    TEST_ONLY_SYNONYMS,
    TRAIN_PLACES,
    TRAIN_SYNONYMS,
    Place,
)


def write_report(case: Case, rng: np.random.Generator) -> str:
    """Write a radiology report for ``case`` and set ``phrase`` on each of its findings.

    Args:
        case: a sampled case; ``case.split`` selects the vocabulary (``"test"`` uses held-out phrasing).
        rng: the only source of randomness: the same case and generator state give the same report.

    Returns:
        The report: optional ``INDICATION:`` / ``COMPARISON:`` lines, then ``FINDINGS:`` and ``IMPRESSION:``.

    Raises:
        ValueError: for an unknown split, finding kind or location.
    """
    plurals = set_phrases(case, rng, _phrase)

    # Busy reports get fewer optional sentences so that most fit in 97 word pieces.
    load = len(case.findings) + len(case.devices)
    lines = []
    if load <= 2 and rng.random() < 0.3:
        lines.append(f"INDICATION: {pick(rng, INDICATIONS)}")
    if case.has_prior:
        days = int(rng.integers(1, 15))
        lines.append(f"COMPARISON: Chest radiograph from {days} day{'s' if days > 1 else ''} prior.")
    elif rng.random() < 0.2:
        lines.append("COMPARISON: None.")

    positives = [_finding_sentence(f, plural, case, rng) for f, plural in zip(case.findings, plurals, strict=True)]
    negations = _negations(case, rng, limit=max(0, 4 - load), minimum=0 if case.findings else 2)
    body = positives + negations
    if rng.random() < 0.5:
        body = [body[i] for i in rng.permutation(len(body))]
    devices = [_device_sentence(d, rng) for d in case.devices]
    body = devices + body if rng.random() < 0.6 else body + devices
    if load <= 2 and rng.random() < 0.2:
        body.insert(0, "Portable AP view of the chest." if case.view == "AP" else "PA and lateral views of the chest.")
    if case.has_prior and not case.findings:
        body.append("No significant interval change.")
    if load <= 1 and rng.random() < 0.2:
        body.append(pick(rng, BACKGROUND))
    lines.append("FINDINGS: " + " ".join(body))
    lines.append("IMPRESSION:" + _impression(case, plurals, rng, max_items=3 if load <= 3 else 2))
    return "\n".join(lines)


def held_out_terms() -> tuple[str, ...]:
    """Every held-out noun and location (sides filled in), none of which occurs in a train or val report."""
    terms = {form for nouns in TEST_ONLY_SYNONYMS.values() for noun in nouns for form in (noun, _plural(noun))}
    for places in TEST_ONLY_PLACES.values():
        terms.update(place.core.format(side=side) for place in places for side in place.sides)
    return tuple(sorted(terms))


def set_phrases(case, rng: np.random.Generator, phrase) -> list[bool]:
    """Set ``phrase`` on each finding of ``case`` (``phrase(finding, rng, held_out)`` -> ``(phrase, plural)``).

    Returns whether each phrase is plural. The ``test`` split is held out; shared with PhantomFundus's reports.

    Raises:
        ValueError: for an unknown ``case.split``.
    """
    if case.split not in SPLITS:
        raise ValueError(f"case.split must be one of {SPLITS}, got {case.split!r}")
    held_out = case.split == "test"
    plurals = []
    for finding in case.findings:
        finding.phrase, plural = phrase(finding, rng, held_out)
        plurals.append(plural)
    return plurals


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _phrase(finding: Finding, rng: np.random.Generator, held_out: bool) -> tuple[str, bool]:
    """Return ``(phrase, plural)``; with ``held_out`` the phrase uses a test-only noun, location or both."""
    kind = finding.kind
    if kind not in FINDING_KINDS:
        raise ValueError(f"unknown finding kind {kind!r}; expected one of {FINDING_KINDS}")
    held_out_noun = held_out_place = False
    if held_out:
        has_place = finding.zone is not None and bool(_places(finding, TEST_ONLY_PLACES))
        mode = pick(rng, ("noun", "place", "both")) if has_place else "noun"
        held_out_noun, held_out_place = mode != "place", mode != "noun"

    nouns = (TEST_ONLY_SYNONYMS if held_out_noun else TRAIN_SYNONYMS)[kind]
    noun = pick(rng, [n for n in nouns if _fits_pattern(n, finding.pattern)])
    plural = finding.side == "bilateral" and _plural(noun) != noun
    if plural:
        noun = _plural(noun)
    words = _modifiers(finding, noun, rng)
    if finding.zone is None:
        return " ".join([*words, noun]), plural

    places = _places(finding, TEST_ONLY_PLACES if held_out_place else TRAIN_PLACES)
    if not places:
        raise ValueError(f"no location words for a {finding.side} {kind} in zone {finding.zone!r}")
    place = places[int(rng.integers(len(places)))]
    core = place.core.format(side=finding.side)
    after = place.preposition is not None and finding.side != "bilateral"
    if after and (not place.prenominal or rng.random() < 0.45):
        return " ".join([*words, noun, place.preposition, core]), plural
    return " ".join([*words, core, noun]), plural


def _plural(noun: str) -> str:
    """Bilateral effusions are plural ("bilateral pleural effusions"); other nouns stay as they are."""
    return noun + "s" if noun.endswith(("effusion", "collection")) else noun


def _places(finding: Finding, table: dict[str, tuple[Place, ...]]) -> list[Place]:
    usable = [p for p in table.get(finding.zone, ()) if finding.side in p.sides]
    if finding.side == "bilateral":
        usable = [p for p in usable if p.prenominal]
    return usable


def _fits_pattern(noun: str, pattern: str | None) -> bool:
    """A noun naming a pattern ("linear atelectasis") fits only a finding with that pattern."""
    other_words = [w for name, words in PATTERN_WORDS.items() if name != pattern for w in words]
    return not any(word in noun.split() for word in other_words)


def _modifiers(finding: Finding, noun: str, rng: np.random.Generator) -> list[str]:
    """Size, severity and (consolidation) pattern words that precede the noun."""
    words = []
    if finding.size_cm is not None and rng.random() < 0.75:
        millimetres = round(finding.size_cm * 10)
        words.append(f"{millimetres // 10} cm" if millimetres % 10 == 0 else f"{millimetres} mm")
    probability = 1.0 if noun in AMOUNT_NOUNS else SEVERITY_PROBABILITY.get(finding.kind, 0.0)
    if finding.severity is not None and rng.random() < probability:
        adverb = noun.startswith("enlarged") and finding.severity in ADVERBS
        words.append(pick(rng, (ADVERBS if adverb else ADJECTIVES)[finding.severity]))
        if noun in AMOUNT_NOUNS:
            words.append("amount of")
    if finding.kind == "consolidation" and finding.pattern and rng.random() < 0.5:
        words.append(finding.pattern)
    return words


def _fill(template: str, phrase: str, plural: bool, **extra: str) -> str:
    article = "" if plural or not _countable(phrase) else ("an " if phrase[0] in "aeiou" else "a ")
    text = template.format(P=phrase, p=phrase, a=article, **{"is": "are" if plural else "is"}, **extra)
    return text[0].upper() + text[1:]


def _countable(phrase: str) -> bool:
    return any(phrase.endswith(noun) or f" {noun} " in f" {phrase} " for noun in COUNTABLE)


def _hedges(finding: Finding, view: str) -> tuple[str, ...]:
    return tuple(h for h in HEDGES[finding.kind] if view == "AP" or " AP " not in f" {h} ")


def _finding_sentence(finding: Finding, plural: bool, case: Case, rng: np.random.Generator) -> str:
    phrase = finding.phrase
    if case.has_prior and rng.random() < 0.6:
        return _fill(pick(rng, COMPARED), phrase, plural, status=pick(rng, STATUSES))
    hedges = _hedges(finding, case.view)
    if hedges and rng.random() < 0.3:
        return _fill("{P}, " + pick(rng, hedges) + ".", phrase, plural)
    templates = [t for t in PRESENT if not (t.startswith("There") and phrase[0].isdigit())]
    return _fill(pick(rng, templates), phrase, plural)


def _negations(case: Case, rng: np.random.Generator, limit: int, minimum: int) -> list[str]:
    """Negate some absent findings (never a present one): ``minimum`` to ``limit`` sentences."""
    present = {f.kind for f in case.findings}
    covered: set[str] = set()
    sentences = []
    if not present & set(PARENCHYMAL) and rng.random() < 0.5:
        sentences.append(pick(rng, LUNGS_CLEAR))
        covered.update(("consolidation", "edema"))
    for kinds, templates in COMBINED_NEGATIONS:
        if not (set(kinds) & (present | covered)) and rng.random() < 0.4:
            sentences.append(pick(rng, templates))
            covered.update(kinds)
    for kind in FINDING_KINDS:
        if kind not in present | covered and rng.random() < NEGATION_PROBABILITY[kind]:
            sentences.append(pick(rng, NEGATIONS[kind]))
            covered.add(kind)
    for kind in ("pneumothorax", "pleural_effusion", "cardiomegaly", "consolidation"):
        if len(sentences) < minimum and kind not in present | covered:
            sentences.append(pick(rng, NEGATIONS[kind]))
            covered.add(kind)
    if len(sentences) > max(limit, minimum):
        keep = sorted(rng.choice(len(sentences), size=max(limit, minimum), replace=False).tolist())
        sentences = [sentences[i] for i in keep]
    return sentences


def _device_sentence(device: Device, rng: np.random.Generator) -> str:
    side = device.side or ""  # a missing side is left out (the double space is closed below)
    if device.kind == "endotracheal_tube":
        distance = int(rng.integers(2, 7))
        options = (
            f"Endotracheal tube terminates {distance} cm above the carina.",
            f"The endotracheal tube tip is {distance} cm above the carina.",
            "Endotracheal tube in standard position.",
        )
    elif device.kind == "central_venous_catheter":
        options = (
            f"{side} internal jugular central venous catheter tip in the SVC.",
            f"{side} subclavian central venous catheter terminates in the superior vena cava.",
            f"{side} internal jugular central line with tip at the cavoatrial junction.",
        )
    elif device.kind == "nasogastric_tube":
        options = (
            "Enteric tube courses below the diaphragm.",
            "Nasogastric tube tip in the stomach.",
            "An enteric tube courses below the diaphragm with its tip in the stomach.",
        )
    elif device.kind == "pacemaker":
        options = (
            f"{side} chest wall pacemaker with leads in the right atrium and ventricle.",
            f"Dual-chamber pacemaker over the {side} chest wall with leads in the right atrium and ventricle.",
        )
    else:
        raise ValueError(f"unknown device kind {device.kind!r}")
    text = " ".join(pick(rng, options).split())
    return text[0].upper() + text[1:]


def _impression(case: Case, plurals: list[bool], rng: np.random.Generator, max_items: int) -> str:
    """Summarise up to ``max_items`` findings (phrase or other words, maybe hedged), or state a normal study."""
    if not case.findings:
        return " " + pick(rng, NORMAL_IMPRESSIONS)
    items = []
    for finding, plural in zip(case.findings[:max_items], plurals[:max_items], strict=True):
        phrase = finding.phrase
        if rng.random() < 0.5:  # name it again in other words
            phrase, plural = _phrase(finding, rng, case.split == "test")
        if finding.kind == "cardiomegaly" and finding.severity in ADVERBS and rng.random() < 0.25:
            items.append(f"The heart is {pick(rng, ADVERBS[finding.severity])} enlarged.")
        elif _hedges(finding, case.view) and rng.random() < 0.4:
            items.append(_fill("{P}, " + pick(rng, _hedges(finding, case.view)) + ".", phrase, plural))
        else:
            items.append(_fill("{P}.", phrase, plural))
    if len(items) > 1 and rng.random() < 0.5:
        return "\n" + "\n".join(f"{number}. {item}" for number, item in enumerate(items, 1))
    return " " + " ".join(items)
