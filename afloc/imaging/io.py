"""Read an image file (DICOM, PNG, JPEG, TIFF, BMP) into a float32 array in ``[0, 1]``.

The format is detected from the content, never from the file name: DICOM by the ``DICM`` marker at byte 128
(PS3.10 file format; a bare dataset without the 128-byte preamble is not accepted), everything else by Pillow.
Greyscale images come back as ``image [H, W]``, colour images (fundus photographs) as ``image [H, W, 3]`` RGB.

No DICOM header value is ever logged or put into an error message: only technical attributes of the pixel
module and transfer syntax (sizes, bit depths, PhotometricInterpretation, TransferSyntaxUID, ...); pydicom's own
log records and warnings are held back while a file is read. Only PNG, JPEG, TIFF and BMP are handed to Pillow
(never EPS, which Pillow passes to Ghostscript, or any other plugin), and a deflated DICOM is never inflated
beyond the size its header declares (:mod:`afloc.imaging.dicom_safety`).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from .codestream import check_codestream
from .dicom_safety import DicomAttributeError, check_lut, inflate_deflated, silenced_read

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 80_000_000
"""Largest ``width * height`` accepted by default; checked from the header, before any pixel is decoded."""

ImageSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO"

_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_OFFSET = 128
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
"""The only formats handed to Pillow (``Image.open(formats=...)``); everything else is refused unread."""


@dataclass(frozen=True)
class ImageInfo:
    """What was read, without any patient data.

    Attributes:
        format: ``"dicom"`` or Pillow's format name in lower case (``"png"``, ``"jpeg"``, ``"tiff"``, ...).
        height, width: size of the returned image (after EXIF orientation).
        channels: 1 for a greyscale ``[H, W]`` result, 3 for an RGB ``[H, W, 3]`` result.
        bits: bits per stored sample (DICOM: BitsStored).
        photometric_interpretation: DICOM only (``"MONOCHROME1"``/``"MONOCHROME2"``), else ``None``.
        voi_transform: DICOM only: ``"lut"`` (VOI LUT Sequence), ``"window"`` (centre/width) or ``None``.
    """

    format: str
    height: int
    width: int
    channels: int
    bits: int
    photometric_interpretation: str | None = None
    voi_transform: str | None = None


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` starts like a DICOM file: the ``DICM`` marker at byte offset 128 (PS3.10, 7.1)."""
    return bytes(data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4]) == _DICOM_MAGIC


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as float32 in ``[0, 1]``; see :func:`load_image_with_info` for the rules.

    Returns:
        ``image [H, W]`` for greyscale (including RGB files with identical channels), ``image [H, W, 3]`` RGB.
    """
    return load_image_with_info(source, max_pixels=max_pixels)[0]


def load_image_with_info(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as float32 in ``[0, 1]`` together with technical facts about it.

    Normalisation policy:

    * Pillow formats: 8-bit by 255, 16-bit by 65535; 32-bit integer (mode ``I``) by 65535 when all values fit
      in 16 bits, else by 2**31 - 1; float (mode ``F``) kept when already in ``[0, 1]``. Negative or other
      out-of-range values fall back to min-max. RGBA drops alpha, palette/LA/CMYK are converted, EXIF
      orientation is applied, and RGB whose channels differ by at most 1/255 becomes greyscale ``[H, W]``.
    * DICOM: pydicom decodes (masking the bits above BitsStored), then the modality LUT (RescaleSlope/Intercept
      or Modality LUT Sequence). If a VOI LUT Sequence is present (preferred, as pydicom does) or else a window
      centre/width, it is applied and its output range is mapped to ``[0, 1]``: for a VOI LUT the smallest to
      the largest LUT entry, for a window the range pydicom maps it to (the BitsStored/PixelRepresentation range
      after rescale), so values below/above the window become exactly 0/1. Without a VOI transform, the range
      implied by BitsStored/PixelRepresentation after the modality LUT is used; values outside it (invalid
      files) fall back to min-max. MONOCHROME1 is finally inverted (``1 - x``) so that air is dark.

    Args:
        source: a path, the file content as bytes, or a binary file object (read to its end).
        max_pixels: largest accepted ``width * height``, checked from the header before decoding.

    Returns:
        ``(image, info)``: ``image [H, W]`` or ``image [H, W, 3]`` float32 in ``[0, 1]``, and an :class:`ImageInfo`.

    Raises:
        ValueError: unsupported source type, missing path, empty or unrecognised data, truncated or corrupt
            file, a side under 2 pixels, more than ``max_pixels`` pixels, or an unsupported DICOM (multi-frame,
            colour, no pixel data, compressed without an installed decoder).

    Note:
        Pillow reduces 16-bit RGB to 8 bits; only the first frame of a GIF/TIFF is read; truncated PNG/JPEG go
        unnoticed if other code has set Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES``.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 4:
        raise ValueError(f"max_pixels must be an integer >= 4, got {max_pixels!r}")
    data = _read_source(source)
    if not data:
        raise ValueError("empty image data (0 bytes)")
    if is_dicom(data):
        with silenced_read():
            return _decode_dicom(inflate_deflated(data, max_pixels), max_pixels)
    return _decode_pillow(data, max_pixels)


def _read_source(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"image file does not exist: {path}")
        if not path.is_file():
            raise ValueError(f"image path is not a regular file: {path}")
        return path.read_bytes()
    if callable(getattr(source, "read", None)):
        data = source.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"file object must be opened in binary mode; read() returned {type(data).__name__}")
        return bytes(data)
    raise ValueError(
        f"unsupported image source type {type(source).__name__}: expected a path, bytes or a binary file object"
    )


def _check_size(width: int, height: int, max_pixels: int, kind: str) -> None:
    if width < 2 or height < 2:
        raise ValueError(f"{kind} image is too small: {width}x{height} pixels (each side must be at least 2)")
    if width * height > max_pixels:
        raise ValueError(
            f"{kind} image is too large: {width}x{height} = {width * height} pixels exceeds the limit of "
            f"max_pixels={max_pixels} (refused before decoding)"
        )


def _to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low -> 0`` and ``high -> 1`` (either order), clip, float32; a constant range gives zeros."""
    if high == low:
        return np.zeros(values.shape, dtype=np.float32)
    unit = (np.asarray(values, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(unit, 0.0, 1.0, out=unit)


def _min_max(values: np.ndarray) -> np.ndarray:
    return _to_unit(values, float(np.min(values)), float(np.max(values)))


# --------------------------------------------------------------------------------------------- Pillow formats


def _decode_pillow(data: bytes, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    check_codestream(data, max_pixels)  # the codestream's own size and cost, before Pillow decodes anything
    # No warnings filter is changed here (filters are process-wide: two reads in two threads would undo each
    # other's); Pillow's bomb *warning* is dropped for this thread and the size is checked below instead.
    with silenced_read():
        try:
            img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ValueError(
                f"image refused before decoding: {exc} (Pillow's PIL.Image.MAX_IMAGE_PIXELS="
                f"{Image.MAX_IMAGE_PIXELS}; max_pixels={max_pixels})"
            ) from None
        except Image.UnidentifiedImageError:
            raise ValueError(
                "not a recognised image: no DICOM 'DICM' marker at byte 128 and not one of the accepted formats "
                f"({', '.join(PILLOW_FORMATS)})"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ValueError(f"corrupt or truncated image header: {exc}") from exc
    kind = (img.format or "image").lower()
    if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:  # Pillow's own bomb limit
        raise ValueError(
            f"image refused before decoding: {img.width}x{img.height} pixels exceeds Pillow's "
            f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} (max_pixels={max_pixels})"
        )
    _check_size(img.width, img.height, max_pixels, kind.upper())
    try:
        img.load()  # decode everything now, so that a truncated file fails here and not later
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"could not decode the {kind.upper()} image (truncated or corrupt file?): {exc}") from exc
    image, bits = _pillow_to_array(img)
    info = ImageInfo(kind, image.shape[0], image.shape[1], 1 if image.ndim == 2 else 3, bits)
    logger.debug("read %s image %dx%d, mode %s -> %s", kind, img.width, img.height, img.mode, image.shape)
    return image, info


def _pillow_to_array(img: Image.Image) -> tuple[np.ndarray, int]:
    """Pillow image -> (float32 ``[H, W]`` or ``[H, W, 3]`` in ``[0, 1]``, bits per sample)."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.nan_to_num(np.asarray(img)) if mode == "F" else np.asarray(img)
        low, high = float(values.min()), float(values.max())
        if mode == "F":
            bits, full_scale = 32, 1.0
        else:
            bits, full_scale = (16, 65535) if high <= 65535 else (32, 2**31 - 1)
        return (_min_max(values) if low < 0 or high > full_scale else _to_unit(values, 0, full_scale)), bits
    if mode in ("1", "L", "LA", "La"):
        return _to_unit(np.asarray(img.convert("L")), 0, 255), 8
    if mode != "RGB":
        try:
            img = img.convert("RGB")  # RGBA/RGBX drop alpha/padding; P, PA, CMYK, YCbCr are converted
        except ValueError as exc:
            raise ValueError(f"unsupported image mode {mode}: {exc}") from exc
    rgb = np.asarray(img)
    channel_spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    if int(channel_spread.max()) <= 1:  # grey stored as RGB (many X-ray PNGs): at most 1/255 apart
        return _to_unit(rgb.mean(axis=2, dtype=np.float32), 0, 255), 8
    return _to_unit(rgb, 0, 255), 8


# ---------------------------------------------------------------------------------------------------- DICOM


_DEFINED_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420",
     "YBR_ICT", "YBR_RCT", "XYB", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422"}
)  # fmt: skip


def _voi_kind(ds: pydicom.Dataset) -> str | None:
    """Which VOI transform pydicom's ``apply_voi_lut`` applies: the LUT wins over a window, as in pydicom."""
    sequence = ds.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") is not None and sequence[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        return "window"
    return None


def _modality_output_range(ds: pydicom.Dataset, bits_stored: int, signed: bool) -> tuple[float, float]:
    """Value range after the modality LUT, as pydicom 3's ``apply_windowing`` computes it.

    pydicom maps a window onto this range: below it -> first value, above it -> second (larger unless slope < 0).
    """
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        low, high = 0.0, 2.0 ** int(modality_lut[0].LUTDescriptor[2]) - 1
    elif signed:
        low, high = -(2.0 ** (bits_stored - 1)), 2.0 ** (bits_stored - 1) - 1
    else:
        low, high = 0.0, 2.0**bits_stored - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope not in (None, "") and intercept not in (None, ""):
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _voi_lut(ds: pydicom.Dataset) -> tuple[np.ndarray, int]:
    """The first VOI LUT as ``(table [n_entries], first input value mapped)`` (PS3.3 C.11.2.1.1).

    Read here rather than through pydicom 3.0's ``apply_voi``: that indexes an 8-bit LUT with uint8 indices
    (wrong output for LUTs of more than 256 entries) and cannot read 8-bit entries packed one per OW byte.
    """
    item = ds.VOILUTSequence[0]
    n_entries, first_mapped, entry_bits = check_lut(item, "VOI LUT Sequence")
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the file's byte order, or 8-bit entries one per byte
        if entry_bits <= 8 and len(data) < 2 * n_entries:
            table = np.frombuffer(data, np.uint8, count=n_entries)
        else:
            table = np.frombuffer(data, "<u2" if ds.original_encoding[1] is not False else ">u2", count=n_entries)
    else:  # US: already decoded by pydicom
        table = np.atleast_1d(np.asarray(data, dtype=np.int64))
    if table.size < n_entries:
        raise ValueError(f"VOI LUT Data holds {table.size} entries, its LUT Descriptor says {n_entries}")
    return table[:n_entries], first_mapped


def _decode_dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except Exception as exc:
        # The parser's messages can quote element values (patient data): report only the exception type.
        error = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        raise ValueError(f"could not parse the DICOM file (truncated or corrupt?): {error}") from None
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no (7FE0,0010) Pixel Data: not an image, or the file is truncated")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsyntax:
        raise ValueError("DICOM file meta has no (0002,0010) TransferSyntaxUID")
    try:  # a missing or empty attribute takes its default
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except (TypeError, ValueError):
        raise ValueError("DICOM image attributes (Rows, Columns, BitsStored, ...) are not integers") from None
    if frames > 1:
        raise ValueError(f"multi-frame DICOM is not supported (NumberOfFrames={frames}); export a single frame")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in _MONOCHROME:
        # only the standard's defined terms are named: any other value is the file's own text (not echoed)
        shown = (
            photometric
            if photometric in _DEFINED_PHOTOMETRIC
            else ("missing" if not photometric else "not a defined term")
        )
        raise ValueError(
            f"colour DICOM is not supported for X-ray (SamplesPerPixel={samples}, "
            f"PhotometricInterpretation {shown}); expected MONOCHROME1 or MONOCHROME2"
        )
    _check_size(columns, rows, max_pixels, "DICOM")
    if tsyntax.is_compressed:  # the embedded codestream's own size, not only the header's Rows x Columns
        from pydicom.encaps import generate_frames

        try:  # the first frame's codestream (after the Basic Offset Table)
            first = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
        except Exception:
            first = b""  # malformed encapsulation: the decoder reports it
        check_codestream(bytes(first), max_pixels, "DICOM pixel data")

    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise ValueError(f"pydicom has no decoder for the DICOM transfer syntax {tsyntax} ({tsyntax.name})") from None
    if not decoder.is_available:
        # pydicom names each decoding plugin and the packages it needs (e.g. pylibjpeg-openjpeg for JPEG 2000).
        plugins = "; ".join(decoder.missing_dependencies) or "none available"
        raise ValueError(
            f"no decoder is installed for the compressed DICOM transfer syntax {tsyntax} ({tsyntax.name}); "
            f"install one of pydicom's decoding plugins: {plugins}"
        )
    try:
        pixels = ds.pixel_array  # pydicom 3 masks the unused bits above BitsStored (correct_unused_bits)
    except Exception as exc:
        raise ValueError(
            f"could not decode the DICOM pixel data ({tsyntax.name}); the file may be truncated or corrupt: {exc}"
        ) from exc

    voi = _voi_kind(ds)
    try:
        if ds.get("ModalityLUTSequence"):
            check_lut(ds.ModalityLUTSequence[0], "Modality LUT Sequence")
        values = apply_modality_lut(pixels, ds)
        if voi == "lut":
            # Inputs below/above the table take its first/last entry; the range is that of the entries, not
            # 2**bits - 1, because some CR vendors declare 16-bit entries that only use 12 bits.
            table, first_mapped = _voi_lut(ds)
            index = np.clip(np.rint(values).astype(np.int64) - first_mapped, 0, table.size - 1)
            image = _to_unit(table[index], float(table.min()), float(table.max()))
        elif voi == "window":
            out = apply_voi_lut(values, ds)  # float64 in [y_min, y_max] of _modality_output_range
            image = _to_unit(out, *_modality_output_range(ds, bits_stored, signed))
        else:
            low, high = sorted(_modality_output_range(ds, bits_stored, signed))
            if float(values.min()) < low or float(values.max()) > high:
                logger.debug("DICOM values outside the BitsStored range [%g, %g]: min-max scaling", low, high)
                image = _min_max(values)
            else:
                image = _to_unit(values, low, high)
    except DicomAttributeError as exc:  # our own message: names attributes, never their values
        raise ValueError(f"invalid DICOM LUT: {exc}") from None
    except Exception as exc:  # pydicom's messages can quote header values: report the type only
        raise ValueError(
            f"invalid DICOM modality/VOI LUT, rescale or window attributes ({type(exc).__name__})"
        ) from None
    if photometric == "MONOCHROME1":  # MONOCHROME1: the minimum is white; invert so that air is dark
        image = 1.0 - image
    info = ImageInfo("dicom", rows, columns, 1, bits_stored, photometric, voi)
    logger.debug(
        "read DICOM %dx%d, BitsStored %d, %s, %s, VOI %s", columns, rows, bits_stored, photometric, tsyntax.name, voi
    )
    return image.astype(np.float32, copy=False), info
