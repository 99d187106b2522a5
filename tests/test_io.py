"""Tests for ``afloc.imaging.io``: DICOM fixtures are written with pydicom into ``tmp_path``; real files are
optional."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import SHARED_DATA, shared_data
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut, get_decoder

from afloc.imaging.io import DEFAULT_MAX_PIXELS, ImageInfo, is_dicom, load_image, load_image_with_info

SIIM_DICOM = SHARED_DATA / "cxr" / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-7734-SECRET"


def make_dicom(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    transfer_syntax: str = uid.ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    **attributes,
) -> bytes:
    """A minimal CR DICOM file (preamble + ``DICM`` + file meta) holding ``pixels [rows, columns(, samples)]``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyDate = "19700101"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


RAMP_12BIT = np.array([[0, 1024, 2048], [3072, 4095, 100]], dtype=np.uint16)


# ---------------------------------------------------------------------------------------------------- DICOM


def test_dicom_fixture_has_preamble_and_is_detected():
    data = make_dicom(RAMP_12BIT, bits_stored=12)
    assert data[128:132] == b"DICM" and is_dicom(data)
    assert not is_dicom(encode(np.zeros((4, 4), np.uint8), "PNG"))
    assert not is_dicom(b"")


def test_dicom_12_bit_in_16_ignores_garbage_high_bits():
    garbage = RAMP_12BIT | np.uint16(0xF000)  # bits above BitsStored are undefined (PS3.5 8.1.1)
    image, info = load_image_with_info(make_dicom(garbage, bits_stored=12))
    np.testing.assert_allclose(image, RAMP_12BIT / 4095, atol=1e-6)
    assert image.dtype == np.float32 and image.shape == (2, 3)
    assert info == ImageInfo("dicom", 2, 3, 1, 12, "MONOCHROME2", None)


