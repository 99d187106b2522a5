"""Radiologist-style report text for real chest films, written from their masks and boxes (issue #32).

:func:`describe_infection` reads where a mask's opacity lies, in the **patient's frame** (the patient's right lung
is on the image's left of a frontal film): per lung, its zones (upper / middle / lower thirds of that lung's
height, from the lung mask), extent (focal / patchy / extensive: the share of the lung involved) and whether it
is peripheral. TB boxes get a side and a zone from their centre (TBX11K has no lung masks: the zones are thirds of
a fixed lung band, 12-82% of the film's height). :func:`covid_report` and :func:`tb_report` write the text with
several phrasings per finding, normal and negative sentences mined from ``iu_reports`` ("No pleural effusion.",
"The lungs are clear." for normal films), and held-out nouns and zone words in the test split.

**These reports are derived from the annotations and stand in for real reports**; the corpus that uses them is
built by :mod:`training.realdata.cxr`.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .common import Target, pick

ZONES = ("upper", "mid", "lower")

SIDES = ("right", "left")  # the patient's

CLASS_PHRASES = {
    "covid_opacity": "COVID-19 pneumonia opacities",
    "active_tb": "active tuberculosis",
    "obsolete_tb": "old healed tuberculosis",
}

TB_CLASSES = {0: "active_tb", 1: "obsolete_tb"}

LUNG_BAND = (0.12, 0.82)  # TBX11K: the lungs' vertical band as a share of the film's height (no lung masks)

TRAIN_NOUNS = {
    "covid_opacity": ("ground-glass opacities", "airspace opacities", "hazy opacities", "consolidation",
                      "opacities", "infiltrates", "airspace disease"),
    "active_tb": ("consolidation", "patchy opacity", "cavitating opacity", "nodular opacities", "infiltrate"),
    "obsolete_tb": ("fibrotic scarring", "fibrocalcific scarring", "calcified nodules", "fibrotic strands"),
}  # fmt: skip

TEST_ONLY_NOUNS = {
    "covid_opacity": ("ground glass densities", "opacification"),
    "active_tb": ("cavitary lesion", "airspace shadowing"),
    "obsolete_tb": ("calcified granulomas", "scar tissue"),
}

TRAIN_ZONE_WORDS = {"upper": ("upper zone", "upper lung"), "mid": ("mid zone", "middle zone"),
                    "lower": ("lower zone", "lung base", "lower lung")}  # fmt: skip

TEST_ONLY_ZONE_WORDS = {"upper": ("apex",), "mid": ("perihilar region",), "lower": ("lower lung field",)}

EXTENT_WORDS = {"focal": ("focal", "small"), "patchy": ("patchy", "multifocal"), "extensive": ("extensive", "diffuse")}

IMPRESSIONS = {
    "covid": ("Findings consistent with COVID-19 pneumonia.", "Viral pneumonia, in keeping with COVID-19.",
              "Appearances are typical of COVID-19 pneumonia."),
    "active_tb": ("Findings consistent with active pulmonary tuberculosis.", "Active tuberculosis."),
    "obsolete_tb": ("Old healed tuberculosis.", "Sequelae of previous tuberculosis."),
    "non_covid": ("Pneumonia, not typical of COVID-19.", "Abnormal lungs: lung disease other than COVID-19.",
                  "Lung opacities from a cause other than COVID-19."),
}  # fmt: skip

NORMAL_LUNG_FALLBACK = ("The lungs are clear.", "No focal consolidation.", "No acute cardiopulmonary abnormality.")

CONTEXT_FALLBACK = ("No pleural effusion.", "No pneumothorax.", "Heart size is normal.")


@dataclass
class LungFinding:
    """Opacity in one lung: ``side`` (patient's), ``zones`` involved, ``extent`` word key, ``peripheral``."""

    side: str
    zones: tuple[str, ...]
    extent: str
    peripheral: bool
    mask: np.ndarray | None = field(default=None, repr=False)


def split_lungs(lung_mask: np.ndarray) -> dict[str, np.ndarray]:
    """``{"right": mask, "left": mask}`` in the patient's frame: the patient's right lung is on the image's left."""
    lung = np.asarray(lung_mask, dtype=bool)
    if not lung.any():
        raise ValueError("the lung mask is empty")
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(lung.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])[:2]
    if len(order) == 2 and stats[order[1], cv2.CC_STAT_AREA] > 0.2 * stats[order[0], cv2.CC_STAT_AREA]:
        a, b = sorted(order, key=lambda k: centroids[k][0])  # a: image left
        middle = (centroids[a][0] + centroids[b][0]) / 2
    else:  # one merged component (or a tiny second one): split at the mask's horizontal middle
        columns = np.flatnonzero(lung.any(axis=0))
        middle = (columns[0] + columns[-1]) / 2
    image_left = np.zeros_like(lung)
    image_left[:, : int(np.floor(middle)) + 1] = True
    return {"right": lung & image_left, "left": lung & ~image_left}


