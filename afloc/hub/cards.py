"""Model cards: the README.md written into every model directory."""

from __future__ import annotations

NOT_RECORDED = "_Not recorded._"
CLINICIAN_SECTION = "For clinicians"
"""The card's first section: five lines a clinician reads before trying the model (the demo shows it above the
rest of the card, which sits behind "details")."""

DISCLAIMER = (
    "**Research use only. This is not a medical device** and is not validated for diagnosis, triage or any "
    "clinical decision. Heatmaps show where the model's image features match the text, not proof of disease."
)


def clinician_summary(synthetic_data: bool | None) -> str:
    """The five lines of a card that has no hand-written "For clinicians" section: what the model does, its
    training data as recorded, what is unknown about it, and that it is research software."""
    data = {
        True: "- **Trained on synthetic images only:** its heatmaps on real images are not meaningful.",
        False: "- **Trained on real images** (see Training data below for which).",
    }.get(synthetic_data, "- **Training data not recorded:** treat its heatmaps as untested.")
    return "\n".join([
        "- **What it does:** marks where an image's features match a finding you type, learned from images and "
        "their reports without drawn boxes.",
        data,
        "- **How well it localizes** is in Evaluation below, if it was measured; a map that does not beat the "
        "centre prior has not found the finding.",
        "- A map for a finding its training reports never named, or for a negated finding, means nothing.",
        "- **Research use only.** Not a medical device; never use it for diagnosis, triage or any clinical decision.",
    ])  # fmt: skip


def card_section(card: str, title: str) -> str:
    """The body of the card's ``## title`` section (``""`` when it has none)."""
    lines, inside = [], False
    for line in card.splitlines():
        if line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == title
        elif inside:
            lines.append(line)
    return "\n".join(lines).strip()


def render_model_card(
    name: str,
    *,
    for_clinicians: str | None = None,
    summary: str | None = None,
    training_data: str | None = None,
    recipe: str | None = None,
    metrics: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    provenance: str | None = None,
    synthetic_data: bool = False,
    reproduce: str | None = None,
) -> str:
    """Markdown model card with fixed sections; missing information is stated as not recorded.

    Args:
        name: model name (title).
        for_clinicians: five lines for a clinician, first (default: :func:`clinician_summary`).
        summary: one paragraph on what the model is.
        training_data: what it was trained on.
        recipe: architecture and training settings.
        metrics: a Markdown table or paragraph of evaluation results.
        intended_use: who should use it for what.
        limitations: known weaknesses.
        provenance: where the weights come from, licence.
        synthetic_data: adds a prominent warning that the model saw synthetic images only.
        reproduce: commands that reproduce the checkpoint.
    """
    lines = [f"# {name}", ""]
    if synthetic_data:
        lines += [
            "> **Trained on synthetic images only.** Heatmaps on real images are not meaningful.",
            "",
        ]
    lines += [DISCLAIMER, ""]
    sections = [
        (CLINICIAN_SECTION, for_clinicians or clinician_summary(synthetic_data)),
        ("Summary", summary),
        ("Training data", training_data),
        ("Recipe", recipe),
        ("Evaluation", metrics),
        ("Intended use", intended_use or "Research and teaching on annotation-free localization methods."),
        ("Limitations", limitations),
        ("Provenance and licence", provenance),
        ("Reproduce", reproduce),
    ]
    for title, body in sections:
        lines += [f"## {title}", "", (body or NOT_RECORDED).strip(), ""]
    return "\n".join(lines)