def test_dicom_monochrome1_is_inverted():
    mono2 = load_image(make_dicom(RAMP_12BIT, bits_stored=12))
    mono1 = load_image(make_dicom(RAMP_12BIT, bits_stored=12, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0] == pytest.approx(1.0)  # stored 0 is white in MONOCHROME1


def test_dicom_window_centre_width():
    # LINEAR window (PS3.3 C.11.2.1.2.1), centre 2048, width 1025: [1535.5, 2559.5] maps onto [0, 1].
    pixels = np.array([[0, 1000, 2048], [4095, 3000, 2560]], dtype=np.uint16)
    image, info = load_image_with_info(make_dicom(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1025))
    assert info.voi_transform == "window"
    assert image[0, 0] == 0.0 and image[0, 1] == 0.0  # below the window
    assert image[1, 0] == 1.0 and image[1, 1] == 1.0 and image[1, 2] == 1.0  # above the window
    assert image[0, 2] == pytest.approx(((2048 - 2047.5) / 1024 + 0.5), abs=1e-6)  # the centre is mid-grey


def test_dicom_window_after_rescale_with_monochrome1():
    pixels = np.array([[0, 2048], [4095, 2048]], dtype=np.uint16)
    data = make_dicom(
        pixels,
        bits_stored=12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=1024,
        WindowWidth=1025,
        PhotometricInterpretation="MONOCHROME1",
    )
    image = load_image(data)
    np.testing.assert_allclose(image, [[1.0, 0.5], [0.0, 0.5]], atol=1e-3)


def test_dicom_sigmoid_window_by_hand():
    # VOI LUT Function SIGMOID (PS3.3 C.11.2.1.3.1): y = 1 / (1 + exp(-4 (x - c) / w)) on [0, 1]; centre 2048,
    # width 1024. A LINEAR reading would give 0 and 1 at x = 1024 and 3072, the sigmoid 0.018 and 0.982.
    pixels = np.array([[1024, 2048, 2304], [3072, 0, 4095]], dtype=np.uint16)
    image = load_image(
        make_dicom(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024, VOILUTFunction="SIGMOID")
    )
    expected = [[1 / (1 + np.exp(4.0)), 0.5, 1 / (1 + np.exp(-1.0))], [1 / (1 + np.exp(-4.0)), 0.0, 1.0]]
    np.testing.assert_allclose(image, expected, atol=2e-3)  # 0 and 4095 are 8 widths out: 1e-3.5 from 0 or 1


def test_dicom_linear_exact_window_by_hand():
    # LINEAR_EXACT (C.11.2.1.3.2): x <= c - w/2 -> 0, x > c + w/2 -> 1, else (x - c) / w + 0.5; no half-pixel
    # offsets, unlike LINEAR: x = 2304 gives 0.75 exactly (LINEAR: (2304 - 2047.5) / 1023 + 0.5 = 0.7507).
    pixels = np.array([[1536, 2048, 2304], [2560, 2561, 1000]], dtype=np.uint16)
    image = load_image(
        make_dicom(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024, VOILUTFunction="LINEAR_EXACT")
    )
    np.testing.assert_allclose(image, [[0.0, 0.5, 0.75], [1.0, 1.0, 0.0]], atol=1e-6)


def test_dicom_first_of_several_windows_is_used():
    # Two windows (centre 1024 width 512, centre 3072 width 2048): the first is the default view (pydicom's
    # index 0). Under the second, 1300 and 2048 would both be black; under the first both are white.
    pixels = np.array([[0, 1300], [2048, 4095]], dtype=np.uint16)
    image = load_image(make_dicom(pixels, bits_stored=12, WindowCenter=[1024, 3072], WindowWidth=[512, 2048]))
    np.testing.assert_allclose(image, [[0.0, 1.0], [1.0, 1.0]], atol=1e-6)


def test_dicom_rows_and_columns_are_not_swapped():
    # 3 rows x 5 columns with one bright pixel in the top-right corner and a mid-grey one bottom-left.
    pixels = np.zeros((3, 5), dtype=np.uint16)
    pixels[0, 4], pixels[2, 0] = 4095, 2048
    image, info = load_image_with_info(make_dicom(pixels, bits_stored=12))
    assert image.shape == (3, 5) and (info.height, info.width) == (3, 5)
    assert image[0, 4] == 1.0 and image[2, 0] == pytest.approx(2048 / 4095, abs=1e-6)
    assert np.count_nonzero(image) == 2


def _voi_lut_item(table: np.ndarray, first_mapped: int, entry_bits: int, encoding: str) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(table) % 65536, first_mapped, entry_bits])
    if encoding == "US":
        item.add_new("LUTData", "US", table.tolist())
    elif encoding == "OW words":
        item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
    else:  # "OW bytes": 8-bit entries, one per byte
        item.add_new("LUTData", "OW", table.astype(np.uint8).tobytes())
    return item


def _reference_voi_lut(values: np.ndarray, table: np.ndarray, first_mapped: int) -> np.ndarray:
    """PS3.3 C.11.2.1.1 pixel by pixel: clamp to the table, look up, map the entries' range onto [0, 1]."""
    out = np.empty(values.shape)
    for position, value in np.ndenumerate(values):
        entry = table[min(max(int(value) - first_mapped, 0), len(table) - 1)]
        out[position] = (entry - table.min()) / (table.max() - table.min())
    return out


@pytest.mark.parametrize(
    ("entry_bits", "encoding"), [(8, "US"), (8, "OW words"), (8, "OW bytes"), (16, "US"), (16, "OW words")]
)
def test_dicom_voi_lut_sequence(entry_bits, encoding):
    # 4096 entries over 12-bit input, first mapped 100: a ramp over inputs 1100..1355 (x 257 for 16 bits).
    # 8-bit LUTs with more than 256 entries are the case pydicom 3.0's apply_voi gets wrong (uint8 indices).
    table = np.clip(np.arange(4096) - 1000, 0, 255) * (257 if entry_bits == 16 else 1)
    pixels = np.array([[0, 1000, 1100], [1228, 1355, 4095]], dtype=np.uint16)
    item = _voi_lut_item(table, 100, entry_bits, encoding)
    image, info = load_image_with_info(
        make_dicom(pixels, bits_stored=12, VOILUTSequence=[item], WindowCenter=2048, WindowWidth=4096)
    )
    assert info.voi_transform == "lut"  # the LUT wins over the window, as in pydicom
    expected = _reference_voi_lut(pixels, table, 100)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    np.testing.assert_allclose(expected, [[0, 0, 0], [128 / 255, 1, 1]], atol=1e-6)
    if entry_bits == 16:  # where pydicom's own VOI LUT is right, it agrees with ours
        ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels, bits_stored=12, VOILUTSequence=[item])))
        np.testing.assert_allclose(image, apply_voi_lut(ds.pixel_array, ds) / table.max(), atol=1e-6)


