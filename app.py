"""Launcher for the AFLoc demo.

``python app.py`` starts the web demo on http://127.0.0.1:7860. Importing this module starts nothing.
"""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="AFLoc demo (research software, not a medical device)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def build_placeholder():
    """Until the clinician-facing demo lands, a page that says so (no model is run)."""
    import gradio as gr

    with gr.Blocks(title="AFLoc demo (placeholder)") as blocks:
        gr.Markdown(
            "# AFLoc: annotation-free pathology localization\n"
            "**Placeholder.** The interactive demo (upload, prompt, heatmap, threshold) is not built yet. "
            "The core library `afloc` is available: see the README.\n\n"
            "_Research software, not a medical device._"
        )
    return blocks


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    build_placeholder().launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
