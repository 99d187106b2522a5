"""MIMIC-CXR report text: the FINDINGS and IMPRESSION sections of a free-text report, as the reference keeps them
(used by :mod:`training.prepare_mimic`).
"""

from __future__ import annotations

import re

from afloc.text.tokenizer import split_sentences

SECTIONS = ("FINDINGS", "IMPRESSION")

# A section header starts a line: "FINDINGS:", " IMPRESSION:  text". Any ALL-CAPS name ends the previous
# section; findings/impression are also recognised in mixed case ("Impression:").
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&(),-]*?)[ \t]*:", re.MULTILINE)

_SECTION_NAMES = {
    "findings": "FINDINGS",
    "finding": "FINDINGS",
    "impression": "IMPRESSION",
    "impressions": "IMPRESSION",
}


def extract_sections(report: str) -> dict[str, str]:
    """The FINDINGS and IMPRESSION sections of a free-text report, whitespace collapsed to single spaces.

    A section runs from its header to the next header (an ALL-CAPS ``NAME:`` at the start of a line, or a
    findings/impression header in any case) or the end of the text; repeated sections are concatenated.

    Returns:
        ``{"FINDINGS": ..., "IMPRESSION": ...}`` with only the sections that have a header (bodies may be "").
    """
    headers = []
    for match in _HEADER.finditer(report):
        name = match.group(1).strip()
        letters = name.replace(" ", "")
        if name.lower() in _SECTION_NAMES or (len(letters) >= 2 and name == name.upper()):
            headers.append(match)
    sections: dict[str, str] = {}
    for index, match in enumerate(headers):
        section = _SECTION_NAMES.get(match.group(1).strip().lower())
        if section is None:
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(report)
        body = " ".join(report[match.end() : end].split())
        sections[section] = f"{sections[section]} {body}".strip() if section in sections else body
    return sections


def build_report(report: str) -> tuple[str, str | None]:
    """The manifest text ``"FINDINGS: ... IMPRESSION: ..."`` of a raw report, or why it is skipped.

    A section whose body has no sentence left after :func:`~afloc.text.tokenizer.split_sentences` (e.g. only "___.") is
    left out, so that its header word does not become a sentence of its own downstream.

    Returns:
        ``(text, None)``, or ``("", "no_findings_impression")`` / ``("", "empty_report")``.
    """
    sections = extract_sections(report)
    if not sections:
        return "", "no_findings_impression"
    parts = [f"{name}: {sections[name]}" for name in SECTIONS if split_sentences(sections.get(name, ""))]
    if not parts:
        return "", "empty_report"
    return " ".join(parts), None
