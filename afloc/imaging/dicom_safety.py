"""Guards around pydicom for untrusted DICOM files (used by :mod:`afloc.imaging.io`; issue #14).

- :func:`inflate_deflated` inflates a Deflated Explicit VR Little Endian file ourselves, never beyond what its
  header declares (pydicom would inflate the whole stream before any size is known: a 1 MB file can hold GBs).
- :func:`silenced_read` keeps log records and warnings raised while a file is read in this thread (pydicom's
  quote invalid header values such as a patient name) from reaching any handler or stream; other threads are not
  affected, and no process-wide warnings state is changed (two readers in two threads cannot undo each other).
- :func:`check_lut` checks a LUT's descriptor against its data before pydicom unpacks it (a short Modality LUT
  makes pydicom raise ``struct.error``).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import pydicom
from pydicom import uid
from pydicom.filewriter import write_file_meta_info

HEADER_LIMIT = 4 << 20
"""Most bytes of a deflated dataset inflated before its image attributes are known."""
TRAILER_SLACK = 64 << 10
"""Bytes a deflated dataset may hold beyond its header and declared pixel data (padding, trailing elements)."""

_PIXEL_DATA = pydicom.tag.Tag(0x7FE0, 0x0010)
_pydicom_logger = logging.getLogger("pydicom")
_reading = threading.local()  # .depth > 0 while this thread reads an untrusted file


class DicomAttributeError(ValueError):
    """A malformed pixel-module or LUT attribute; the message names attributes, never their values."""


def _in_read() -> bool:
    return getattr(_reading, "depth", 0) > 0


class _DropWhileReading(logging.Filter):
    """Drops pydicom's records emitted by a thread that is inside :func:`silenced_read`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _in_read()


_DROP_WHILE_READING = _DropWhileReading()


def _quiet_showwarning(message, category, filename, lineno, file=None, line=None):
    if _in_read():
        return
    _quiet_showwarning.shown(message, category, filename, lineno, file, line)


def _install_warning_gate() -> None:
    """Put :func:`_quiet_showwarning` in front of whatever ``warnings.showwarning`` is now (idempotent; a
    ``catch_warnings`` block that replaced it, e.g. a test's recorder, gets the gate on top of its own)."""
    if warnings.showwarning is not _quiet_showwarning:
        _quiet_showwarning.shown = warnings.showwarning
        warnings.showwarning = _quiet_showwarning


@contextmanager
def silenced_read() -> Iterator[None]:
    """While this thread is inside (reading an untrusted DICOM or image), pydicom's log records and any warning
    raised are dropped.

    Thread-local: a read in one thread never changes what another thread logs or shows, and nothing is left
    changed when it ends (the logging filter and the warning gate only act for threads inside a read).
    """
    if _DROP_WHILE_READING not in _pydicom_logger.filters:
        _pydicom_logger.addFilter(_DROP_WHILE_READING)
    _install_warning_gate()
    _reading.depth = getattr(_reading, "depth", 0) + 1
    try:
        yield
    finally:
        _reading.depth -= 1


def _pixel_bytes(ds: pydicom.Dataset, max_pixels: int) -> int:
    """Bytes of pixel data the header declares, refusing sizes over ``max_pixels`` before anything is inflated."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 16)
    except (TypeError, ValueError):
        raise ValueError("DICOM image attributes (Rows, Columns, BitsAllocated, ...) are not integers") from None
    if min(rows, columns, frames, samples, bits) < 1 or rows * columns > max_pixels or frames * samples > 64:
        raise ValueError(
            f"deflated DICOM declares {columns}x{rows} pixels, {frames} frame(s) of {samples} sample(s): refused "
            f"before inflating (max_pixels={max_pixels})"
        )
    return rows * columns * frames * samples * ((bits + 7) // 8)


def inflate_deflated(data: bytes, max_pixels: int) -> bytes:
    """``data`` unchanged, or a deflated DICOM rewritten as Explicit VR Little Endian, inflated with a cap.

    The header is inflated first (at most :data:`HEADER_LIMIT` bytes), then the pixel data only up to the size
    the header declares (plus :data:`TRAILER_SLACK`).

    Raises:
        ValueError: a corrupt stream, a header over the limit, or data beyond the declared size.
    """
    stream = io.BytesIO(data)
    try:
        preamble = pydicom.filereader.read_preamble(stream, False)
        meta = pydicom.filereader._read_file_meta_info(stream)
    except Exception:
        return data  # not ours to judge: the regular reader reports it
    if meta.get("TransferSyntaxUID") != uid.DeflatedExplicitVRLittleEndian:
        return data
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    compressed = data[stream.tell() :]
    try:
        head = inflater.decompress(compressed, HEADER_LIMIT)
        header = pydicom.filereader.read_dataset(
            io.BytesIO(head), False, True, stop_when=lambda tag, vr, length: tag == _PIXEL_DATA
        )
        limit = HEADER_LIMIT + _pixel_bytes(header, max_pixels) + TRAILER_SLACK
        rest = inflater.decompress(inflater.unconsumed_tail, limit - len(head) + 1)
    except zlib.error:
        raise ValueError("corrupt deflated DICOM data (zlib stream error)") from None
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"could not parse the deflated DICOM header ({type(exc).__name__})") from None
    if len(head) + len(rest) > limit or inflater.unconsumed_tail:
        raise ValueError(
            "deflated DICOM inflates beyond the size its header declares (header + Rows x Columns x BitsAllocated): "
            "refused before decoding"
        )
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(preamble or b"\0" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    out.write(head)
    out.write(rest)
    return out.getvalue()


def check_lut(item: pydicom.Dataset, name: str, big_endian: bool = False) -> tuple[int, int, int]:
    """``(entries, first_mapped, bits)`` of a LUT item, after checking its data holds that many entries."""
    descriptor = item.get("LUTDescriptor")
    data = item.get("LUTData")
    if descriptor is None or data is None:
        raise DicomAttributeError(f"{name}: no LUT Descriptor or LUT Data")
    try:
        entries, first_mapped, bits = (int(value) for value in descriptor)
    except (TypeError, ValueError):
        raise DicomAttributeError(f"{name}: the LUT Descriptor must hold three integers") from None
    entries = entries or 65536  # 0 means 2**16 entries
    if bits not in range(1, 17):
        raise DicomAttributeError(f"{name}: the LUT Descriptor declares {bits}-bit entries; expected 1 to 16")
    if isinstance(data, (bytes, bytearray)):
        available = len(data) if bits <= 8 and len(data) < 2 * entries else len(data) // 2
    else:
        try:
            available = len(data)
        except TypeError:
            available = 1
    if available < entries:
        raise DicomAttributeError(f"{name}: LUT Data holds {available} entries, its LUT Descriptor says {entries}")
    return entries, first_mapped, bits
