"""Hostile sessions (issue #14): bounded heatmap memory, files deleted, huge boxes, deep JSON, HTML in text."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import afloc
from demo import callbacks as cb
from demo.annotations import read_annotations
from demo.export import export
from demo.models import LoadedModel
from demo.session import KEEP_EXPORTS, KEEP_VIEWS, discard_upload, escape_markdown

HTML = '<img src=x onerror="alert(1)"> [click](http://evil.example) **bold**'

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


@pytest.fixture
def model(tiny_predictor):
    return LoadedModel("tiny", "tiny test model", tiny_predictor, "# tiny")


@pytest.fixture
def film(tmp_path) -> Path:
    path = tmp_path / "film.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1200, 1000), dtype=np.uint8)).save(path)
    return path


def test_session_memory_is_bounded_and_released(tmp_path, model, film, monkeypatch):
    bound = 20 * 64 * 64 * 4  # 20 model-space maps of the tiny model, so that the bound is reached here
    monkeypatch.setattr("demo.session.ENCODED_CACHE_BYTES", bound)
    session = cb.Session(export_dir=tmp_path / "s")
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        assert not cb.load_image(session, film, "film.png")[1].error
        image_bytes = session.image.nbytes
        sizes = []
        for round_ in range(12):  # 96 distinct prompts: the unbounded cache kept 96 full-size heatmaps
            prompts = ", ".join(f"finding {round_} number {k}" for k in range(cb.MAX_PROMPTS))
            assert not cb.localize(session, model, prompts).error
            cb.render(session, session.prompts[-1], 0.3, 0.5)
            sizes.append(session.memory_bytes())
        full_map = 1200 * 1000 * 4
        # image + one upsampled heatmap + the encoding's bounded cache + 8 model-space maps (64 px here)
        assert max(sizes) <= image_bytes + full_map + bound + 8 * 64 * 64 * 4
        assert sizes[-1] == sizes[-4]  # a plateau: no growth with the number of Localize calls
        assert session.encoded.cached_heatmap_bytes <= bound
        held = tracemalloc.get_traced_memory()[0] - baseline
        session.close()
        released = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert session.memory_bytes() == 0 and not (tmp_path / "s").exists()
    assert held > image_bytes and released < image_bytes / 4, (held, released)


def test_heatmap_cache_evicts_by_bytes_and_upsamples_on_demand(model, film):
    predictor = model.predictor
    encoded = predictor.encode_image(afloc.imaging.io.load_image(film))
    encoded.heatmap_cache_bytes = 5 * 64 * 64 * 4
    first = predictor.localize("left effusion", image=encoded)
    for k in range(10):
        predictor.localize(f"prompt {k}", image=encoded)
    assert len(encoded._heatmaps) == 5 and encoded.cached_heatmap_bytes == 5 * 64 * 64 * 4
    assert first.shape == (1200, 1000)
    np.testing.assert_array_equal(predictor.localize("left effusion", image=encoded), first)  # recomputed: same


def test_session_files_are_bounded_and_deleted(tmp_path, model, film):
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, film, "film.png")
    cb.localize(session, model, "edema")
    paths = [session.save_view("figure", cb.render(session, None, t, 0.5).figure) for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert [Path(p).exists() for p in paths] == [False] * (5 - KEEP_VIEWS) + [True] * KEEP_VIEWS
    exports = [export(session, None, 0.3, 0.5)[0] for _ in range(KEEP_EXPORTS + 2)]
    assert not any(f.exists() for f in exports[0] + exports[1]) and all(f.exists() for f in exports[-1])
    assert len(list((tmp_path / "s").iterdir())) == KEEP_VIEWS + 3 * KEEP_EXPORTS
    session.close()
    assert not (tmp_path / "s").exists() and session.save_view("figure", np.zeros((4, 4, 3), np.uint8)) is None


def test_uploads_are_deleted_only_inside_the_upload_folder(tmp_path):
    root = tmp_path / "uploads"
    (root / "abc").mkdir(parents=True)
    upload, outside = root / "abc" / "film.dcm", tmp_path / "keep.png"
    upload.write_bytes(b"x")
    outside.write_bytes(b"x")
    discard_upload(upload, root)
    discard_upload(outside, root)
    discard_upload(str(root / ".." / "keep.png"), root)
    assert not upload.exists() and not (root / "abc").exists() and outside.exists() and root.exists()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("-1e12, -1e12, 2e12, 2e12, huge", "at most 1e\\+07 pixels"),
        ("1" * 400 + ", 1, 10, 10", "at most 1e\\+07 pixels"),
        ("5000, 5000, 10, 10", "outside the 1000x1200 image"),
    ],
)
def test_huge_boxes_are_refused_and_the_session_keeps_working(tmp_path, model, film, text, pattern):
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, film, "film.png")
    cb.localize(session, model, "edema")
    status = cb.set_boxes_text(session, text)
    assert status.error and pattern.replace("\\", "") in status.message.replace("\\", ""), status.message
    assert cb.render(session, None, 0.3, 0.5).figure is not None  # still drawable


def test_boxes_partly_outside_are_clipped(tmp_path, model, film):
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, film, "film.png")
    cb.localize(session, model, "edema")
    status = cb.set_boxes_text(session, "-100, -50, 300, 250, edema\n900, 1100, 5000, 5000")
    assert not status.error and "2 box(es) clipped to the 1000x1200 image" in status.message
    assert [tuple(b[:4]) for b in session.boxes] == [(0, 0, 200, 200), (900, 1100, 100, 100)]
    view = cb.render(session, "edema", 0.3, 0.5)
    assert view.figure is not None and view.metrics is not None


def test_oversized_numbers_and_deep_json_get_readable_errors():
    coco = {"images": [{"id": 1, "file_name": "film.png"}], "annotations": [{"image_id": 1, "bbox": [1, 1, 5, 5]}]}
    big = json.dumps(coco).replace("[1, 1, 5, 5]", "[" + "9" * 400 + ", 1, 5, 5]").encode()
    with pytest.raises(ValueError, match="too large"):
        read_annotations(big, "film.png", (100, 100))
    huge = json.dumps(coco).replace("[1, 1, 5, 5]", "[" + "9" * 5000 + ", 1, 5, 5]").encode()
    with pytest.raises(ValueError, match="thousands of digits"):
        read_annotations(huge, "film.png", (100, 100))
    deep = b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        read_annotations(deep, "film.png", (100, 100))
    tricky = json.dumps({**coco, "note": "[" * 200}).encode()  # brackets inside strings do not count
    assert read_annotations(tricky, "film.png", (100, 100))[0][:4] == (1, 1, 5, 5)


def test_user_text_is_escaped_where_rendered(tmp_path, model, film):
    shown = escape_markdown(HTML)
    assert "<img" not in shown and "\\[click\\]" in shown and "[click](" not in shown and "\\*\\*bold" in shown
    assert (
        "://" not in shown and escape_markdown("multi-frame (NumberOfFrames=2).") == "multi-frame (NumberOfFrames=2)."
    )
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, film, "film.png")
    assert not cb.localize(session, model, HTML.replace(",", " ")).error
    cb.set_boxes_text(session, "10, 10, 100, 100, " + HTML.replace(",", " "))
    metrics = cb.render(session, None, 0.3, 0.5).metrics_text
    assert "<img" not in metrics and "[click](" not in metrics


def test_the_status_is_escaped_and_an_error_is_shown_once(monkeypatch):
    from demo import handlers

    toasts = []
    monkeypatch.setattr(handlers.gr, "Warning", lambda message: toasts.append(message))
    markdown = handlers.status_text(cb.Status(f"Could not read {HTML}.png", error=True))
    assert "<img" not in markdown and "&lt;img" in markdown and not toasts  # in the status only, no toast


def test_launcher_warns_without_a_login_and_reads_credentials_from_a_file_or_the_environment(tmp_path, monkeypatch):
    import app

    monkeypatch.delenv(app.AUTH_ENV, raising=False)
    args = app.parse_args(["--host", "0.0.0.0"])
    exposed = {"server_name": args.host, "share": False, "auth": args.auth}
    assert len(app.security_warnings(exposed)) == 1 and "0.0.0.0 without a login" in app.security_warnings(exposed)[0]
    assert app.security_warnings({"server_name": "127.0.0.1", "share": False, "auth": None}) == []
    secret = tmp_path / "auth.txt"
    secret.write_text("\nalice:s3cret:with:colons\n")
    args = app.parse_args(["--host", "0.0.0.0", "--auth-file", str(secret)])
    assert args.auth == ("alice", "s3cret:with:colons")
    assert app.security_warnings({"server_name": "0.0.0.0", "share": False, "auth": args.auth}) == []
    monkeypatch.setenv(app.AUTH_ENV, "bob:pw")
    assert app.parse_args([]).auth == ("bob", "pw")
    assert app.parse_args(["--auth", "carol:x"]).auth == ("carol", "x")  # the command line wins
    for bad in (["--auth-file", str(tmp_path / "missing")], ["--auth", "nopassword"]):
        with pytest.raises(SystemExit):
            app.parse_args(bad)


def test_empty_upload_leftovers_are_swept(tmp_path):
    import os

    from demo.session import sweep_empty_temp_files

    old_empty, new_empty, old_data = tmp_path / "tmpold", tmp_path / "tmpnew", tmp_path / "tmpdata"
    old_empty.write_bytes(b"")
    new_empty.write_bytes(b"")
    old_data.write_bytes(b"x")
    for path in (old_empty, old_data):
        os.utime(path, (0, 0))
    recent_data = tmp_path / "tmprecent"
    recent_data.write_bytes(b"x")  # an upload being written
    # empty after 10 s; with data only once untouched for a minute (its move failed or its client left)
    assert sweep_empty_temp_files(tmp_path) == 2
    assert not old_empty.exists() and not old_data.exists() and new_empty.exists() and recent_data.exists()


def test_uploads_no_event_consumed_are_swept_but_nothing_else(tmp_path):
    """An upload refused before the demo's code ran stays in ``<root>/<hash>/``: it goes once it is a minute old.
    Files cached before the server started, fresh uploads and the sessions' own folder stay."""
    import os
    import time

    from demo.session import sweep_orphan_uploads

    before = tmp_path / "cachedatstart" / "example.png"
    before.parent.mkdir()
    before.write_bytes(b"x")
    os.utime(before, (0, 0))  # (this sets its ctime to now, before the server's start below)
    since = time.time() + 0.01
    time.sleep(0.05)
    orphan, fresh = tmp_path / "abc" / "film.png", tmp_path / "def" / "film.png"
    session_file = tmp_path / "afloc-sessions" / "run" / "s1" / "figure.png"
    for path in (orphan, fresh, session_file):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"y")
    for path in (orphan, session_file):
        os.utime(path, (0, 0))  # untouched for a long time
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "to-orphan").symlink_to(orphan)
    waiting, old_empty = tmp_path / "ghi", tmp_path / "jkl"  # Gradio made it and is about to move a file in
    waiting.mkdir()
    old_empty.mkdir()
    os.utime(old_empty, (0, 0))
    assert sweep_orphan_uploads(tmp_path, since=since, min_age_s=60) == 1
    assert not orphan.exists() and orphan.parent.exists()  # its folder was just touched: it goes next time
    assert waiting.is_dir() and not old_empty.exists()  # fresh folders stay, old empty ones go
    assert before.exists() and fresh.exists() and session_file.exists()
    assert (tmp_path / "link" / "to-orphan").is_symlink()  # links are never followed nor removed
    os.utime(orphan.parent, (0, 0))
    assert sweep_orphan_uploads(tmp_path, since=since, min_age_s=60) == 0 and not orphan.parent.exists()


