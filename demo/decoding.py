"""Decoding untrusted uploads in a child process with CPU-time, memory and wall-clock limits (no gradio import).

The library's reader (:func:`afloc.imaging.io.load_image_with_info`) refuses files whose declared or real codestream
size is over the pixel limit and formats that decode slowly, before decoding. What is left is a decoder that is
slow or greedy on a file the checks accept, and decoders that hold the GIL: in the server's own process either
would stop every other user. :class:`DecodeWorker` runs each decode in a fresh child forked from a forkserver that
has the reader imported, started ahead of the upload (a spare waits for the next one, so an upload pays only the
transfer of its bytes and of the decoded array), with

* ``RLIMIT_CPU`` (the kernel stops a child that computes too long),
* ``RLIMIT_AS`` = the child's address space at start + ``memory_bytes`` (an allocation beyond it fails),
* a wall-clock timeout after which the child is killed.

The child gets the file's bytes and sends back the decoded array, or the reader's ``ValueError`` message; a child
that dies or runs out of time or memory becomes a ``ValueError`` that says which limit was hit. Where the platform
has no forkserver (Windows) or no ``resource`` module, decoding falls back to the calling thread (the reader's
own checks still apply) and :attr:`DecodeWorker.isolated` is False.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from afloc.imaging.io import ImageInfo, load_image_with_info

logger = logging.getLogger(__name__)

DECODE_TIMEOUT_S = 10.0
DECODE_CPU_S = 10
DECODE_MEMORY_BYTES = 3 << 30  # above the address space the child starts with: a 50 MP film needs about 1 GB

Decoder = Callable[..., tuple[np.ndarray, ImageInfo]]


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            import os

            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_WARM_UP_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020800000000"
    "57dd52f80000000e49444154789c6360606060600000000600017282"
    "99ea0000000049454e44ae426082"
)  # a 2 x 2 grey PNG


def _child(requests, connection, decode: Decoder, cpu_s: int, memory_bytes: int) -> None:
    """In the child: set the limits, wait for one ``(data, max_pixels)`` request, decode it, send
    ``("ok", image, info)`` or ``("error", message)``. The child is started before its upload arrives (a spare), so
    an upload does not wait for a process to start."""
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    start = _address_space_bytes()
    if start:
        limit = start + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if decode is load_image_with_info:  # the reader's lazy set-up (Pillow's plugins) now, not in an upload
            try:
                decode(_WARM_UP_PNG, max_pixels=4)
            except ValueError:  # a warm-up only; the real decode reports its own errors
                pass
        try:
            data, max_pixels = requests.recv()
        except (EOFError, OSError):
            return  # the spare was not needed (the server stopped)
        image, info = decode(data, max_pixels=max_pixels)
        connection.send(("ok", image, info))
    except ValueError as error:
        connection.send(("error", str(error)))
    except MemoryError:
        connection.send(("memory", ""))
    except Exception as error:  # the type only: a message could quote header values
        connection.send(("error", f"the file could not be decoded ({type(error).__name__})"))
    finally:
        connection.close()


class _Child:
    """A started child waiting for its upload: its process, the end that sends it the upload, the end that receives
    its answer."""

    def __init__(self, context, decode: Decoder, cpu_s: int, memory_bytes: int) -> None:
        child_requests, self.requests = context.Pipe(duplex=False)  # (receiving end, sending end)
        self.results, child_results = context.Pipe(duplex=False)
        args = (child_requests, child_results, decode, cpu_s, memory_bytes)
        self.process = context.Process(target=_child, args=args, name="afloc-decode", daemon=True)
        self.process.start()
        child_requests.close()
        child_results.close()

    def close(self) -> None:
        """End the child and reap it in the background (an upload does not wait for it)."""
        import threading

        threading.Thread(target=self._reap, name="afloc-decode-reaper", daemon=True).start()

    def _reap(self) -> None:
        for end in (self.requests, self.results):
            end.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)


class DecodeWorker:
    """Decode image files in a limited child process; thread-safe (each call has its own child).

    Args:
        decode: the reader, called as ``decode(data: bytes, max_pixels=...)`` in the child; a module-level
            function (it is pickled by name).
        timeout_s: wall-clock limit per decode, after which the child is killed.
        cpu_s: CPU-time limit of the child (``RLIMIT_CPU``).
        memory_bytes: memory the child may add to what it starts with (``RLIMIT_AS``).
    """

    def __init__(
        self,
        decode: Decoder = load_image_with_info,
        *,
        timeout_s: float = DECODE_TIMEOUT_S,
        cpu_s: int = DECODE_CPU_S,
        memory_bytes: int = DECODE_MEMORY_BYTES,
    ) -> None:
        if timeout_s <= 0 or cpu_s <= 0 or memory_bytes <= 0:
            raise ValueError("the decode limits (timeout_s, cpu_s, memory_bytes) must be > 0")
        self.decode, self.timeout_s, self.cpu_s, self.memory_bytes = decode, timeout_s, cpu_s, memory_bytes
        self._context = None
        try:
            import resource  # noqa: F401

            if "forkserver" in multiprocessing.get_all_start_methods():
                self._context = multiprocessing.get_context("forkserver")
                self._context.set_forkserver_preload(["__main__", "afloc.imaging.io"])
        except ImportError:
            pass
        self.isolated = self._context is not None
        import threading

        self._lock = threading.Lock()
        self._spare: _Child | None = None  # a child started ahead of the next upload
        self._closed = False

    def start(self) -> None:
        """Start the forkserver now (it imports the reader once, a few seconds) and a first spare child, in a
        background thread, so that the first upload waits for neither."""
        if self.isolated:
            import threading

            threading.Thread(target=self._prepare_spare, name="afloc-forkserver", daemon=True).start()

    def _prepare_spare(self) -> None:
        """Start a child for the next upload, unless one is waiting already."""
        try:
            child = _Child(self._context, self.decode, self.cpu_s, self.memory_bytes)
        except OSError as error:  # e.g. out of processes: the next upload starts its own child
            logger.warning("could not start a spare decode child (%s)", type(error).__name__)
            return
        with self._lock:
            keep = self._spare is None and not self._closed
            if keep:
                self._spare = child
        if not keep:
            child.close()

    def _take_child(self) -> _Child:
        """The waiting spare (a new one is started in the background), else a child started now."""
        import threading

        with self._lock:
            child, self._spare, closed = self._spare, None, self._closed
        if not closed:
            threading.Thread(target=self._prepare_spare, name="afloc-decode-spare", daemon=True).start()
        if child is not None and child.process.is_alive():
            return child
        if child is not None:
            child.close()
        return _Child(self._context, self.decode, self.cpu_s, self.memory_bytes)

    def close(self) -> None:
        """Stop the waiting spare child and start no other (the server is stopping); a later decode starts its own
        child."""
        with self._lock:
            child, self._spare, self._closed = self._spare, None, True
        if child is not None:
            child.close()

    def __call__(self, source: str | Path | bytes, *, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
        """Decode ``source`` (a path or bytes) like :func:`afloc.imaging.io.load_image_with_info`.

        Raises:
            ValueError: what the reader raises, or which limit the child hit.
        """
        data = source if isinstance(source, bytes) else _read(source)
        if not self.isolated:
            return self.decode(data, max_pixels=max_pixels)
        child = self._take_child()
        start = time.monotonic()
        try:
            try:
                child.requests.send((data, max_pixels))
            except (BrokenPipeError, OSError):
                child.process.join(1.0)
                raise ValueError(self._death(child.process.exitcode, 0.0)) from None
            if not child.results.poll(self.timeout_s):
                raise ValueError(f"decoding took longer than {self.timeout_s:g} s: refused")
            try:
                message = child.results.recv()
            except (EOFError, OSError):
                child.process.join(1.0)
                raise ValueError(self._death(child.process.exitcode, time.monotonic() - start)) from None
        finally:
            child.close()
        if message[0] == "ok":
            return message[1], message[2]
        if message[0] == "memory":
            raise ValueError(f"decoding needs more than {self.memory_bytes >> 20} MiB: refused")
        raise ValueError(message[1])

    def _death(self, exitcode: int | None, seconds: float) -> str:
        import signal

        if exitcode in (-signal.SIGXCPU, -signal.SIGKILL) and seconds >= self.cpu_s * 0.5:
            return f"decoding used more than {self.cpu_s} s of CPU time: refused"
        return f"the decoder stopped unexpectedly (exit code {exitcode}): the file was refused"


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"could not read the upload ({type(error).__name__})") from None
