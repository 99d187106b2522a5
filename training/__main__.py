"""Entry point: ``python -m training COMMAND ...``.

Commands: ``fit``, ``validate``, ``test`` (LightningCLI, see ``--help``), ``prepare-mimic``, ``prepare-fundus``,
``prepare-cxr``, ``average``, ``export``, ``calibrate``, ``plot``, ``evaluate``, ``compare``, ``card``,
``channel-stats`` and ``lung-field`` (each with ``--help``).
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test")


TOOLS = {
    "prepare-mimic": "prepare_mimic",
    "prepare-fundus": "realdata.fundus",
    "prepare-cxr": "realdata.cxr",
    "average": "average",
    "export": "export",
    "plot": "plot",
    "evaluate": "evaluation.evaluate",
    "compare": "evaluation.compare",
    "card": "card",
    "calibrate": "calibrate",
    "channel-stats": "channel_stats",
    "lung-field": "lung_field",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tools = tuple(TOOLS)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nusage: python -m training {{{','.join(LIGHTNING_COMMANDS + tools)}}} ...")
        return 0 if argv else 2
    command = argv[0]
    if command in LIGHTNING_COMMANDS:
        from .cli import cli_main

        try:
            cli_main(argv)
        except ValueError as error:  # our validation: bad config values, missing data roots
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if command in tools:
        module = importlib.import_module(f"{__package__ or 'training'}.{TOOLS[command]}")
        return module.main(argv[1:])
    print(f"error: unknown command {command!r}; expected one of {LIGHTNING_COMMANDS + tools}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