def test_max_sessions_bounds_gradio_state_and_is_checked():
    import app

    _, launch_kwargs, _, _ = app.create(["--max-sessions", "7"])
    assert launch_kwargs["state_session_capacity"] == 7
    with pytest.raises(SystemExit):
        app.parse_args(["--max-sessions", "0"])


def test_the_memory_budget_releases_the_least_recently_used_sessions_first(tmp_path):
    """Over the budget, idle sessions give up their arrays, oldest first; the current and busy ones never; the
    released user is told why and can load the image again (issue #33: 12 idle sessions pinned 8.6 GB)."""
    import time

    from demo.session import MemoryBudget, Session

    image = np.zeros((500, 500), np.float32)  # 1 MB
    sessions = [Session(export_dir=tmp_path / str(k)) for k in range(4)]
    for session in sessions:
        session.image = image.copy()
        session.touch()
        time.sleep(0.002)
    budget = MemoryBudget(int(2.5 * image.nbytes))
    import threading

    holding, done = threading.Event(), threading.Event()

    def hold_session_1():  # a request of session 1 running in another worker thread
        with sessions[1].lock:
            holding.set()
            done.wait(10)

    worker = threading.Thread(target=hold_session_1)
    worker.start()
    holding.wait(10)
    try:
        assert budget.enforce(sessions[3], sessions) == 2  # sessions 0 and 2: 1 is busy, 3 is the current one
    finally:
        done.set()
        worker.join()
    assert [s.image is None for s in sessions] == [True, False, True, False]
    assert sessions[0].released and not sessions[3].released
    status = cb.localize(sessions[0], None, "mass")
    assert status.error and "released to keep the server's memory" in status.message
    cb.load_image(sessions[0], _png(tmp_path))
    assert not sessions[0].released and sessions[0].image is not None
    with pytest.raises(ValueError, match="budget"):
        MemoryBudget(0)