def test_dicom_signed_12_bit_is_sign_extended():
    values = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    stored = (values.view(np.uint16) & 0x0FFF) | 0xA000  # 12-bit two's complement, garbage in the top 4 bits
    image = load_image(make_dicom(stored.view(np.int16), bits_stored=12))
    np.testing.assert_allclose(image, (values + 2048) / 4095, atol=1e-6)


def test_dicom_rescale_slope_intercept_without_window():
    # Signed 16-bit, slope 2, intercept -100: range [-65636, 65434]; no VOI -> that range maps onto [0, 1].
    pixels = np.array([[-32768, 0], [32767, 1000]], dtype=np.int16)
    image = load_image(make_dicom(pixels, RescaleSlope=2, RescaleIntercept=-100))
    low, high = -32768 * 2 - 100, 32767 * 2 - 100
    expected = (pixels.astype(np.float64) * 2 - 100 - low) / (high - low)
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_dicom_named_png_is_read_as_dicom(tmp_path):
    path = tmp_path / "chest.png"
    path.write_bytes(make_dicom(RAMP_12BIT, bits_stored=12))
    image, info = load_image_with_info(path)
    assert info.format == "dicom"
    np.testing.assert_allclose(image, RAMP_12BIT / 4095, atol=1e-6)


def test_png_named_dcm_is_read_as_png(tmp_path):
    path = tmp_path / "chest.dcm"
    path.write_bytes(encode(np.array([[0, 255], [128, 64]], np.uint8), "PNG"))
    image, info = load_image_with_info(str(path))
    assert info.format == "png"
    np.testing.assert_allclose(image, [[0, 1], [128 / 255, 64 / 255]], atol=1e-6)


def _undecodable_syntax() -> str:
    for syntax in (uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.HTJ2KLossless):
        if not get_decoder(syntax).is_available:
            return syntax
    pytest.skip("every candidate compressed transfer syntax has a decoder installed")


def test_dicom_compressed_without_decoder_names_syntax_and_package():
    syntax = _undecodable_syntax()
    fake_frame = b"\xff\xd8" + bytes(64) + b"\xff\xd9"
    data = make_dicom(RAMP_12BIT, bits_stored=12, transfer_syntax=syntax, pixel_data=encapsulate([fake_frame]))
    with pytest.raises(ValueError, match="no decoder is installed") as error:
        load_image(data)
    message = str(error.value)
    assert str(syntax) in message and uid.UID(syntax).name in message
    assert "pylibjpeg" in message


@pytest.mark.parametrize(
    ("attributes", "pattern"),
    [
        ({"NumberOfFrames": 2}, "multi-frame.*NumberOfFrames=2"),
        ({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}, "colour DICOM"),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, "colour DICOM.*PALETTE COLOR"),
    ],
)
def test_dicom_unsupported_layouts(attributes, pattern):
    pixels = np.zeros((4, 4, 3) if attributes.get("SamplesPerPixel") == 3 else (8, 4), np.uint8)
    with pytest.raises(ValueError, match=pattern):
        load_image(make_dicom(pixels, **attributes))


def test_dicom_without_pixel_data():
    data = bytearray(make_dicom(RAMP_12BIT, bits_stored=12))
    meta_and_header = data[: data.rfind(b"\xe0\x7f\x10\x00")]  # cut at the (7FE0,0010) tag
    with pytest.raises(ValueError, match="no .*Pixel Data"):
        load_image(bytes(meta_and_header))


def test_dicom_truncated_pixel_data():
    data = make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8), bits_stored=12)
    with pytest.raises(ValueError, match="truncated"):
        load_image(data[:-20])


