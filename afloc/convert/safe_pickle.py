"""Reading PyTorch checkpoints written by others without executing any of their pickled code.

``torch.load(weights_only=False)`` runs whatever the pickle asks for, and ``weights_only=True`` refuses the
whole file as soon as it meets an object it does not know (the authors' checkpoints carry a pickled OmegaConf
config). This reader sits in between: its unpickler only ever hands out

- our own tensor-rebuilding functions (tensors come back as :class:`LazyTensor` references, read on demand),
- plain containers and scalar types (``dict``, ``OrderedDict``, ``list``, ``set``, ``int``, ...),
- torch dtype / storage-type markers, and ``_codecs.encode`` for latin-1 bytes (how protocol 2 stores bytes);

a global from a module that runs commands or code, or touches files or the network (``os.system``,
``subprocess``, ``builtins.eval``...), makes the checkpoint refused outright (:class:`UnsafeCheckpointError`);
any other global becomes an inert placeholder class that records its arguments and does nothing. No module
named by the file is ever imported.

Both serialisation formats are read: the zip archive ``torch.save`` writes since torch 1.6, and the legacy
stream of pickles written before (or with ``_use_new_zipfile_serialization=False``).

Hostile files (issue #14) cannot change shared objects, hang or exhaust memory: the unpickler
(:mod:`afloc.convert.safe_unpickler`) builds every load's objects afresh and keeps to a :class:`Budget` (opcodes, memo,
nesting, wall time); here, every entry's size is checked against the tensor records before it is read or
inflated, the bytes read and tensors built are counted against the budget (a small file cannot make large
tensors), traversals visit each object once, and error messages name types and keys, never untrusted values.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .pickle_records import (
    Budget,
    BudgetExceededError,
    Clock,
    CorruptCheckpointError,
    Inert,
    LazyTensor,
    StorageRef,
    StorageType,
    UnsafeCheckpointError,
    UnsupportedCheckpointError,
    check_nesting,
    global_table,
    type_name,
)
from .safe_unpickler import RestrictedUnpickler

__all__ = [
    "Budget", "BudgetExceededError", "Checkpoint", "CorruptCheckpointError", "Inert", "LazyTensor",
    "RestrictedUnpickler", "StorageRef", "UnsafeCheckpointError", "UnsupportedCheckpointError", "load_checkpoint",
]  # fmt: skip

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy torch.save stream
_MAX_KEY_CHARS = 200


def _storage_record(pid: tuple) -> StorageRef:
    """``("storage", storage_type, key, location, numel[, view_metadata])`` -> :class:`StorageRef`.

    Legacy views ``(view_key, offset, numel)`` are slices of the root storage in its elements (torch's
    ``_legacy_load``): the slice must lie inside the root.
    """
    if len(pid) not in (5, 6) or not isinstance(pid[1], StorageType):
        raise CorruptCheckpointError("malformed storage record (expected storage type, key, location, size)")
    key, numel = pid[2], pid[4]
    if type(key) is not str or not 0 < len(key) <= _MAX_KEY_CHARS:
        raise CorruptCheckpointError(f"storage key is a {type_name(key)}, not a short string")
    if type(numel) is not int or not 0 <= numel < 2**62:
        raise CorruptCheckpointError(f"storage {key}: its element count is not an integer in [0, 2**62)")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
        return StorageRef(key, pid[1].dtype, numel, 0, numel)
    if type(view) is not tuple or len(view) != 3 or not all(type(v) is int for v in view[1:]):
        raise CorruptCheckpointError(f"storage {key}: malformed view record (expected key, offset, size)")
    _, offset, size = view
    if offset < 0 or size < 0 or offset + size > numel:
        raise CorruptCheckpointError(
            f"storage {key}: a view of elements [{offset}, {offset + size}) lies outside its {numel} elements"
        )
    return StorageRef(key, pid[1].dtype, size, offset, numel)


@dataclass
class Checkpoint:
    """An unpickled checkpoint: ``data`` with :class:`LazyTensor` leaves, and where their bytes are.

    Use it as a context manager (or call :meth:`close`) to release the file.

    Attributes:
        path: the file.
        data: the unpickled object.
        placeholders: ``module.name`` of every global replaced by an inert placeholder (e.g. the OmegaConf
            classes of a pickled config).
        format: ``"zip"`` or ``"legacy"``.
        budget: the limits the load was held to; :meth:`materialize` keeps to them too.
    """

    path: Path
    data: Any
    placeholders: set[str]
    format: str
    _read: Any = None
    _close: Any = None
    budget: Budget = field(default_factory=Budget)
    _produced: int = 0

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def _corrupt(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"truncated or corrupt checkpoint {self.path}: {message}")

    def _spend(self, nbytes: int, what: str) -> None:
        """Count bytes against the budget before they are read or allocated."""
        limit = self.budget.byte_limit(self.path.stat().st_size)
        if self._produced + nbytes > limit:
            raise BudgetExceededError(
                f"{self.path}: {what} would bring the bytes read and built to {self._produced + nbytes}, over the "
                f"budget of {limit} for a file of {self.path.stat().st_size} bytes"
            )
        self._produced += nbytes

    def materialize(self, obj: Any) -> Any:
        """``obj`` (part of :attr:`data`) with every :class:`LazyTensor` replaced by a real CPU tensor.

        Dicts, lists and tuples are rebuilt; each object is visited once (shared ones stay shared), and a cycle
        through them is refused. Each storage is read once.

        Raises:
            CorruptCheckpointError: truncated data, a tensor outside its storage, a cycle, or a budget exceeded.
        """
        clock = Clock(self.budget)
        storages: dict[str, torch.Tensor] = {}
        done: dict[int, Any] = {}
        try:
            return self._walk(obj, storages, done, set(), 0, clock)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, KeyError, TypeError) as error:
            raise self._corrupt(f"{type(error).__name__}: {str(error)[:200]}") from error
        except MemoryError:
            raise self._corrupt("out of memory while reading tensors") from None

    def _walk(self, obj: Any, storages: dict, done: dict, active: set, depth: int, clock: Clock) -> Any:
        if type(obj) not in (dict, OrderedDict, list, tuple) and not isinstance(obj, LazyTensor):
            return obj
        key = id(obj)
        if key in done:
            return done[key]
        if key in active:
            raise self._corrupt("its containers refer to themselves (a cycle)")
        if depth > self.budget.max_depth:
            raise BudgetExceededError(f"{self.path}: containers nest deeper than {self.budget.max_depth} levels")
        clock.check_time("reading the tensors")
        active.add(key)
        if isinstance(obj, LazyTensor):
            result: Any = self._tensor(obj, storages)
        elif isinstance(obj, dict):
            result = type(obj)((k, self._walk(v, storages, done, active, depth + 1, clock)) for k, v in obj.items())
        else:
            result = type(obj)(self._walk(v, storages, done, active, depth + 1, clock) for v in obj)
        active.discard(key)
        done[key] = result
        return result

    def _tensor(self, lazy: LazyTensor, storages: dict[str, torch.Tensor]) -> torch.Tensor:
        ref = lazy.storage
        element = _element_size(ref.dtype)
        if ref.key not in storages:
            storages[ref.key] = self._read(ref, self)
        raw = storages[ref.key]  # uint8, the whole root storage
        start, stop = ref.offset * element, (ref.offset + ref.numel) * element
        if stop > raw.numel() or (stop - start) % _element_size(lazy.dtype):
            raise self._corrupt(f"storage {ref.key} holds {raw.numel()} bytes; its record needs {stop}")
        flat = raw[start:stop].view(lazy.dtype) if stop > start else torch.empty(0, dtype=lazy.dtype)
        numel = 1
        for size in lazy.size:
            numel *= size
        if numel:
            needed = lazy.offset + sum((s - 1) * st for s, st in zip(lazy.size, lazy.stride, strict=True)) + 1
            if needed > flat.numel():
                raise self._corrupt(
                    f"a tensor of shape {lazy.size} needs {needed} elements of storage {ref.key}, "
                    f"which holds {flat.numel()}"
                )
        self._spend(numel * _element_size(lazy.dtype), f"a tensor of shape {lazy.size}")
        # as_strided's offset counts from the start of the underlying storage, not of the slice: add the slice's
        strided = torch.as_strided(flat, lazy.size, lazy.stride, flat.storage_offset() + lazy.offset)
        return strided.clone(memory_format=torch.contiguous_format)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


_READ_ERRORS = (
    pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, OSError, LookupError, struct.error, ValueError,
    TypeError, AttributeError, IndexError, RuntimeError, RecursionError, OverflowError, UnicodeDecodeError,
)  # fmt: skip


def load_checkpoint(path: str | Path, budget: Budget | None = None) -> Checkpoint:
    """Unpickle a ``torch.save`` file safely (see the module docstring); tensor data is read by ``materialize``.

    Args:
        path: the checkpoint.
        budget: limits on work and memory (default :class:`Budget`).

    Raises:
        UnsafeCheckpointError: the pickle names code that runs commands or code, or modifies objects.
        CorruptCheckpointError: a truncated / corrupt file, not a PyTorch checkpoint, or over the budget
            (:class:`BudgetExceededError`).
        UnsupportedCheckpointError: a big-endian checkpoint.
        ValueError: the file does not exist.
    """
    path = Path(path).expanduser()
    budget = budget or Budget()
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    with path.open("rb") as handle:
        head = handle.read(4)
    clock = Clock(budget)
    try:
        if head.startswith(b"PK"):
            checkpoint = _load_zip(path, clock)
        elif head.startswith(b"\x80\x02\x8a\x0a"):
            checkpoint = _load_legacy(path, clock)
        else:
            raise CorruptCheckpointError(
                f"{path} is not a PyTorch checkpoint (neither the zip format of torch.save nor its legacy pickle "
                f"stream; it starts with {head!r})"
            )
        try:
            check_nesting(checkpoint.data, clock)
        except BaseException:
            checkpoint.close()
            raise
        return checkpoint
    except (UnsafeCheckpointError, UnsupportedCheckpointError):
        raise
    except CorruptCheckpointError as error:
        if str(path) in str(error):
            raise
        raise type(error)(f"truncated or corrupt checkpoint {path}: {error}") from None
    except MemoryError:
        raise CorruptCheckpointError(f"checkpoint {path}: out of memory while unpickling") from None
    except _READ_ERRORS as error:
        raise CorruptCheckpointError(
            f"truncated or corrupt checkpoint {path}: {type(error).__name__}: {str(error)[:200]}"
        ) from None


def _load_zip(path: Path, clock: Clock) -> Checkpoint:
    archive = zipfile.ZipFile(path)  # BadZipFile when truncated: the central directory is at the end
    try:
        return _read_zip_pickle(path, archive, clock)
    except BaseException:
        archive.close()
        raise


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int) -> bytes:
    """An entry's bytes, never inflating more than ``nbytes`` (the size its header declares, already checked)."""
    with archive.open(info) as stream:
        data = stream.read(nbytes + 1)
    if len(data) != nbytes:
        raise CorruptCheckpointError(f"entry {info.filename[:_MAX_KEY_CHARS]} holds a different size than declared")
    return data


