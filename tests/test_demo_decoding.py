"""The demo's decode worker (issue #33): uploads are decoded in a child process with wall-clock, CPU-time and memory
limits, so that a slow, greedy or GIL-holding decoder costs one refused upload, not the server."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from helpers import busy_decode, crashing_decode, greedy_decode, slow_decode
from test_io import RAMP_12BIT, encode, make_dicom

from afloc.imaging.io import load_image_with_info
from demo.decoding import DecodeWorker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")


def test_decodes_like_the_reader_in_process():
    worker = DecodeWorker()
    assert worker.isolated
    rng = np.random.default_rng(0)
    for data in (encode((rng.random((37, 53)) * 255).astype(np.uint8), "PNG"), make_dicom(RAMP_12BIT, bits_stored=12)):
        image, info = worker(data, max_pixels=10_000)
        expected, expected_info = load_image_with_info(data, max_pixels=10_000)
        np.testing.assert_array_equal(image, expected)
        assert info == expected_info
    with pytest.raises(ValueError, match="not a recognised image"):  # the reader's own message comes back
        worker(b"not an image", max_pixels=10_000)
    with pytest.raises(ValueError, match="max_pixels"):
        worker(encode(np.zeros((200, 200), np.uint8), "PNG"), max_pixels=10_000)


def test_a_slow_decoder_is_stopped_at_the_timeout():
    worker = DecodeWorker(slow_decode, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(ValueError, match="took longer than 1 s"):
        worker(b"x", max_pixels=100)
    assert time.monotonic() - start < 3.0


def test_a_decoder_that_computes_too_long_is_stopped_by_its_cpu_limit():
    worker = DecodeWorker(busy_decode, cpu_s=1, timeout_s=30.0)
    start = time.monotonic()
    with pytest.raises(ValueError, match="more than 1 s of CPU time"):
        worker(b"x", max_pixels=100)
    assert time.monotonic() - start < 10.0  # the kernel's limit, long before the 30 s timeout


def test_a_greedy_decoder_is_refused_by_its_memory_limit():
    worker = DecodeWorker(greedy_decode, memory_bytes=256 << 20)
    with pytest.raises(ValueError, match="more than 256 MiB"):
        worker(b"x", max_pixels=100)


def test_a_decoder_that_dies_is_a_refused_file():
    with pytest.raises(ValueError, match="stopped unexpectedly"):
        DecodeWorker(crashing_decode)(b"x", max_pixels=100)


def test_other_uploads_are_decoded_while_one_decoder_holds_its_gil():
    """A pure-Python decoder holds the GIL of its own process only: another upload is decoded meanwhile."""
    busy = DecodeWorker(busy_decode, cpu_s=3, timeout_s=30.0)
    refused = []
    thread = threading.Thread(target=lambda: refused.append(pytest.raises(ValueError, busy, b"x", max_pixels=100)))
    thread.start()
    time.sleep(0.5)  # the busy child is running
    start = time.monotonic()
    image, _ = DecodeWorker()(encode(np.zeros((64, 64), np.uint8), "PNG"), max_pixels=10_000)
    assert image.shape == (64, 64) and time.monotonic() - start < 2.0 and thread.is_alive()
    thread.join()
    assert refused


def test_each_upload_gets_a_fresh_child_and_a_dead_spare_is_replaced():
    """The spare child that waits for the next upload is used once; one that died while waiting is not handed an
    upload (a fresh child decodes it)."""
    worker = DecodeWorker()
    worker.start()
    data = encode(np.arange(64, dtype=np.uint8).reshape(8, 8), "PNG")
    deadline = time.monotonic() + 20
    while worker._spare is None and time.monotonic() < deadline:
        time.sleep(0.05)
    spare = worker._spare
    assert spare is not None and spare.process.is_alive()
    worker(data, max_pixels=100)
    assert worker._spare is not spare  # used, not kept
    while (worker._spare is None or worker._spare is spare) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker._spare.process.kill()  # the next spare dies while it waits
    worker._spare.process.join(5)
    image, _ = worker(data, max_pixels=100)
    np.testing.assert_array_equal(image, load_image_with_info(data, max_pixels=100)[0])
    worker.close()
    assert worker._spare is None
