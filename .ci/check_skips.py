"""Fail CI on any skipped test that is not expected to skip here (read from pytest's ``--junitxml`` report).

    python .ci/check_skips.py pytest.xml

Every skip is listed; those whose message matches :data:`ALLOWED` pass, with the reason they may skip. Anything
else (a missing ``../shared/data``, a browser not found, a decoder switch) fails the run: a skip hides a test.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

# (pattern on the skip message, why this skip is expected on a CPU CI machine). Keep this list short.
ALLOWED: list[tuple[str, str]] = [
    (r"CUDA", "gpu-marked tests need a CUDA device; CI machines have none"),
    (
        r"every candidate compressed transfer syntax has a decoder installed",
        "the 'no decoder is installed' message cannot occur when every decoder is installed (CI installs none)",
    ),
]


def skipped_tests(path: str) -> list[tuple[str, str]]:
    """``(test id, skip message)`` of every skipped test case in a JUnit XML report."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for skipped in case.findall("skipped"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            out.append((name, skipped.get("message") or skipped.text or ""))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    unexpected = 0
    for name, message in skipped_tests(args[0]):
        reason = next((why for pattern, why in ALLOWED if re.search(pattern, message)), None)
        if reason is None:
            unexpected += 1
            print(f"UNEXPECTED SKIP {name}: {message}")
        else:
            print(f"expected skip {name}: {message} ({reason})")
    if unexpected:
        print(f"{unexpected} unexpected skip(s): make them run, or add a reasoned entry to .ci/check_skips.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