def _read_zip_pickle(path: Path, archive: zipfile.ZipFile, clock: Clock) -> Checkpoint:
    budget = clock.budget
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CorruptCheckpointError(f"expected one <name>/data.pkl in the archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    entries = {info.filename: info for info in archive.infolist()}
    order = entries.get(f"{prefix}byteorder")
    if order is not None:
        text = _read_entry(archive, order, order.file_size) if order.file_size <= 16 else b"?"
        if text.decode(errors="replace").strip() != sys.byteorder:
            raise UnsupportedCheckpointError(f"{path} is not {sys.byteorder}-endian like this machine")
    info = entries[pickles[0]]
    if info.file_size > budget.max_pickle_bytes:
        raise BudgetExceededError(f"its pickle is {info.file_size} bytes; the budget is {budget.max_pickle_bytes}")
    checkpoint = Checkpoint(path, None, set(), "zip", None, archive.close, budget)
    checkpoint._spend(info.file_size, "the pickle")
    pickle_bytes = _read_entry(archive, info, info.file_size)

    def read(ref: StorageRef, owner: Checkpoint) -> torch.Tensor:
        name = f"{prefix}data/{ref.key}"
        entry = entries.get(name)
        nbytes = ref.root_numel * _element_size(ref.dtype)
        if entry is None:
            raise owner._corrupt(f"storage {ref.key} is missing from the archive")
        if entry.file_size != nbytes:  # checked from the header, before anything is inflated
            raise owner._corrupt(f"storage {ref.key} holds {entry.file_size} bytes; its record declares {nbytes}")
        if nbytes > budget.max_entry_bytes:
            raise BudgetExceededError(f"{path}: storage {ref.key} is {nbytes} bytes; the budget is "
                                      f"{budget.max_entry_bytes}")  # fmt: skip
        owner._spend(nbytes, f"storage {ref.key}")
        return _bytes_tensor(_read_entry(archive, entry, nbytes))

    placeholders: set[str] = set()
    unpickler = RestrictedUnpickler(io.BytesIO(pickle_bytes), _storage_record, placeholders, clock)
    checkpoint.data, checkpoint.placeholders, checkpoint._read = unpickler.load(), placeholders, read
    return checkpoint


def _load_legacy(path: Path, clock: Clock) -> Checkpoint:
    size = path.stat().st_size
    table = global_table()
    with path.open("rb") as handle:

        def unpickler(storage=None, placeholders=None) -> RestrictedUnpickler:
            return RestrictedUnpickler(handle, storage, placeholders, clock, table)

        if unpickler().load() != LEGACY_MAGIC:
            raise CorruptCheckpointError("invalid magic number")
        unpickler().load()  # protocol version
        info = unpickler().load()
        if isinstance(info, dict) and info.get("little_endian") is False:
            raise UnsupportedCheckpointError(f"{path} is a big-endian legacy checkpoint; they are not supported")
        roots: dict[str, StorageRef] = {}

        def record(pid: tuple) -> StorageRef:
            ref = _storage_record(pid)
            first = roots.setdefault(ref.key, ref)
            if (first.dtype, first.root_numel) != (ref.dtype, ref.root_numel):
                raise CorruptCheckpointError(f"storage {ref.key} is declared with two different types or sizes")
            return ref

        placeholders: set[str] = set()
        data = unpickler(record, placeholders).load()
        keys = unpickler().load()
        if type(keys) is not list:
            raise CorruptCheckpointError(f"the storage list is a {type_name(keys)}")
        spans: dict[str, tuple[int, int]] = {}
        for key in keys:  # then each storage: int64 element count, its bytes
            if type(key) is not str or key not in roots:
                raise CorruptCheckpointError("the storage list names a storage that no tensor uses")
            (count,) = struct.unpack("<q", handle.read(8))
            if count != roots[key].root_numel:
                raise CorruptCheckpointError(f"storage {key} holds {count} elements; its record declares "
                                             f"{roots[key].root_numel}")  # fmt: skip
            nbytes = count * _element_size(roots[key].dtype)
            if handle.tell() + nbytes > size:
                raise CorruptCheckpointError(f"storage {key} ends past the end of the file")
            spans[key] = (handle.tell(), nbytes)
            handle.seek(nbytes, io.SEEK_CUR)

    def read(ref: StorageRef, owner: Checkpoint) -> torch.Tensor:
        if ref.key not in spans:
            raise owner._corrupt(f"storage {ref.key} has no data in the file")
        start, nbytes = spans[ref.key]
        if nbytes > owner.budget.max_entry_bytes:
            raise BudgetExceededError(f"{path}: storage {ref.key} is {nbytes} bytes; the budget is "
                                      f"{owner.budget.max_entry_bytes}")  # fmt: skip
        owner._spend(nbytes, f"storage {ref.key}")
        with path.open("rb") as stream:
            stream.seek(start)
            return _bytes_tensor(stream.read(nbytes))

    return Checkpoint(path, data, placeholders, "legacy", read, None, clock.budget)
