"""What a compressed image will cost to decode, read from its codestream before any decoder runs (issue #33).

A file's header can say one size and its codestream another: a 64 x 64 DICOM can carry a 169-megapixel JPEG, and
a progressive JPEG of a few hundred kilobytes can hold thousands of scans, each a full pass of the decoder. These
checks walk the markers (linear time, no decoding) and refuse what would cost more than the image is worth:

* :func:`check_jpeg`: every frame's size (SOF markers) within the pixel limit, and at most :data:`MAX_JPEG_SCANS`
  scans (SOS markers);
* :func:`check_jpeg2000`: the image size of the SIZ marker (raw codestream or JP2 box) within the pixel limit;
* :func:`check_bmp`: BMP run-length compression is refused (Pillow decodes it in pure Python: 29 KB took 11.7 s).
"""

from __future__ import annotations

import struct

MAX_JPEG_SCANS = 64
"""A baseline JPEG has 1 scan, a progressive one typically 6-12; more is a decoding-cost attack."""

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length


def _refuse_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ValueError(
            f"{what} codestream is {width}x{height} pixels ({width * height} > max_pixels={max_pixels}); "
            "refused before decoding"
        )


def check_jpeg(data: bytes, max_pixels: int, what: str = "JPEG") -> None:
    """Walk a JPEG's marker segments: refuse a frame over ``max_pixels`` or more than :data:`MAX_JPEG_SCANS` scans.

    Entropy-coded data between markers is skipped byte-wise (``FF 00`` stuffing and restart markers inside it are
    not segment starts). A truncated or malformed stream is left to the decoder, which reports it.
    """
    if not data.startswith(b"\xff\xd8"):
        return
    position, scans, size = 2, 0, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            # inside entropy-coded data: jump to the next marker that is not stuffing or a restart marker
            position = data.find(b"\xff", position + 1)
            if position < 0:
                return
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x00 or marker in _STANDALONE:
            position += 2
            continue
        if marker == 0xD9:  # end of image
            return
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _SOF and position + 9 <= size:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            _refuse_size(width, height, max_pixels, what)
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ValueError(
                    f"{what} has more than {MAX_JPEG_SCANS} scans (a progressive stream built to be slow to decode); "
                    "refused before decoding"
                )
        position += 2 + length


def check_jpeg2000(data: bytes, max_pixels: int, what: str = "JPEG 2000") -> None:
    """Refuse a JPEG 2000 image whose SIZ marker (raw ``FF4F FF51`` codestream, or inside a JP2 file) declares more
    than ``max_pixels``."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or start + 22 > len(data):
        return
    # SIZ: marker(2) length(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4)
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[start + 8 : start + 24])
    _refuse_size(max(0, xsiz - xosiz), max(0, ysiz - yosiz), max_pixels, what)


def check_bmp(data: bytes) -> None:
    """Refuse a run-length compressed BMP (compression 1 = RLE8, 2 = RLE4)."""
    if data[:2] != b"BM" or len(data) < 34:
        return
    (compression,) = struct.unpack("<I", data[30:34])
    if compression in (1, 2):
        raise ValueError("run-length compressed BMP is not accepted (slow to decode); save the image as PNG")


def check_codestream(data: bytes, max_pixels: int, what: str = "image") -> None:
    """All the checks above that apply to ``data`` (recognised by its first bytes)."""
    if data.startswith(b"\xff\xd8"):
        check_jpeg(data, max_pixels, f"{what} (JPEG)")
    elif data.startswith((b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")):
        check_jpeg2000(data, max_pixels, f"{what} (JPEG 2000)")
    elif data.startswith(b"BM"):
        check_bmp(data)