def describe_infection(infection: np.ndarray, lung_mask: np.ndarray, min_share: float = 0.02) -> list[LungFinding]:
    """Where an infection mask lies, per lung (patient's right first), from the film's lung mask.

    A lung counts when its infected pixels are at least ``min_share`` of its area. Its zones are the thirds of
    that lung's height holding at least a quarter of its infected pixels (at least the zone holding the most).
    Extent: focal under 15% of the lung, patchy under 40%, else extensive. Peripheral: the infected pixels lie on
    average in the lateral 40% of the lung's width.
    """
    infection = np.asarray(infection, dtype=bool)
    lungs = split_lungs(lung_mask)
    out = []
    for side in SIDES:
        lung = lungs[side]
        area = int(lung.sum())
        mine = infection & lung
        if area == 0 or not mine.any() or mine.sum() < min_share * area:
            continue
        rows = np.flatnonzero(lung.any(axis=1))
        top, height = rows[0], rows[-1] - rows[0] + 1
        infected_rows, infected_cols = np.nonzero(mine)
        third = np.clip(((infected_rows - top) * 3) // height, 0, 2)
        counts = np.bincount(third, minlength=3)
        zones = tuple(ZONES[k] for k in range(3) if counts[k] >= 0.25 * counts.sum()) or (ZONES[int(counts.argmax())],)
        share = mine.sum() / area
        extent = "focal" if share < 0.15 else "patchy" if share < 0.4 else "extensive"
        columns = np.flatnonzero(lung.any(axis=0))
        width = columns[-1] - columns[0] + 1
        # lateral = away from the midline: the image's left edge for the patient's right lung
        lateral = (infected_cols - columns[0]) if side == "right" else (columns[-1] - infected_cols)
        peripheral = bool(np.mean(lateral / width) < 0.4)
        out.append(LungFinding(side, zones, extent, peripheral, mine))
    return out


def box_place(box: list[float], width: int, height: int) -> tuple[str, str]:
    """``(side, zone)`` of an ``[x, y, w, h]`` box on a frontal film without lung masks (see :data:`LUNG_BAND`)."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    side = "right" if cx < width / 2 else "left"  # the image's left half is the patient's right
    top, bottom = LUNG_BAND[0] * height, LUNG_BAND[1] * height
    zone = ZONES[int(np.clip((cy - top) * 3 // (bottom - top), 0, 2))]
    return side, zone


def _zone_text(side: str, zones: tuple[str, ...], rng: np.random.Generator, held_out: bool) -> str:
    if len(zones) == 3:
        return pick(rng, (f"throughout the {side} lung", f"in all zones of the {side} lung"))
    words = [pick(rng, (TEST_ONLY_ZONE_WORDS if held_out else TRAIN_ZONE_WORDS)[z]) for z in zones]
    if len(words) == 1:
        return f"in the {side} {words[0]}"
    stem = [w.split()[0] for w in words]  # "upper and mid zones" when the words share their noun
    nouns = {" ".join(w.split()[1:]) for w in words}
    if nouns == {"zone"}:
        noun = nouns.pop()
        return f"in the {side} {' and '.join(stem)} {noun}s"
    return f"in the {side} {f' and the {side} '.join(words)}"


def lung_phrase(kind: str, finding: LungFinding, rng: np.random.Generator, held_out: bool) -> tuple[str, str]:
    """``(phrase, head noun)``, e.g. "patchy peripheral ground-glass opacities in the right lower zone"; held out:
    a test-only noun, zone word or both."""
    mode = pick(rng, ("noun", "zone", "both")) if held_out else "none"
    noun = pick(rng, (TEST_ONLY_NOUNS if mode in ("noun", "both") else TRAIN_NOUNS)[kind])
    words = [pick(rng, EXTENT_WORDS[finding.extent])] if rng.random() < 0.7 else []
    if finding.peripheral and kind == "covid_opacity" and rng.random() < 0.5:
        words.append("peripheral")
    return " ".join([*words, noun, _zone_text(finding.side, finding.zones, rng, mode in ("zone", "both"))]), noun


@dataclass
class Vocabulary:
    """Sentences mined from real reports: normal lungs, and other normal or negative statements."""

    normal_lungs: tuple[str, ...] = NORMAL_LUNG_FALLBACK
    context: tuple[str, ...] = CONTEXT_FALLBACK


def mine_iu_sentences(archive: Path, min_count: int = 20) -> Vocabulary:
    """The frequent normal and negative sentences of the IU/Open-i reports (``NLMCXR_reports.tgz``)."""
    counts: Counter[str] = Counter()
    pattern = re.compile(r'<AbstractText Label="(?:FINDINGS|IMPRESSION)">(.*?)</AbstractText>', re.S)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            text = tar.extractfile(member).read().decode("utf-8", "replace")
            for section in pattern.findall(text):
                for sentence in re.split(r"(?<=\.)\s+", section.strip()):
                    counts[sentence.strip()] += 1
    lungs, context = [], []
    for sentence, count in counts.most_common():
        if count < min_count:
            break
        words = sentence.lower()
        if len(words.split()) < 3 or "xxxx" in words or re.search(r"\d|low|opacit|atelecta|granuloma|degenerat", words):
            continue
        if re.search(r"lung|airspace|consolidation|cardiopulmonary|active disease|acute disease|pulmonary disease",
                     words):  # fmt: skip
            lungs.append(sentence)
        elif re.search(r"heart|cardi|mediastin|pneumothora|effusion|osseous|bony|trachea|vascularity", words):
            context.append(sentence)
    return Vocabulary(tuple(lungs) or NORMAL_LUNG_FALLBACK, tuple(context) or CONTEXT_FALLBACK)


def _context(vocabulary: Vocabulary, rng: np.random.Generator, n: int) -> list[str]:
    picks = rng.choice(len(vocabulary.context), size=min(n, len(vocabulary.context)), replace=False)
    return [vocabulary.context[int(k)] for k in picks]


def _sentence(phrase: str, rng: np.random.Generator, noun: str) -> str:
    """A sentence stating ``phrase``, whose head noun is ``noun`` (its number chooses the verb)."""
    plural = noun.endswith("s") and not noun.endswith("ss")
    verb = "are" if plural else "is"
    template = pick(rng, ("{P}.", f"There {verb} {{p}}.", f"{{P}} {verb} noted.", f"{{P}} {verb} seen."))
    return template.format(P=phrase[0].upper() + phrase[1:], p=phrase)


def covid_report(
    findings: list[LungFinding], rng: np.random.Generator, vocabulary: Vocabulary, held_out: bool = False,
    class_only: bool = False,
) -> tuple[str, list[Target]]:  # fmt: skip
    """Report of a COVID-19 film and its phrase targets (one per lung, or one bilateral phrase).

    ``class_only``: the ablation's text, the finding without side, zone or extent ("Ground-glass opacities.").
    """
    targets, sentences = [], []
    if class_only and findings:
        noun = pick(rng, (TEST_ONLY_NOUNS if held_out else TRAIN_NOUNS)["covid_opacity"])
        union = np.logical_or.reduce([f.mask for f in findings])
        sentences.append(_sentence(noun, rng, noun))
        targets.append(Target("covid_opacity", noun, mask=union))
    elif len(findings) == 2 and rng.random() < 0.35:
        noun = pick(rng, (TEST_ONLY_NOUNS if held_out else TRAIN_NOUNS)["covid_opacity"])
        lower = all("lower" in f.zones for f in findings)
        tail = pick(rng, (", predominantly in the lower zones", ", worse at the bases")) if lower else ""
        phrase = f"bilateral {pick(rng, EXTENT_WORDS[max(f.extent for f in findings)])} {noun}"
        sentences.append(_sentence(phrase, rng, noun)[:-1] + tail + ".")
        targets.append(Target("covid_opacity", phrase, mask=findings[0].mask | findings[1].mask))
    else:
        for finding in findings:
            phrase, noun = lung_phrase("covid_opacity", finding, rng, held_out)
            sentences.append(_sentence(phrase, rng, noun))
            targets.append(Target("covid_opacity", phrase, mask=finding.mask))
    sentences += _context(vocabulary, rng, 2)
    return _compose(sentences, pick(rng, IMPRESSIONS["covid"]), rng), targets


def tb_report(
    boxes: list[tuple[str, list[float]]], width: int, height: int, rng: np.random.Generator, vocabulary: Vocabulary,
    held_out: bool = False, class_only: bool = False,
) -> tuple[str, list[Target]]:  # fmt: skip
    """Report of a TB film from its ``(class, [x, y, w, h])`` boxes: one phrase per (class, side, zone), or with
    ``class_only`` one per class without side or zone (the ablation's text)."""
    groups: dict[tuple[str, str, str], list[list[float]]] = {}
    for kind, box in boxes:
        place = ("", "") if class_only else box_place(box, width, height)
        groups.setdefault((kind, *place), []).append(box)
    sentences, targets = [], []
    for (kind, side, zone), mine in sorted(groups.items()):
        mode = pick(rng, ("noun", "zone", "both")) if held_out else "none"
        noun = pick(rng, (TEST_ONLY_NOUNS if mode in ("noun", "both") else TRAIN_NOUNS)[kind])
        phrase = noun if class_only else f"{noun} {_zone_text(side, (zone,), rng, mode in ('zone', 'both'))}"
        sentences.append(_sentence(phrase, rng, noun))
        targets.append(Target(kind, phrase, boxes=mine))
    kinds = sorted({kind for kind, _ in boxes})
    sentences += _context(vocabulary, rng, 2)
    impression = " ".join(pick(rng, IMPRESSIONS[k]) for k in kinds) or pick(rng, vocabulary.normal_lungs)
    return _compose(sentences, impression, rng), targets


def normal_report(rng: np.random.Generator, vocabulary: Vocabulary) -> str:
    """A normal film: clear lungs and other normal statements, all mined from real reports."""
    lungs = pick(rng, vocabulary.normal_lungs)
    return _compose([lungs, *_context(vocabulary, rng, 2)], pick(rng, vocabulary.normal_lungs), rng)


def other_disease_report(rng: np.random.Generator, vocabulary: Vocabulary) -> str:
    """A film of COVID-QU-Ex's "Non-COVID" class: lung disease of another cause, location not annotated."""
    finding = pick(rng, ("Abnormal lung opacities.", "Parenchymal lung disease.", "Pulmonary infiltrates."))
    return _compose([finding, *_context(vocabulary, rng, 1)], pick(rng, IMPRESSIONS["non_covid"]), rng)


def _compose(findings: list[str], impression: str, rng: np.random.Generator) -> str:
    view = pick(rng, ("Frontal chest radiograph.", "PA chest.", "AP chest radiograph.", "Chest X-ray, frontal view."))
    return f"EXAMINATION: {view}\nFINDINGS: {' '.join(findings)}\nIMPRESSION: {impression}"


def held_out_terms() -> tuple[str, ...]:
    """Every test-only noun and zone word; none occurs in a train or val report."""
    terms = {n for nouns in TEST_ONLY_NOUNS.values() for n in nouns}
    terms.update(w for words in TEST_ONLY_ZONE_WORDS.values() for w in words)
    return tuple(sorted(terms))


LOCATION_WORDS = re.compile(
    r"\b(right|left|bilateral(ly)?|unilateral|upper|lower|mid|middle|zones?|bases?|basal|apex|apices|apical|"
    r"peripheral|periphery|perihilar|lobes?|focal|patchy|multifocal|diffuse|extensive|lung fields?)\b",
    re.I,
)


def strip_location_words(text: str) -> str:
    """Text without side, zone or extent words (the class-only ablation's version of a real note)."""
    return re.sub(r"\s{2,}", " ", LOCATION_WORDS.sub("", text)).strip()