def test_dicom_too_small_and_too_large():
    with pytest.raises(ValueError, match="too small: 1x1"):
        load_image(make_dicom(np.zeros((1, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"too large: 4x8 = 32 pixels .*max_pixels=20"):
        load_image(make_dicom(np.zeros((8, 4), np.uint8)), max_pixels=20)


def test_no_patient_data_in_logs_warnings_or_errors(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, pydicom's included
    good = make_dicom(RAMP_12BIT, bits_stored=12)
    cut_in_pixel_header = good[: good.rfind(b"\xe0\x7f\x10\x00") + 10]  # parser error inside an element header
    malformed_name = good.replace(PATIENT_NAME.encode(), b"Doe\x01Jane")  # invalid PN characters
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(make_dicom(RAMP_12BIT, bits_stored=12, WindowCenter=2048, WindowWidth=1000))
        load_image(malformed_name)
        for bad in (
            make_dicom(RAMP_12BIT, NumberOfFrames=2),
            make_dicom(np.zeros((2, 2, 3), np.uint8), SamplesPerPixel=3, PhotometricInterpretation="RGB"),
            good[:-5],
            good[:400],
            cut_in_pixel_header,
            make_dicom(RAMP_12BIT, bits_stored=12, WindowCenter=2048, WindowWidth=0),
            bytes(128) + b"DICM" + np.random.default_rng(2).bytes(300),
        ):
            with pytest.raises(ValueError) as error:
                load_image(bad)
            messages.append(str(error.value))
    assert any("could not parse the DICOM file" in message for message in messages)
    messages += [record.getMessage() for record in caplog.records] + [str(warning.message) for warning in caught]
    assert any("read DICOM" in message for message in messages)  # the debug log was captured
    for message in messages:
        assert "Doe" not in message and "Jane" not in message
        assert PATIENT_ID not in message and "19700101" not in message


# ------------------------------------------------------------------------------------------- Pillow formats


GREY_8 = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)


def test_png_8_bit_and_16_bit():
    np.testing.assert_allclose(load_image(encode(GREY_8, "PNG")), GREY_8 / 255, atol=1e-6)
    grey_16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    image, info = load_image_with_info(encode(grey_16, "PNG"))
    np.testing.assert_allclose(image, grey_16 / 65535, atol=1e-6)
    assert info == ImageInfo("png", 2, 2, 1, 16) and image.dtype == np.float32


def test_rgb_with_grey_content_becomes_2d():
    rgb = np.repeat(GREY_8[..., None], 3, axis=2)
    rgb[0, 0, 1] = 1  # one level of difference is still grey
    image, info = load_image_with_info(encode(rgb, "PNG"))
    assert image.shape == (2, 3) and info.channels == 1
    np.testing.assert_allclose(image, GREY_8 / 255, atol=1 / 255)


def test_real_rgb_stays_3d_and_rgba_drops_alpha():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[1, :, 2] = 128
    image = load_image(encode(rgb, "PNG"))
    assert image.shape == (2, 3, 3)
    np.testing.assert_allclose(image, rgb / 255, atol=1e-6)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(load_image(encode(rgba, "PNG")), rgb / 255, atol=1e-6)


def test_jpeg_tiff_bmp_and_palette():
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    jpeg, info = load_image_with_info(encode(smooth, "JPEG", quality=95))
    assert info.format == "jpeg" and jpeg.shape == (16, 32)
    assert np.abs(jpeg - smooth / 255).max() < 0.05
    tiff_16 = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    np.testing.assert_allclose(load_image(encode(tiff_16, "TIFF")), tiff_16 / 65535, atol=1e-6)
    np.testing.assert_allclose(load_image(encode(GREY_8, "BMP")), GREY_8 / 255, atol=1e-6)
    palette = Image.fromarray(GREY_8).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    assert load_image(buffer.getvalue()).shape == (2, 3)


def test_tiff_integer_and_float_modes():
    large = np.array([[0, 70000], [140000, 10]], dtype=np.int32)  # mode I beyond 16 bits
    np.testing.assert_allclose(load_image(encode(large, "TIFF")), large / (2**31 - 1), atol=1e-6)
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(load_image(encode(unit, "TIFF")), unit)
    wide = unit * 1000 - 10
    np.testing.assert_allclose(load_image(encode(wide, "TIFF")), (wide - wide.min()) / np.ptp(wide), atol=1e-6)


def test_exif_orientation_is_applied():
    pixels = np.zeros((4, 8), np.uint8)
    pixels[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = load_image(encode(pixels, "JPEG", exif=exif, quality=100))
    assert image.shape == (8, 4)
    assert image[0, -1] > 0.5  # the top-left pixel moved to the top-right


def test_bytes_file_object_and_path_sources(tmp_path):
    data = encode(GREY_8, "PNG")
    path = tmp_path / "grey.png"
    path.write_bytes(data)
    expected = load_image(data)
    for source in (bytearray(data), memoryview(data), io.BytesIO(data), path, str(path)):
        np.testing.assert_array_equal(load_image(source), expected)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(load_image(handle), expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_png_and_jpeg(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(noise, fmt)
    with pytest.raises(ValueError, match="truncated"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (np.random.default_rng(1).bytes(4096), "not a recognised image"),
        (b"Findings: no pneumothorax.\n" * 20, "not a recognised image"),
        (b"", "empty"),
    ],
)
def test_not_an_image(data, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_image(data)


def test_empty_file_and_missing_path(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(tmp_path)


def test_unsupported_sources():
    with pytest.raises(ValueError, match="unsupported image source type int"):
        load_image(42)
    with pytest.raises(ValueError, match="binary mode"):
        load_image(io.StringIO("text"))
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(encode(GREY_8, "PNG"), max_pixels=0)


def test_one_pixel_image_is_refused():
    with pytest.raises(ValueError, match="too small: 1x1"):
        load_image(encode(np.zeros((1, 1), np.uint8), "PNG"))
    with pytest.raises(ValueError, match="too small: 5x1"):
        load_image(encode(np.zeros((1, 5), np.uint8), "PNG"))


def test_large_image_refused_before_decoding():
    data = encode(np.zeros((100, 100), np.uint8), "PNG")
    # Only the header is intact: a refusal (not a decode error) shows the check happens before decoding.
    header_only = data[:64]
    with pytest.raises(ValueError, match=r"too large: 100x100 = 10000 pixels .*max_pixels=5000"):
        load_image(header_only, max_pixels=5000)
    assert load_image(data, max_pixels=10_000).shape == (100, 100)
    assert DEFAULT_MAX_PIXELS == 80_000_000


def test_pillow_decompression_bomb_limit_becomes_value_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warning above 100, error above 200 pixels
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        load_image(encode(np.zeros((12, 12), np.uint8), "PNG"))
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        load_image(encode(np.zeros((20, 20), np.uint8), "PNG"))


# ------------------------------------------------------------------------------- real files (skipped if absent)


def _require(path: Path) -> Path:
    return shared_data("", path)


def test_real_siim_dicom_and_monochrome1_variant():
    if not get_decoder(uid.JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG baseline decoder installed for pydicom")
    image, info = load_image_with_info(_require(SIIM_DICOM))
    assert image.shape == (1024, 1024) and image.dtype == np.float32
    assert info.format == "dicom" and info.photometric_interpretation == "MONOCHROME2"
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.1 and np.percentile(image, 99) - np.percentile(image, 1) > 0.5
    inverted = load_image(_require(SIIM_DICOM.parent / "Fake_MONOHR1.dcm"))
    np.testing.assert_allclose(inverted, 1.0 - image, atol=1e-6)
    assert pydicom.dcmread(SIIM_DICOM, stop_before_pixels=True).Rows == 1024


def test_real_tbx11k_png_is_grey():
    path = _require(SHARED_DATA / "cxr" / "tbx11k" / "imgs" / "tb" / "tb0005.png")
    with Image.open(path) as stored:
        assert stored.mode == "RGB"
    image = load_image(path)
    assert image.shape == (512, 512) and image.std() > 0.05


def test_real_idrid_fundus_is_rgb():
    image, info = load_image_with_info(_require(SHARED_DATA / "fundus" / "idrid" / "0001.jpg"))
    assert image.shape == (680, 1024, 3) and info.channels == 3 and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
