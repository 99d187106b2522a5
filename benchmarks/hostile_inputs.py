"""Hostile and careless inputs (issue #33): each file is generated here, read in a fresh process, and timed; the
table gives the outcome, the seconds and the process's peak RSS.

    python benchmarks/hostile_inputs.py [--json results.json]

The bound the issue sets: any file under 1 MB is read or refused within 2 s and under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, resource, sys, time
case, path = sys.argv[1], sys.argv[2]
if case == "demo-annotation":
    from demo.annotations import read_annotations
    read = lambda p: read_annotations(open(p, "rb").read(), "film.png", (512, 512))
elif case == "box-file":
    from afloc.imaging.boxes import read_box_file as read
elif case == "model-folder":
    from afloc import load_pretrained as read
elif case == "demo-decode":  # the demo's path: a child process per file with time, CPU and memory limits
    from demo.decoding import DecodeWorker
    worker = DecodeWorker()
    worker(open(sys.argv[3], "rb").read(), max_pixels=50_000_000)  # warm: the forkserver starts once per server
    read = lambda p: worker(p, max_pixels=50_000_000)
else:
    from afloc.imaging.io import load_image as read
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports: what the read itself costs
start = time.perf_counter()
try:
    read(path)
    outcome = "read"
except ValueError as error:
    outcome = "refused: " + str(error)[:70]
except Exception as error:
    outcome = f"UNEXPECTED {type(error).__name__}: {str(error)[:60]}"
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
grown = (peak - baseline) / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mib": peak / 1024, "grown_mib": grown}))
"""


def _cases(folder: Path) -> list[tuple[str, str, Path]]:
    """``(name, reader, file)`` for every hostile input, written into ``folder``."""
    import numpy as np

    cases = []

    def write(name: str, reader: str, data: bytes | str) -> None:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        cases.append((name, reader, path))

    for size in (40_000, 1_000_000):
        write(f"escaped_quotes_{size // 1000}kB.json", "demo-annotation", '{"images": "' + '\\"' * (size // 2))
    write("deep_nesting_200kB.json", "box-file", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [1, 2, 1e300, 4]}]}
    write("huge_box.json", "box-file", json.dumps(coco))
    write("csv_field_2MB.csv", "box-file", "image,x,y,w,h,label\na.png,1,2,3,4," + "L" * 2_000_000 + "\n")

    import afloc  # a model folder whose config.json declares a 7 B-parameter BERT
    from afloc import AFLocConfig, ImageEncoderConfig, Preprocessing, build_model, load_tokenizer

    model = build_model(AFLocConfig(image=ImageEncoderConfig(backbone="resnet10", image_size=64)))
    directory = afloc.save_pretrained(model, folder / "huge_model", load_tokenizer(), Preprocessing(64))
    config = json.loads((directory / "config.json").read_text())
    config["text"]["bert_config"].update(
        hidden_size=8192, num_hidden_layers=96, intermediate_size=32768, num_attention_heads=64
    )
    (directory / "config.json").write_text(json.dumps(config))
    cases.append(("huge_model (config.json only)", "model-folder", directory))

    import io
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.arange(192) % 255).astype(np.uint8).reshape(12, 16)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    sof = jpeg.index(b"\xff\xc0")
    huge_frame = jpeg[: sof + 5] + struct.pack(">HH", 13_000, 13_000) + jpeg[sof + 9 :]
    write("jpeg_frame_13000x13000.jpg", "image", huge_frame)
    end = jpeg.rindex(b"\xff\xd9")
    write("jpeg_2000_scans.jpg", "image", jpeg[:end] + jpeg[jpeg.index(b"\xff\xda") : end] * 2000 + b"\xff\xd9")
    header = b"BM" + struct.pack("<IHHI", 1078, 0, 0, 1078)
    info = struct.pack("<IiiHHIIiiII", 40, 64, 64, 1, 8, 1, 0, 2835, 2835, 256, 0)
    write("bmp_rle8.bmp", "image", header + info + bytes(1024) + b"\x00\x01")
    sys.path.insert(0, str(ROOT / "tests"))
    from pydicom import uid
    from pydicom.encaps import encapsulate
    from test_io import make_dicom

    dicom = make_dicom(np.zeros((12, 16), np.uint8), transfer_syntax=uid.JPEGBaseline8Bit,
                       pixel_data=encapsulate([huge_frame]))  # fmt: skip
    write("dicom_12x16_carrying_13000x13000_jpeg.dcm", "image", dicom)

    image = Image.fromarray((np.arange(256 * 256) % 251).astype(np.uint8).reshape(256, 256))
    image.save(folder / "plain.png")
    cases.append(("plain.png (reference)", "image", folder / "plain.png"))
    cases += [(name, "demo-decode", path) for name, reader, path in list(cases) if reader == "image"]
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, reader, path in _cases(Path(tmp)):
            size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
            result = subprocess.run(
                [sys.executable, "-c", PROBE, reader, str(path), str(Path(tmp) / "plain.png")],
                capture_output=True, text=True, cwd=ROOT, timeout=600,
                env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": ""},
            )  # fmt: skip
            measured = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}
            rows.append({"file": name, "bytes": size, "reader": reader, **measured})
    print("| file | bytes | reader | outcome | s (the read alone) | peak RSS MiB (grown by the read) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['file']} | {row['bytes']} | {row['reader']} | {row.get('outcome', 'crashed')} | "
            f"{row.get('seconds', float('nan')):.3f} | {row.get('peak_mib', float('nan')):.0f} "
            f"({row.get('grown_mib', float('nan')):.0f}) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
