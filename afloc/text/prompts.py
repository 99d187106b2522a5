"""Prompt templates and standard finding lists for zero-shot localization and classification."""

from __future__ import annotations

CXR_FINDINGS = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "pleural effusion",
    "pneumonia",
    "pneumothorax",
    "nodule",
    "mass",
)
FUNDUS_FINDINGS = (
    "optic disc",
    "hard exudates",
    "haemorrhages",
    "microaneurysms",
    "cotton wool spots",
    "drusen",
)
"""Fundus presets: the IDRiD box classes (optic disc, hard exudates, haemorrhages) first, then the other
PhantomFundus lesions, in the words of the PhantomFundus training reports (British spelling, plural)."""
FINDINGS_BY_MODALITY = {"cxr": CXR_FINDINGS, "fundus": FUNDUS_FINDINGS}

LOCALIZATION_TEMPLATE = "Findings suggesting {finding}."
"""The reference's prompt for a finding category (the evaluation's ``--prompt template`` default)."""
POSITIVE_TEMPLATES = (LOCALIZATION_TEMPLATE, "There is {finding}.", "{finding} is present.")
NEGATIVE_TEMPLATES = ("No {finding}.", "There is no {finding}.", "No evidence of {finding}.")


def classification_prompts(finding: str) -> tuple[list[str], list[str]]:
    """Positive and negative prompt sets for zero-shot classification of ``finding``."""
    return (
        [t.format(finding=finding) for t in POSITIVE_TEMPLATES],
        [t.format(finding=finding) for t in NEGATIVE_TEMPLATES],
    )


FINDING_TERMS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "atelectatic"),
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "enlarged cardiac silhouette"),
    "consolidation": ("consolidation", "airspace opacity", "airspace disease"),
    "pneumonia": ("pneumonia",),
    "edema": ("edema", "oedema"),
    "pleural effusion": ("effusion", "pleural fluid", "hydrothorax"),
    "pneumothorax": ("pneumothorax",),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "fracture": ("fracture",),
    "tuberculosis": ("tuberculosis", "tb"),
    "covid-19": ("covid", "covid-19", "sars-cov-2"),
    "optic disc": ("optic disc", "optic disk", "optic nerve head"),
    "hard exudates": ("hard exudate",),
    "haemorrhages": ("haemorrhage", "hemorrhage"),
    "microaneurysms": ("microaneurysm",),
    "cotton wool spots": ("cotton wool", "soft exudate"),
    "drusen": ("drusen",),
}
"""Findings a prompt can name, and the words that name each (singular: a plural matches too). Used to tell a user
that a prompt asks for a finding the model's training reports never named."""


def _words(text: str) -> str:
    return " " + " ".join("".join(c if c.isalnum() or c == "-" else " " for c in text.lower()).split()) + " "


def _names(text: str, terms: tuple[str, ...]) -> bool:
    words = _words(text)
    return any(f" {term} " in words or f" {term}s " in words or f" {term}es " in words for term in terms)


def named_findings(text: str) -> list[str]:
    """The findings of :data:`FINDING_TERMS` that ``text`` names ("small left pleural effusions" ->
    ``["pleural effusion"]``), in the table's order."""
    return [finding for finding, terms in FINDING_TERMS.items() if _names(text, terms)]


def covers(model_findings: tuple[str, ...] | list[str], finding: str) -> bool:
    """Whether a list of finding labels (``pleural_effusion``, ``active_tb``, ...) names ``finding`` (a key of
    :data:`FINDING_TERMS`, or any text: then its own words)."""
    known = " | ".join(name.replace("_", " ") for name in model_findings)
    return _names(known, FINDING_TERMS.get(finding, ())) or _names(known, (finding.lower(),))


def unseen_findings(text: str, model_findings: tuple[str, ...] | list[str]) -> list[str]:
    """The findings ``text`` names that none of ``model_findings`` (a model's training labels, e.g.
    ``pleural_effusion``, ``active_tb``) is; ``[]`` when the model's findings are not recorded."""
    if not model_findings:
        return []
    return [finding for finding in named_findings(text) if not covers(model_findings, finding)]
