"""Hostile images (issue #14): deflate bombs, malformed LUTs, header values in logs, formats nobody asked for."""

from __future__ import annotations

import io
import logging
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset
from test_io import PATIENT_NAME, RAMP_12BIT, make_dicom

from afloc.imaging.io import load_image, load_image_with_info


def _lut_item(entries: int, data: list[int]) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, 0, 16])
    item.add_new("LUTData", "OW", np.asarray(data, "<u2").tobytes())
    return item


def test_deflated_dicom_reads_like_the_uncompressed_one():
    pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4096
    plain = load_image(make_dicom(pixels, bits_stored=12))
    image, info = load_image_with_info(
        make_dicom(pixels, bits_stored=12, transfer_syntax=uid.DeflatedExplicitVRLittleEndian)
    )
    np.testing.assert_array_equal(image, plain)
    assert info.format == "dicom" and (info.height, info.width) == (64, 48)


def test_dicom_deflate_bomb_is_never_inflated_beyond_its_header():
    pixels = np.zeros((64, 64), np.uint16)
    bomb = make_dicom(pixels, transfer_syntax=uid.DeflatedExplicitVRLittleEndian, pixel_data=bytes(96 << 20))
    assert len(bomb) < 1_000_000  # 96 MiB of pixel data behind a header that declares 8 KiB
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="inflates beyond the size its header declares"):
            load_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 16 << 20, peak
    huge = make_dicom(pixels, transfer_syntax=uid.DeflatedExplicitVRLittleEndian, Rows=60000, Columns=60000)
    with pytest.raises(ValueError, match="refused before inflating"):
        load_image(huge)
    corrupt = bytearray(make_dicom(pixels, transfer_syntax=uid.DeflatedExplicitVRLittleEndian))
    corrupt[-40:] = b"\xff" * 40
    with pytest.raises(ValueError, match="DICOM"):
        load_image(bytes(corrupt))


def test_malformed_luts_are_value_errors_with_readable_messages():
    short_modality = make_dicom(RAMP_12BIT, bits_stored=12, ModalityLUTSequence=[_lut_item(4096, list(range(10)))])
    expected = "Modality LUT Sequence: LUT Data holds 10 entries, its LUT Descriptor says 4096"
    with pytest.raises(ValueError, match=expected):
        load_image(short_modality)
    short_voi = make_dicom(RAMP_12BIT, bits_stored=12, VOILUTSequence=[_lut_item(4096, list(range(10)))])
    with pytest.raises(ValueError, match="VOI LUT Sequence: LUT Data holds 10 entries"):
        load_image(short_voi)
    bad_bits = _lut_item(16, list(range(16)))
    bad_bits.LUTDescriptor = [16, 0, 40]
    with pytest.raises(ValueError, match="40-bit entries"):
        load_image(make_dicom(RAMP_12BIT, bits_stored=12, ModalityLUTSequence=[bad_bits]))


def test_header_values_never_reach_logs_warnings_or_messages(caplog, capsys):
    # a patient name in fields that must be numbers: pydicom's validation quotes the value it rejects
    # (written with a placeholder of the same length, then replaced in the file: pydicom refuses to write it)
    cases = [
        {"NumberOfFrames": "12345678"},
        {"WindowCenter": "12345678", "WindowWidth": "100"},
        {"RescaleSlope": "12345678", "RescaleIntercept": "0"},
    ]
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for attributes in cases:
            data = make_dicom(RAMP_12BIT, bits_stored=12, **attributes).replace(b"12345678", PATIENT_NAME.encode())
            try:
                load_image(data)
            except ValueError as error:
                assert PATIENT_NAME not in str(error) and "Doe" not in str(error)
    assert "Doe" not in caplog.text
    assert not [w for w in caught if "Doe" in str(w.message)]
    captured = capsys.readouterr()
    assert "Doe" not in captured.out + captured.err
    # the silencing is undone afterwards: pydicom's logger works again outside reads
    logging.getLogger("pydicom").warning("after the read")
    assert "after the read" in caplog.text


