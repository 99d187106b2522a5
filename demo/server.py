"""The demo server's per-user bookkeeping: sessions by id, the memory budget over all of them, the folders their
files live in, and the sweeping of uploads that no event consumed (no gradio import).

One :class:`Sessions` per built demo. Handlers ask it for the request's session (:meth:`Sessions.get`); the page's
unload event closes one (:meth:`Sessions.close`); a daemon thread sweeps orphan uploads on a timer.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
import weakref
from pathlib import Path

from .session import (
    ORPHAN_UPLOAD_AGE_S,
    MemoryBudget,
    Session,
    release_freed_memory,
    sweep_empty_temp_files,
    sweep_orphan_uploads,
)

logger = logging.getLogger(__name__)


def session_id_of(request) -> str:
    """The request's session hash reduced to a safe folder name (letters and digits, at most 64)."""
    return "".join(c for c in str(getattr(request, "session_hash", "") or "") if c.isalnum())[:64]


def forget_gradio_session(blocks, session_hash: str | None) -> bool:
    """Drop Gradio's state of a closed session: its ``gr.State`` values and its copy of every component's config.

    Gradio keeps a closed session's ``SessionState`` (an hour for ``gr.State`` values, and the config copies until
    ``state_session_capacity`` newer sessions evict it), so memory grows with the number of sessions served.
    Returns whether anything was dropped; a Gradio without this holder is left alone.
    """
    holder = getattr(blocks, "state_holder", None)
    data, lock = getattr(holder, "session_data", None), getattr(holder, "lock", None)
    if not session_hash or data is None or lock is None:
        return False
    with lock:
        dropped = data.pop(session_hash, None) is not None
        getattr(holder, "time_last_used", {}).pop(session_hash, None)
    return dropped


IDLE_RELEASE_S = 15 * 60.0


def release_idle(sessions, idle_s: float) -> int:
    """Sessions unused for ``idle_s`` seconds give up their arrays (image, encoding, heatmaps; a busy one is
    skipped); their files and ground truth text stay. Returns how many were released."""
    now, released = time.monotonic(), 0
    for session in list(sessions):
        if not session.closed and now - session.last_used > idle_s and session.memory_bytes():
            released += bool(session.release())
    return released


class Sessions:
    """The live sessions of one demo, their folders under ``upload_root`` and the memory budget over them.

    Args:
        upload_root: Gradio's upload folder; each session's rendered images and exports go into
            ``upload_root/afloc-sessions/<server id>/<session id>/`` so that Gradio serves them in place.
        memory_budget_bytes: all sessions' arrays together (see :class:`demo.session.MemoryBudget`).
        sweep_interval_s: how often uploads that no event consumed are deleted (and idle sessions released).
        idle_release_s: a session unused this long gives up its arrays, so a client that never opens Gradio's
            heartbeat (and so never ends its session) holds memory for minutes, not for the state's 4-hour expiry.
    """

    def __init__(
        self,
        upload_root: Path,
        memory_budget_bytes: int,
        sweep_interval_s: float,
        idle_release_s: float = IDLE_RELEASE_S,
    ) -> None:
        self.upload_root = Path(upload_root)
        self.export_root = self.upload_root / "afloc-sessions" / uuid.uuid4().hex[:12]
        self.export_root.mkdir(parents=True, exist_ok=True)
        self.budget = MemoryBudget(memory_budget_bytes)
        self.live: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
        self.started = time.time()
        self.stop_sweeping = threading.Event()
        # the thread and the finalizers hold no reference to self: when the demo goes, so do its folder and sweeper
        sweeper = (self.upload_root, self.started, self.stop_sweeping, sweep_interval_s, self.live, idle_release_s)
        threading.Thread(target=_sweep_on_a_timer, args=sweeper, name="afloc-upload-sweep", daemon=True).start()
        weakref.finalize(self, shutil.rmtree, self.export_root, ignore_errors=True)
        weakref.finalize(self, self.stop_sweeping.set)

    def get(self, state: Session | None, request) -> Session:
        """The request's session (a new one when the state holds none or a closed one), marked as used.

        On every request, before the session's lock is taken, the least recently used sessions give up their
        arrays when all of them together are over the budget (a busy one is skipped, so no request ever waits
        for another session's lock).
        """
        if state is not None and not state.closed:
            session = state
        else:
            session_id = session_id_of(request) or uuid.uuid4().hex
            session = Session(export_dir=self.export_root / session_id)
            self.live[session_id] = session
        session.touch()
        self.budget.enforce(session, list(self.live.values()))
        return session

    def close(self, request) -> None:
        """The tab was closed (or the client left): free the session's memory and delete its files now."""
        session_id = session_id_of(request)
        session = self.live.pop(session_id, None) if session_id else None
        if session is not None:
            session.close()
        if session_id:
            shutil.rmtree(self.export_root / session_id, ignore_errors=True)
        self.sweep_uploads()
        release_freed_memory()
        # and once more later, for what the last uploads before the tab closed left (too young to judge now)
        later = threading.Timer(ORPHAN_UPLOAD_AGE_S + 5.0, self.sweep_uploads)
        later.daemon = True
        later.start()

    def sweep_uploads(self) -> None:
        """Delete Gradio's empty temporary files and the uploads no event consumed since the server started."""
        _sweep(self.upload_root, self.started)


def _sweep(upload_root: Path, since: float) -> None:
    sweep_empty_temp_files(upload_root)
    sweep_orphan_uploads(upload_root, since=since)


def _sweep_on_a_timer(
    upload_root: Path, since: float, stop: threading.Event, interval_s: float, live, idle_s: float
) -> None:
    while not stop.wait(interval_s):
        try:
            _sweep(upload_root, since)
            if release_idle(list(live.values()), idle_s):
                release_freed_memory()
        except Exception as error:  # never let the sweeper die: log the type only
            logger.warning("upload sweep failed (%s)", type(error).__name__)
