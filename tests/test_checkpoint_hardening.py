"""Hostile checkpoints (issue #14): poisoning, memo-DAG and deflate bombs, legacy views, budgets, CLI errors.

Every file is crafted here, opcode by opcode where ``torch.save`` would never write it.
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import sys
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from afloc.convert import main
from afloc.convert.safe_pickle import (
    Budget,
    BudgetExceededError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
)

PROTO = b"\x80\x02"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def write_zip(path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None, deflate=()) -> Path:
    """A torch.save-style archive; entries named in ``deflate`` are compressed."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes, zipfile.ZIP_DEFLATED if "data.pkl" in deflate else 0)
        archive.writestr("archive/byteorder", sys.byteorder)
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data, zipfile.ZIP_DEFLATED if key in deflate else 0)
    return path


def tensor_record(key: str, numel: int, size: tuple, stride: tuple, storage="FloatStorage", offset=0) -> bytes:
    """``_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())``."""

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    pid = b"(" + text("storage") + glob("torch", storage) + text(key) + text("cpu") + b"J" + struct.pack("<i", numel)
    return (
        glob("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + pid
        + b"tQ"
        + b"J"
        + struct.pack("<i", offset)
        + ints(size)
        + ints(stride)
        + b"\x89"
        + glob("collections", "OrderedDict")
        + b")Rt"
        + b"R"
    )


def state_dict_pickle(*records: tuple[str, bytes]) -> bytes:
    body = b"".join(text(name) + record for name, record in records)
    return PROTO + b"}" + text("state_dict") + b"}(" + body + b"us."


def fast(fn, seconds: float = 2.0):
    start = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - start < seconds


# ---------------------------------------------------------------- poisoning


def test_build_cannot_poison_shared_markers(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, good)
    poison = PROTO + glob("torch", "FloatStorage") + b"}" + text("dtype") + glob("torch", "int8") + b"sb."
    with pytest.raises(UnsafeCheckpointError, match="FloatStorage|StorageType|modify"):
        load_checkpoint(write_zip(tmp_path / "poison.pt", poison))
    for target in (glob("torch", "float32"), glob("builtins", "dict"), glob("torch._utils", "_rebuild_tensor_v2")):
        with pytest.raises(UnsafeCheckpointError, match="modify"):
            load_checkpoint(write_zip(tmp_path / "p2.pt", PROTO + target + b"}" + text("x") + b"K\x01sb."))
    # a BUILD onto a tensor record (frozen) is refused too
    record = tensor_record("0", 4, (4,), (1,))
    poison_tensor = PROTO + record + b"}" + text("offset") + b"K\x02sb."
    with pytest.raises(UnsafeCheckpointError, match="LazyTensor"):
        load_checkpoint(write_zip(tmp_path / "p3.pt", poison_tensor, {"0": bytes(16)}))
    with load_checkpoint(good) as checkpoint:  # later loads are unaffected
        weights = checkpoint.materialize(checkpoint.data)["w"]
    assert weights.dtype == torch.float32 and torch.equal(weights, torch.arange(4, dtype=torch.float32))


def test_placeholders_are_fresh_per_load_and_built_once(tmp_path):
    built = PROTO + glob("omegaconf", "DictConfig") + b")\x81}" + text("a") + b"K\x01sb."
    path = write_zip(tmp_path / "cfg.pt", built)
    with load_checkpoint(path) as first, load_checkpoint(path) as second:
        assert first.data.state == {"a": 1} and type(first.data) is not type(second.data)
    twice = PROTO + glob("omegaconf", "DictConfig") + b")\x81}b}b."
    with pytest.raises(CorruptCheckpointError, match="twice"):
        load_checkpoint(write_zip(tmp_path / "twice.pt", twice))
    html = PROTO + glob("x", "<img src=x>") + b"."
    with pytest.raises(CorruptCheckpointError, match="not a Python identifier"):
        load_checkpoint(write_zip(tmp_path / "html.pt", html))


# ---------------------------------------------------------------- bombs


def dag_pickle(levels: int) -> bytes:
    """A list DAG: level i is [level i-1, level i-1]; 2**levels leaves in ~12 bytes per level."""
    out = b"]" + put(0)
    for level in range(1, levels + 1):
        out += b"0](" + get(level - 1) + get(level - 1) + b"e" + put(level)
    return out


@pytest.mark.parametrize("consumer", ["str", "set", "dict key", "frozenset"])
def test_memo_dag_bomb_is_refused_quickly(tmp_path, consumer):
    dag = dag_pickle(90)
    top = get(90)
    tuple_dag = top + b"\x85"  # (dag,) : a tuple holding the DAG
    tail = {
        "str": glob("builtins", "str") + b"(" + top + b"tR.",
        "set": glob("builtins", "set") + top + b"\x85\x85R.",
        "dict key": b"}" + tuple_dag + b"K\x01s.",
        "frozenset": b"(" + tuple_dag + b"\x91.",
    }[consumer]
    path = write_zip(tmp_path / "dag.pt", PROTO + dag + tail)
    with pytest.raises(CorruptCheckpointError) as error:
        fast(lambda: load_checkpoint(path))
    assert len(str(error.value)) < 500


def test_shared_dag_of_data_loads_and_materializes_in_linear_time(tmp_path):
    path = write_zip(tmp_path / "dag.pt", PROTO + dag_pickle(60) + b".")
    with load_checkpoint(path) as checkpoint:
        result = fast(lambda: checkpoint.materialize(checkpoint.data))
    assert result[0] is result[1]  # shared objects stay shared: visited once
    deep = write_zip(tmp_path / "deep.pt", PROTO + dag_pickle(150) + b".")
    with pytest.raises(BudgetExceededError, match="nest deeper"):
        fast(lambda: load_checkpoint(deep))
    marks = write_zip(tmp_path / "marks.pt", PROTO + b"(" * 100_000 + b".")
    with pytest.raises(BudgetExceededError, match="nests deeper"):
        fast(lambda: load_checkpoint(marks))


def test_opcode_memo_and_placeholder_budgets(tmp_path):
    loop = write_zip(tmp_path / "loop.pt", PROTO + b"N0" * 600_000 + b"N.")
    with pytest.raises(BudgetExceededError, match="opcodes"):
        fast(lambda: load_checkpoint(loop))
    memo = write_zip(tmp_path / "memo.pt", PROTO + b"N" + b"".join(put(i) for i in range(200)) + b".")
    with pytest.raises(BudgetExceededError, match="memo"):
        load_checkpoint(memo, Budget(max_memo=100))
    classes = PROTO + b"".join(glob("m", f"C{i}") + b"0" for i in range(1001)) + b"N."
    with pytest.raises(BudgetExceededError, match="classes"):
        fast(lambda: load_checkpoint(write_zip(tmp_path / "classes.pt", classes)))
    colliding = PROTO + b"}(" + b"".join(b"\x8a\x09" + (k * (2**61 - 1)).to_bytes(9, "little") + b"N" for k in (1, 2))
    with pytest.raises(CorruptCheckpointError, match="dict key is a int"):
        load_checkpoint(write_zip(tmp_path / "hash.pt", colliding + b"u."))
    with pytest.raises(BudgetExceededError, match="longer than"):
        load_checkpoint(loop, Budget(max_seconds=0.0, max_opcodes=10**7))


def test_deflate_bomb_in_a_storage_entry_is_refused_before_inflating(tmp_path):
    numel = 32 << 20  # 128 MiB of float32 zeros, about 130 KB deflated
    pickle_bytes = state_dict_pickle(("w", tensor_record("0", numel, (numel,), (1,))))
    path = write_zip(tmp_path / "bomb.pt", pickle_bytes, {"0": bytes(numel * 4)}, deflate=("0",))
    assert path.stat().st_size < 1_000_000
    with load_checkpoint(path) as checkpoint:
        with pytest.raises(BudgetExceededError, match="storage 0 would bring"):
            fast(lambda: checkpoint.materialize(checkpoint.data))
    # an entry whose header declares another size than the tensor record
    lying = write_zip(tmp_path / "lying.pt", state_dict_pickle(("w", tensor_record("0", 4, (4,), (1,)))), {"0": b"x"})
    with load_checkpoint(lying) as checkpoint, pytest.raises(CorruptCheckpointError, match="holds 1 bytes"):
        checkpoint.materialize(checkpoint.data)


def test_deflate_bomb_in_the_pickle_entry_is_refused(tmp_path):
    path = write_zip(tmp_path / "pkl.pt", PROTO + b"N0" * (33 << 20) + b"N.", deflate=("data.pkl",))
    with pytest.raises(BudgetExceededError, match="pickle is .* bytes"):
        fast(lambda: load_checkpoint(path))


def test_many_views_of_a_small_storage_cannot_build_large_tensors(tmp_path):
    pickle_bytes = state_dict_pickle(("w", tensor_record("0", 1, (100_000_000,), (0,))))
    path = write_zip(tmp_path / "views.pt", pickle_bytes, {"0": bytes(4)})
    with load_checkpoint(path) as checkpoint, pytest.raises(BudgetExceededError, match="shape"):
        fast(lambda: checkpoint.materialize(checkpoint.data))


# ---------------------------------------------------------------- legacy views


class _Storage:
    def __init__(self, pid):
        self.pid = pid


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def write_legacy(path: Path, obj, storages: dict[str, torch.Tensor]) -> Path:
    """The pre-1.6 ``torch.save`` stream: magic, protocol, sys info, data, storage keys, raw storages."""
    with path.open("wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        _LegacyPickler(handle, protocol=2).dump(obj)
        pickle.dump(list(storages), handle, protocol=2)
        for values in storages.values():
            handle.write(struct.pack("<q", values.numel()) + values.numpy().tobytes())
    return path


def test_legacy_views_load_their_slice(tmp_path):
    root = torch.arange(10, dtype=torch.float32)
    view = _Storage(("storage", torch.FloatStorage, "root", "cpu", 10, ("view", 4, 3)))
    whole = _Storage(("storage", torch.FloatStorage, "root", "cpu", 10, None))
    obj = {"view": _Tensor(view, 1, (2,), (1,)), "whole": _Tensor(whole, 0, (10,), (1,))}
    path = write_legacy(tmp_path / "legacy.pt", obj, {"root": root})
    with load_checkpoint(path) as checkpoint:
        ours = checkpoint.materialize(checkpoint.data)
    assert torch.equal(ours["view"], torch.tensor([5.0, 6.0])) and torch.equal(ours["whole"], root)
    reference = torch.load(path, weights_only=True)  # torch's own legacy reader agrees
    assert torch.equal(ours["view"], reference["view"])
    for offset, size in ((-1, 3), (8, 3), (0, 11)):
        bad = _Storage(("storage", torch.FloatStorage, "root", "cpu", 10, ("view", offset, size)))
        path = write_legacy(tmp_path / "bad.pt", {"w": _Tensor(bad, 0, (1,), (1,))}, {"root": root})
        with pytest.raises(CorruptCheckpointError, match="outside its 10 elements"):
            load_checkpoint(path)


def test_legacy_storage_list_must_name_strings(tmp_path):
    whole = _Storage(("storage", torch.FloatStorage, "root", "cpu", 2, None))
    path = write_legacy(tmp_path / "keys.pt", {"w": _Tensor(whole, 0, (2,), (1,))}, {"root": torch.zeros(2)})
    data = path.read_bytes().replace(pickle.dumps(["root"], protocol=2), pickle.dumps([[1] * 4], protocol=2))
    path.write_bytes(data)
    with pytest.raises(CorruptCheckpointError, match="storage list"):
        load_checkpoint(path)


# ---------------------------------------------------------------- messages and the CLI


def test_errors_name_types_not_values(tmp_path):
    huge = "A" * 200_000
    path = write_zip(tmp_path / "msg.pt", PROTO + glob("builtins", "int") + b"(" + b"]" + text(huge) + b"atR.")
    with pytest.raises(CorruptCheckpointError) as error:
        load_checkpoint(path)
    assert "int() of list" in str(error.value) and len(str(error.value)) < 500


@pytest.mark.parametrize(
    "payload",
    [
        state_dict_pickle().replace(b"}(us.", b"}(K\x01" + tensor_record("0", 1, (1,), (1,)) + b"us."),
        PROTO + b"}" + text("state_dict") + b"}" + text("afloc.x") + dag_pickle(40) + b"ss.",
        PROTO + b"(" * 5000 + b".",
        PROTO + glob("os", "system") + b"(" + text("echo hi") + b"tR.",
        b"PK\x03\x04 truncated",
    ],
    ids=["integer key", "dag value", "deep", "os.system", "truncated zip"],
)
def test_cli_reports_one_line_and_exit_code_1(tmp_path, capsys, payload, tokenizer_dir):
    path = tmp_path / "evil.ckpt"
    if payload.startswith(b"PK"):
        path.write_bytes(payload)
    else:
        write_zip(path, payload, {"0": bytes(4)})
    code = fast(lambda: main(["authors", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and len(err) < 2100
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.fixture
def tokenizer_dir(tmp_path, vocab_file) -> Path:
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    shutil.copy(vocab_file, folder / "vocab.txt")
    return folder


def test_a_real_checkpoint_still_loads(tmp_path):
    state = {"a": torch.randn(3, 4), "b": torch.arange(6).reshape(2, 3)[:, 1:], "c": torch.tensor(True)}
    data = {"state_dict": OrderedDict(state), "meta": {"epoch": 3, ("x", 1): b"\x00", "s": {1, 2}}}
    for legacy in (False, True):
        path = tmp_path / f"real{legacy}.pt"
        torch.save(data, path, _use_new_zipfile_serialization=not legacy)
        with load_checkpoint(path) as checkpoint:
            loaded = checkpoint.materialize(checkpoint.data["state_dict"])
            assert checkpoint.data["meta"] == data["meta"]
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert len(buffer.getvalue()) < 10_000


def test_a_lookup_error_while_reading_is_a_corrupt_checkpoint(tmp_path, monkeypatch):
    """Issue #33: a crafted pickle made the reader raise ``LookupError`` (e.g. an unknown codec), which no caller
    expected; every read error is a ``CorruptCheckpointError`` (a ``ValueError``) naming the file."""
    import afloc.convert.safe_pickle as safe_pickle

    path = write_zip(tmp_path / "model.pt", PROTO + b"}.")

    def lookup_failure(*args, **kwargs):
        raise LookupError("unknown encoding: rot-13-ish")

    monkeypatch.setattr(safe_pickle, "_load_zip", lookup_failure)
    with pytest.raises(CorruptCheckpointError, match="LookupError") as error:
        load_checkpoint(path)
    assert isinstance(error.value, ValueError)
