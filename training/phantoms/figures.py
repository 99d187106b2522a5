"""Contact sheet: a grid of PhantomCXR films (or PhantomFundus photographs) with boxes, phrases and report excerpts."""

from __future__ import annotations

import textwrap

import cv2
import numpy as np

from .generate import CorpusSpec, generate_case

COLORS = [(255, 80, 80), (80, 220, 80), (80, 160, 255), (255, 200, 0), (220, 80, 255), (0, 220, 220)]


def _text_block(lines: list[tuple[str, tuple[int, int, int]]], width: int, line_height: int) -> np.ndarray:
    block = np.full((line_height * len(lines) + 6, width, 3), 24, np.uint8)
    for k, (text, color) in enumerate(lines):
        cv2.putText(
            block, text, (4, line_height * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, line_height / 30.0, color, 1, cv2.LINE_AA
        )
    return block


def contact_sheet(
    spec: CorpusSpec, count: int = 16, columns: int = 4, start: int = 0, tile: int = 256, case_fn=generate_case
) -> np.ndarray:
    """RGB uint8 grid of ``count`` cases starting at index ``start``, each with boxes, phrases and a report excerpt.

    The report excerpt is the start of the FINDINGS section, wrapped. ``case_fn(index, spec)`` returns
    ``(case, image, report)``: :func:`~training.phantoms.generate.generate_case` (greyscale films, default) or
    :func:`~training.phantoms.fundus.generate.generate_fundus_case` (RGB photographs).
    """
    tiles = []
    for index in range(start, start + count):
        case, image, report = case_fn(index, spec)
        scale = tile / image.shape[0]
        rgb = cv2.resize(np.clip(image * 255, 0, 255).astype(np.uint8), (tile, tile))
        if rgb.ndim == 2:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
        lines = [
            (
                f"{case.case_id[-6:]}  {case.split}  {case.view}" + ("  normal" if not case.findings else ""),
                (230, 230, 230),
            )
        ]
        for k, finding in enumerate(case.findings):
            color = COLORS[k % len(COLORS)]
            for x, y, w, h in finding.boxes:
                p0 = (int(round(x * scale)), int(round(y * scale)))
                p1 = (int(round((x + w) * scale)) - 1, int(round((y + h) * scale)) - 1)
                cv2.rectangle(rgb, p0, p1, color, 2)
            lines.append((str(finding.phrase)[:44], color))
        findings_text = report.split("IMPRESSION:")[0].split("FINDINGS:")[-1].strip()
        for wrapped in textwrap.wrap(findings_text, 46)[:3]:
            lines.append((wrapped, (170, 170, 170)))
        while len(lines) < 7:
            lines.append(("", (0, 0, 0)))
        tiles.append(np.vstack([rgb, _text_block(lines[:7], tile, 15)]))
    rows = []
    for r in range(0, len(tiles), columns):
        row = tiles[r : r + columns]
        row += [np.zeros_like(tiles[0])] * (columns - len(row))
        rows.append(np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row]))
    return np.vstack(rows)
