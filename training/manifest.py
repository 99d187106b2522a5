"""Image-report manifests: the one corpus format every data source is turned into.

A manifest is a CSV (header row) or JSONL file with at least the columns ``image`` (path, relative to the
manifest's folder or absolute), ``report`` (free text) and ``split`` (``train`` / ``val`` / ``test``; MIMIC's
``validate`` is read as ``val``). Other columns (``labels``, ``view``, ...) are kept in ``extra``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("image", "report", "split")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class ManifestRecord:
    """One image-report pair."""

    image: Path
    report: str
    split: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """The ``labels`` column as a tuple (``;``-separated, the corpora's convention); ``()`` when absent."""
        return tuple(part.strip() for part in self.extra.get("labels", "").split(";") if part.strip())


def _normalise_split(value: str, where: str) -> str:
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise ValueError(f"{where}: unknown split {value!r}; expected one of {sorted(set(SPLIT_ALIASES))}")
    return split


def _rows(path: Path):
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}, line {number}: invalid JSON ({error})") from error
        return
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; a manifest needs {list(REQUIRED_COLUMNS)}")
        for number, row in enumerate(reader, start=2):
            yield number, row


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRecord]:
    """Read a CSV or JSONL manifest, optionally keeping one split.

    Raises:
        ValueError: the file is missing, a required column is absent, or a split value is unknown (the line
            number is named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"manifest {str(path)!r} does not exist")
    wanted = _normalise_split(split, "split argument") if split is not None else None
    records = []
    for number, row in _rows(path):
        where = f"{path}, line {number}"
        missing = [c for c in REQUIRED_COLUMNS if row.get(c) in (None, "")]
        if "report" in missing:
            missing.remove("report")  # an empty report is kept here; the data module counts and skips it
        if missing:
            raise ValueError(f"{where}: empty or missing {missing}")
        record_split = _normalise_split(row["split"], where)
        if wanted is not None and record_split != wanted:
            continue
        image = Path(str(row["image"]))
        if not image.is_absolute():
            image = path.parent / image
        extra = {k: str(v) for k, v in row.items() if k not in REQUIRED_COLUMNS and v is not None}
        records.append(ManifestRecord(image, str(row.get("report") or ""), record_split, extra))
    return records
