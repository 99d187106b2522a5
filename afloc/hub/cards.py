"""Model cards: the README.md written into every model directory."""

from __future__ import annotations

NOT_RECORDED = "_Not recorded._"

DISCLAIMER = (
    "**Research use only. This is not a medical device** and is not validated for diagnosis, triage or any "
    "clinical decision. Heatmaps show where the model's image features match the text, not proof of disease."
)


def render_model_card(
    name: str,
    *,
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
            "> **Trained on synthetic images only.** Heatmaps on real radiographs are not meaningful.",
            "",
        ]
    lines += [DISCLAIMER, ""]
    sections = [
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
