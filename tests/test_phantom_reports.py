"""PhantomCXR report writer: phrases are in the report, negations are true, held-out phrasing stays held out.

Cases come from :func:`training.phantoms.schema.sample_case` with seeded generators; no images are rendered.
Negation sentences are mapped to finding kinds with a small keyword table written here, independently of the
writer's own vocabulary.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from afloc.text.tokenizer import split_sentences
from training.phantoms.reports import held_out_terms, write_report
from training.phantoms.schema import FINDING_KINDS, Case, Device, Finding, sample_case
from training.phantoms.vocabulary import TEST_ONLY_PLACES, TEST_ONLY_SYNONYMS, TRAIN_PLACES, TRAIN_SYNONYMS

# Words that name each kind, positively or in a negation ("nodules" matches "nodule": prefix match).
KIND_KEYWORDS = {
    "consolidation": ("consolidation", "airspace", "alveolar opacity", "infiltrate", "pneumonia"),
    "atelectasis": ("atelectasis", "atelectatic", "volume loss", "collapse"),
    "pleural_effusion": ("effusion", "pleural fluid", "hydrothorax", "costophrenic"),
    "pneumothorax": ("pneumothorax", "pleural air"),
    "nodule": ("nodule", "nodular", "coin lesion"),
    "mass": ("mass",),
    "cardiomegaly": (
        "cardiomegaly",
        "heart size",
        "heart is",
        "cardiac silhouette",
        "cardiomediastinal",
        "enlarged heart",
        "cardiac enlargement",
    ),
    "edema": ("edema", "oedema", "congestion"),
}
PARENCHYMAL = ("consolidation", "atelectasis", "nodule", "mass", "edema")
NEGATION_CUES = ("no", "normal", "clear", "sharp")
DEVICE_KEYWORDS = {
    "endotracheal_tube": ("endotracheal",),
    "central_venous_catheter": ("central venous catheter", "central line"),
    "nasogastric_tube": ("enteric tube", "nasogastric"),
    "pacemaker": ("pacemaker",),
}
# Words that place a finding in its zone (effusion and edema phrases may name only the side).
ZONE_WORDS = {
    "upper": ("upper", "apex", "apical"),
    "middle": ("middle", "mid", "lingula", "lingular"),
    "lower": ("lower", "base", "basilar"),
    "apical": ("apex", "apical"),
    "lateral": ("lateral",),
}


def _clean(text: str) -> str:
    sentences = split_sentences(text, min_tokens=1)
    assert len(sentences) == 1, f"{text!r} does not clean to one sentence: {sentences}"
    return sentences[0]


def _contains(sentence: str, words: str) -> bool:
    """Whether the cleaned word sequence ``words`` occurs in ``sentence`` on word boundaries."""
    return f" {words} " in f" {sentence} "


def _kinds_named(sentence: str) -> set[str]:
    kinds = {kind for kind, keys in KIND_KEYWORDS.items() if any(f" {key}" in f" {sentence}" for key in keys)}
    if "lungs are" in sentence and "clear" in sentence:
        kinds.update(PARENCHYMAL)
    if "acute cardiopulmonary" in sentence:
        kinds.update(FINDING_KINDS)
    return kinds


def _is_negation(sentence: str) -> bool:
    return any(cue in sentence.split() for cue in NEGATION_CUES)


def _sample(split: str, count: int, seed: int) -> list[tuple[Case, str]]:
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        case = sample_case(rng, f"{split}_{index:05d}", split)
        samples.append((case, write_report(case, rng)))
    return samples


@pytest.fixture(scope="module")
def reports() -> dict[str, list[tuple[Case, str]]]:
    return {"train": _sample("train", 3000, 0), "val": _sample("val", 500, 1), "test": _sample("test", 1000, 2)}


def _all(reports):
    return [item for split in ("train", "val", "test") for item in reports[split]]


def test_every_finding_has_a_phrase_in_the_report_and_in_one_cleaned_sentence(reports):
    for case, report in _all(reports):
        sentences = split_sentences(report)
        for finding in case.findings:
            assert finding.phrase, f"{case.case_id}: {finding.kind} has no phrase"
            assert finding.phrase.lower() in report.lower(), f"{finding.phrase!r} not in\n{report}"
            phrase = _clean(finding.phrase)
            assert any(_contains(s, phrase) for s in sentences), f"{phrase!r} not in any of {sentences}"


def test_phrase_laterality_zone_and_size_match_the_finding(reports):
    for case, _ in _all(reports):
        for finding in case.findings:
            words = _clean(finding.phrase).split()
            sides = {side for side in ("right", "left", "bilateral") if side in words}
            if any(word.startswith("lingul") for word in words):
                sides.add("left")
            assert sides == ({finding.side} if finding.side else set()), (finding.phrase, finding.side)
            if finding.zone in ZONE_WORDS:
                assert set(words) & set(ZONE_WORDS[finding.zone]), (finding.phrase, finding.zone)
            size = re.search(r"(\d+) (mm|cm)", finding.phrase)
            if size:
                millimetres = int(size.group(1)) * (10 if size.group(2) == "cm" else 1)
                assert millimetres == round(finding.size_cm * 10), (finding.phrase, finding.size_cm)
            assert "." not in finding.phrase


def test_negations_never_name_a_present_finding(reports):
    negations = 0
    for case, report in _all(reports):
        present = set(case.labels)
        for sentence in split_sentences(report):
            if _is_negation(sentence):
                negations += 1
                named = _kinds_named(sentence) & present
                assert not named, f"{case.case_id}: {sentence!r} negates present {named}\n{report}"
    assert negations > len(_all(reports))  # the cue detection does find negations


def test_normal_studies_name_findings_only_in_negations(reports):
    normal = [(case, report) for case, report in _all(reports) if not case.findings]
    assert len(normal) > 500
    vocabulary = [
        _clean(n) for table in (TRAIN_SYNONYMS, TEST_ONLY_SYNONYMS) for nouns in table.values() for n in nouns
    ]
    for case, report in normal:
        assert "No acute" in report.split("IMPRESSION:")[1]
        for sentence in split_sentences(report):
            if _kinds_named(sentence) or any(_contains(sentence, noun) for noun in vocabulary):
                assert _is_negation(sentence), f"{case.case_id}: {sentence!r} in a normal study"


def test_held_out_phrasing_never_occurs_in_train_or_val_reports(reports):
    terms = [_clean(term) for term in held_out_terms()]
    assert len(terms) > 20
    seen_sentences = {s for split in ("train", "val") for _, report in reports[split] for s in split_sentences(report)}
    train_clean = " | ".join(sorted(seen_sentences))  # "|" keeps matches inside one sentence
    leaked = re.findall(r"\b(?:" + "|".join(re.escape(term) for term in terms) + r")\b", train_clean)
    assert not leaked, f"held-out forms {sorted(set(leaked))} occur in train/val reports"

    train_raw = "\n|\n".join(report.lower() for _, report in reports["train"])
    test_phrases = {f.phrase for case, _ in reports["test"] for f in case.findings}
    assert len(test_phrases) > 400
    for phrase in test_phrases:
        assert phrase.lower() not in train_raw, phrase
        assert f" {_clean(phrase)} " not in f" {train_clean} ", phrase
        assert any(_contains(_clean(phrase), term) for term in terms), f"{phrase!r} uses no test-only form"


def test_held_out_vocabulary_is_disjoint_from_train_vocabulary():
    for kind in FINDING_KINDS:
        assert TEST_ONLY_SYNONYMS[kind] and TRAIN_SYNONYMS[kind]
        assert not set(TEST_ONLY_SYNONYMS[kind]) & set(TRAIN_SYNONYMS[kind])
    train_cores = {place.core for places in TRAIN_PLACES.values() for place in places}
    assert not train_cores & {place.core for places in TEST_ONLY_PLACES.values() for place in places}
    assert set(TEST_ONLY_PLACES) == set(TRAIN_PLACES)


def test_report_sections_sentences_and_devices(reports):
    for case, report in _all(reports):
        assert "FINDINGS:" in report and "IMPRESSION:" in report
        assert report.index("FINDINGS:") < report.index("IMPRESSION:")
        assert ("COMPARISON: Chest radiograph" in report) == case.has_prior
        sentences = split_sentences(report)
        assert 3 <= len(sentences) <= 12, sentences
        assert max(len(s.split()) for s in sentences) <= 25
        text = " ".join(sentences)
        for device in case.devices:
            mentions = [s for s in sentences if any(key in s for key in DEVICE_KEYWORDS[device.kind])]
            assert mentions, f"{device.kind} not mentioned in\n{report}"
            if device.kind in ("central_venous_catheter", "pacemaker"):
                assert any(device.side in s.split() for s in mentions), (device, mentions)
        if not case.devices:
            assert not any(key in text for keys in DEVICE_KEYWORDS.values() for key in keys)


def test_bilateral_effusions_are_plural_and_agree():
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        for _ in range(40):
            finding = Finding("pleural_effusion", "bilateral", "basal", "moderate")
            report = write_report(Case("x", split, "PA", [finding], [], has_prior=True), rng)
            assert "bilateral" in finding.phrase
            assert not re.search(r"(effusions|collections) is\b", report), report
            assert not re.search(r"\b(a|an) [\w -]*effusions\b", report.lower()), report


def test_device_without_a_side_is_still_described():
    rng = np.random.default_rng(3)
    for kind in DEVICE_KEYWORDS:
        report = write_report(Case("x", "train", "AP", [], [Device(kind, None)]), rng)
        assert any(key in " ".join(split_sentences(report)) for key in DEVICE_KEYWORDS[kind]), report
        assert "  " not in report and "None" not in report


def test_deterministic_for_a_given_generator_state():
    first, second = _sample("test", 50, 7), _sample("test", 50, 7)
    assert [r for _, r in first] == [r for _, r in second]
    assert [[f.phrase for f in c.findings] for c, _ in first] == [[f.phrase for f in c.findings] for c, _ in second]
    assert [r for _, r in _sample("test", 50, 8)] != [r for _, r in first]


def test_invalid_input_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="split"):
        write_report(Case("x", "holdout", "PA", [], []), rng)
    with pytest.raises(ValueError, match="fracture"):
        write_report(Case("x", "train", "PA", [Finding("fracture", "left", "upper")], []), rng)
    with pytest.raises(ValueError, match="location"):
        write_report(Case("x", "train", "PA", [Finding("nodule", "left", "hilar", size_cm=1.0)], []), rng)
    with pytest.raises(ValueError, match="device"):
        write_report(Case("x", "train", "PA", [], [Device("chest_tube", "left")]), rng)


def test_cleaned_reports_mostly_fit_97_word_pieces(reports):
    from afloc.text.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer().tokenizer
    except ValueError as error:  # the offline MiniLM package is not installed
        pytest.skip(str(error))
    texts = [". ".join(split_sentences(report)) for _, report in reports["train"][:600]]
    lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
    assert np.median(lengths) < 80
    assert np.percentile(lengths, 95) <= 97
