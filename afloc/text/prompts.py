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
