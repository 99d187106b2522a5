"""The AFLoc web demo (Gradio). ``build_demo`` is imported lazily, so ``import demo.callbacks`` (pure logic,
used by tests) does not import gradio; nothing is loaded or launched on import."""

from __future__ import annotations

__all__ = ["build_demo"]


def __getattr__(name: str):
    if name == "build_demo":
        from .app import build_demo

        return build_demo
    raise AttributeError(f"module 'demo' has no attribute {name!r}")
