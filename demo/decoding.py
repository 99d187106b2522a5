"""Decoding untrusted uploads in a child process with CPU-time, memory and wall-clock limits (no gradio import).

The library's reader (:func:`afloc.imaging.io.load_image_with_info`) refuses files whose declared or real codestream
size is over the pixel limit and formats that decode slowly, before decoding. What is left is a decoder that is
slow or greedy on a file the checks accept, and decoders that hold the GIL: in the server's own process either
would stop every other user. :class:`DecodeWorker` runs each decode in a fresh child forked from a forkserver that
has the reader imported (about 20 ms per decode here), with

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


def _child(connection, decode: Decoder, data: bytes, max_pixels: int, cpu_s: int, memory_bytes: int) -> None:
    """In the child: set the limits, decode, send ``("ok", image, info)`` or ``("error", message)``."""
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    start = _address_space_bytes()
    if start:
        limit = start + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
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

    def start(self) -> None:
        """Start the forkserver now (it imports the reader once, a few seconds), in a background thread, so that
        the first upload does not wait for it."""
        if self.isolated:
            import threading
            from multiprocessing import forkserver

            threading.Thread(target=forkserver.ensure_running, name="afloc-forkserver", daemon=True).start()

    def __call__(self, source: str | Path | bytes, *, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
        """Decode ``source`` (a path or bytes) like :func:`afloc.imaging.io.load_image_with_info`.

        Raises:
            ValueError: what the reader raises, or which limit the child hit.
        """
        data = source if isinstance(source, bytes) else _read(source)
        if not self.isolated:
            return self.decode(data, max_pixels=max_pixels)
        receiver, sender = self._context.Pipe(duplex=False)
        args = (sender, self.decode, data, max_pixels, self.cpu_s, self.memory_bytes)
        process = self._context.Process(target=_child, args=args, name="afloc-decode", daemon=True)
        start = time.monotonic()
        process.start()
        sender.close()
        try:
            if not receiver.poll(self.timeout_s):
                raise ValueError(f"decoding took longer than {self.timeout_s:g} s: refused")
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                process.join(1.0)
                raise ValueError(self._death(process.exitcode, time.monotonic() - start)) from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(1.0)
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