def test_idle_sessions_give_up_their_arrays_on_the_sweeper_timer(tmp_path):
    """A client that never opens Gradio's heartbeat never ends its session; its image and heatmaps go after
    ``idle_release_s`` anyway (issue #33: a 48 KB upload pinned 570 MB for 4 hours), while a session in use keeps
    them."""
    import time

    from demo.server import Sessions

    sessions = Sessions(tmp_path / "uploads", 1 << 30, sweep_interval_s=0.05, idle_release_s=0.3)
    try:
        idle, busy = sessions.get(None, None), sessions.get(None, None)
        for session in (idle, busy):
            cb.load_image(session, _png(tmp_path))
        deadline = time.monotonic() + 3.0
        while idle.image is not None and time.monotonic() < deadline:
            busy.touch()  # in use: every request marks it
            time.sleep(0.05)
        assert idle.image is None and idle.released and idle.memory_bytes() == 0
        assert busy.image is not None and not busy.released
        assert "released to keep the server's memory" in cb.localize(idle, None, "mass").message
    finally:
        sessions.stop_sweeping.set()


def _png(tmp_path):
    path = tmp_path / "film.png"
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(path)
    return str(path)


def test_unconsumed_uploads_are_swept_on_a_timer(tmp_path, monkeypatch):
    """A file posted to Gradio's upload route without an event is deleted by the timer, not only by the next
    upload (issue #33: 935 MiB went in within 6 s and stayed)."""
    import os
    import time

    import demo.app as demo_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    blocks = demo_app.build_demo(sweep_interval_s=0.1)
    try:
        root = Path(demo_app.get_upload_folder())
        orphan = root / "abc123" / "upload.png"
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"x" * 1000)
        old = time.time() - 3600
        os.utime(orphan, (old, old))  # created after the start (ctime), written long ago (mtime)
        deadline = time.time() + 5
        while orphan.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert not orphan.exists()
    finally:
        blocks.afloc_stop_sweeping.set()