def test_only_documented_formats_are_opened(monkeypatch):
    from PIL import EpsImagePlugin

    def never(*args, **kwargs):
        raise AssertionError("the EPS plugin was consulted")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
    with pytest.raises(ValueError, match=r"not one of the accepted formats \(PNG, JPEG, TIFF, BMP\)"):
        load_image(eps)
    for fmt in ("GIF", "PPM", "ICO"):
        buffer = io.BytesIO()
        Image.new("L", (16, 16), 128).save(buffer, fmt)
        with pytest.raises(ValueError, match="accepted formats"):
            load_image(buffer.getvalue())


def test_a_window_after_a_modality_lut_maps_onto_the_lut_output_range():
    """Identity modality LUT (16-bit entries: output range 0-65535), then a window spanning exactly the 12-bit
    input: the window maps 0-4095 onto 0-65535, so the film is values / 4095."""
    ramp = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 3) % 4096
    identity = _lut_item(4096, list(range(4096)))
    data = make_dicom(ramp, bits_stored=12, ModalityLUTSequence=[identity], WindowCenter=2048, WindowWidth=4096)
    np.testing.assert_allclose(load_image(data), ramp / 4095.0, atol=1e-6)


def test_values_within_bits_stored_keep_their_fixed_range():
    """A 12-bit film that starts at 0 is scaled by 4095, not stretched to its own min-max."""
    pixels = np.linspace(0, 2000, 64 * 48).astype(np.uint16).reshape(64, 48)
    np.testing.assert_allclose(load_image(make_dicom(pixels, bits_stored=12)), pixels / 4095.0, atol=1e-6)


def test_constant_images_load_as_black_of_their_own_size():
    buffer = io.BytesIO()
    Image.fromarray(np.full((5, 7), 5.0, np.float32), mode="F").save(buffer, format="TIFF")
    image = load_image(buffer.getvalue())
    assert image.shape == (5, 7) and not image.any()


def test_an_image_mode_pillow_cannot_convert_is_named():
    from afloc.imaging.io import _pillow_to_array

    class Unconvertible:
        mode = "XYZ;99"

        def convert(self, mode):
            raise ValueError(f"conversion from XYZ;99 to {mode} not supported")

    with pytest.raises(ValueError, match=r"unsupported image mode XYZ;99: conversion from XYZ;99 to RGB"):
        _pillow_to_array(Unconvertible())


def _deflated_variants(pixels: np.ndarray) -> dict[str, bytes]:
    """One image as deflated DICOMs whose streams end the ways writers end them: finished (pydicom's), finished
    and followed by the even-length pad byte, and sync-flushed without a final block, then padded."""
    import struct
    import zlib

    written = make_dicom(pixels, transfer_syntax=uid.DeflatedExplicitVRLittleEndian)
    meta_end = 132 + 12 + struct.unpack("<I", written[140:144])[0]  # group length (0002,0000): tag, VR, length
    body = zlib.decompress(written[meta_end:], -zlib.MAX_WBITS)
    finished = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = finished.compress(body) + finished.flush()
    flushed = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    unfinished = flushed.compress(body) + flushed.flush(zlib.Z_SYNC_FLUSH)
    return {
        "as pydicom writes it": written,
        "finished + pad byte": written[:meta_end] + stream + b"\0" * (1 + len(stream) % 2),
        "sync-flushed + pad byte": written[:meta_end] + unfinished + b"\0" * (1 + len(unfinished) % 2),
    }


@pytest.mark.parametrize("rows, columns", [(2, 2), (3, 5), (17, 31), (64, 63), (255, 257), (511, 384), (1024, 999)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_valid_deflated_dicoms_of_many_sizes_are_read(rows, columns, dtype):
    """Issue #33, defect 8: valid deflated files were refused as "inflating beyond the declared size" when bytes
    (the even-length pad) followed the stream. Every size and stream ending reads like the uncompressed file."""
    rng = np.random.default_rng(rows * columns)
    for content in (rng.integers(0, 250, (rows, columns)), np.full((rows, columns), 7)):
        pixels = content.astype(dtype)
        expected = load_image(make_dicom(pixels))
        for name, data in _deflated_variants(pixels).items():
            np.testing.assert_array_equal(load_image(data), expected, err_msg=f"{rows}x{columns} {name}")
