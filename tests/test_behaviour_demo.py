"""The running demo never runs the model for a slider or "Show prompt" event.

Counted at the model (a forward pre-hook on every module), with events fired the way the web page fires them:
its HTTP protocol (``/gradio_api/queue/join`` with the event's ``fn_index``) on an app served on 127.0.0.1, for
every event the app binds to a slider or to the "Show prompt" choice, as read from the app's own ``/config``. A
new slider event wired to a callback that re-encodes the image or the prompts fails here, whatever its name.
"""

from __future__ import annotations

import pytest
import torch
from helpers import free_port

import afloc
from benchmarks.demo_latency import EXAMPLE, BrowserProtocol

pytest.importorskip("gradio")

SHOWN = "Show prompt"


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_config, tiny_tokenizer):
    """The demo with a tiny model whose every module and predictor call is counted, served on a free localhost port."""
    from demo.app import build_demo
    from demo.models import ModelStore

    torch.manual_seed(0)
    model = afloc.AFLoc(tiny_config).eval()
    calls = {"forward": 0}

    def count(module, inputs):
        calls["forward"] += 1

    for module in model.modules():
        module.register_forward_pre_hook(count)
    predictor = afloc.AFLocPredictor(model, tiny_tokenizer, afloc.Preprocessing(64), device="cpu")
    # also calls served from the predictor's caches; not ``localize``: a redraw reads the shown prompt's heatmap
    # from the encoding's cache through it (the module hooks above see any run of the network)
    for name in ("encode_image", "embed_prompts", "classify"):
        setattr(predictor, name, counted(getattr(predictor, name), calls))
    blocks = build_demo(predictor, store=ModelStore([tmp_path_factory.mktemp("no_models")]))
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    client = BrowserProtocol(f"http://127.0.0.1:{port}")
    try:
        yield client, calls
    finally:
        client.close()
        blocks.close()


def counted(method, calls: dict):
    def wrapper(*args, **kwargs):
        calls["forward"] += 1
        return method(*args, **kwargs)

    return wrapper


def fire(client: BrowserProtocol, dependency: dict, labels: dict, values: dict) -> list:
    """Fire ``dependency`` with each non-state input filled from ``values`` by the start of its label."""
    is_state = [labels[i] is None for i in dependency["inputs"]]
    data = [next(v for k, v in values.items() if labels[i].startswith(k)) for i in dependency["inputs"] if labels[i]]
    client.endpoints["_fired"] = (dependency["id"], is_state)
    return client.predict("_fired", *data)


def test_slider_and_prompt_choice_events_never_run_the_model(app):
    """Bug class: the demo re-running the model (image or text encoder) on a slider or threshold move."""
    client, calls = app
    config = client.http.get(f"{client.url}/config").raise_for_status().json()
    labels = {c["id"]: None if c["type"] == "state" else str(c["props"].get("label")) for c in config["components"]}
    by_api = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}
    values = {"Image:": client.upload(EXAMPLE), "Model": "custom", "Findings to": "mass, small right pleural effusion"}
    values |= {"Finding presets": [], SHOWN: None, "Threshold": 0.2, "Heatmap opacity": 0.5, "Display window": "file"}

    assert "Loaded" in str(fire(client, by_api["load_image"], labels, values)[-1])
    before = calls["forward"]
    assert "Localized" in str(fire(client, by_api["localize"], labels, values)[-1])
    assert calls["forward"] > before, "the counter does not see the model run"

    slider_ids = {c["id"] for c in config["components"] if c["type"] == "slider"}
    window = {i for i, label in labels.items() if (label or "").startswith("Display window")}
    watched = slider_ids | window | {i for i, label in labels.items() if label == SHOWN}
    events = [d for d in config["dependencies"] if any(t[0] in watched for t in d.get("targets", []))]
    # the "Show prompt" choice, both sliders and the display window, each event reading both sliders
    assert len(window) == 1 and len(events) >= 4 and all(slider_ids <= set(d["inputs"]) for d in events), events
    encoded = calls["forward"]
    for dependency in events:
        for prompt, threshold, opacity in (("mass", 0.05, 0.1), ("small right pleural effusion", 0.6, 0.9)):
            values |= {SHOWN: prompt, "Threshold": threshold, "Heatmap opacity": opacity}
            outputs = fire(client, dependency, labels, values)
            assert "error" not in str(outputs[-1]).lower(), outputs[-1]
            assert any(isinstance(o, dict) and o.get("url") for o in outputs), "no figure redrawn"
    assert calls["forward"] == encoded, "a slider or prompt-choice event ran the model"
