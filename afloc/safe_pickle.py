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
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
import sys
import types
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy torch.save stream


class UnsafeCheckpointError(ValueError):
    """The pickle references code that would run commands, code, or file / network access."""


class CorruptCheckpointError(ValueError):
    """The file is truncated, corrupt, or not a PyTorch checkpoint."""


class UnsupportedCheckpointError(ValueError):
    """A valid checkpoint in a variant this reader does not handle (big-endian byte order)."""


# Modules whose mere mention marks an attack: they run commands or code, load code, or open connections. Anything
# else unknown only becomes an inert placeholder, so this list decides "refuse" versus "ignore", not safety.
_DANGEROUS_MODULES = frozenset(
    "os posix nt subprocess _posixsubprocess sys importlib runpy shutil socket pty code codeop ctypes "
    "multiprocessing pickle _pickle marshal webbrowser pdb platform signal asyncio _thread pydoc "
    "urllib http ftplib smtplib telnetlib".split()
)
_DANGEROUS_BUILTINS = frozenset(
    "eval exec compile open __import__ getattr setattr delattr globals locals vars input breakpoint "
    "exit quit help memoryview".split()
)
_SAFE_BUILTINS = {
    "dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
    "int": int, "float": float, "str": str, "bool": bool, "complex": complex,
}  # fmt: skip
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}  # fmt: skip
_DTYPE_NAMES = {str(dtype).removeprefix("torch."): dtype for dtype in set(_STORAGE_DTYPES.values())}


class Inert:
    """Stands in for a class or function the pickle names but that is never imported or called.

    Creating, calling or filling an instance only records the data (``args``, ``state``, ``items``, ``values``).
    """

    source = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.values = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: :meth:`__new__` recorded the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.source}>"


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True, slots=True)  # slots: a pickle cannot BUILD new attributes onto it
class StorageRef:
    """A storage of the file: ``numel`` elements of ``dtype`` under ``key`` (plus an element offset for the
    views of the legacy format)."""

    key: str
    dtype: torch.dtype
    numel: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class LazyTensor:
    """A tensor of the checkpoint whose data has not been read yet; see :meth:`Checkpoint.materialize`."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
        raise CorruptCheckpointError(f"tensor {what} must be a tuple of integers, got {value!r}")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef) or not isinstance(storage_offset, int):
        raise CorruptCheckpointError(f"malformed tensor record (storage {storage!r}, offset {storage_offset!r})")
    return LazyTensor(storage, storage_offset, _ints(size, "size"), _ints(stride, "stride"), storage.dtype)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    tensor = _rebuild_tensor_v2(storage, storage_offset, size, stride)
    if not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError(f"malformed tensor record (dtype {dtype!r})")
    return LazyTensor(tensor.storage, tensor.offset, tensor.size, tensor.stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data  # a Parameter is just its tensor here


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor subclass or a tensor with Python attributes: keep the plain tensor, drop type and attributes."""
    rebuilders = (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)
    if getattr(func, "__code__", None) not in {f.__code__ for f in rebuilders} or not isinstance(args, tuple):
        raise CorruptCheckpointError(f"unexpected tensor record {func!r}{args!r}")
    return func(*args)


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r}) in pickle")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): "torch.Tensor",  # only ever an argument of _rebuild_from_type_v2, which ignores it
    ("torch.nn.parameter", "Parameter"): "torch.nn.Parameter",
    **{("builtins", name): value for name, value in _SAFE_BUILTINS.items()},
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType(torch.uint8),
    **{("torch", name): dtype for name, dtype in _DTYPE_NAMES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals through :data:`_SAFE_GLOBALS` and never imports anything.

    Args:
        file: binary stream positioned at a pickle.
        storage: ``persistent_load`` handler for torch storage records, or ``None`` if none are allowed.
        placeholders: receives the ``module.name`` of every global replaced by an :class:`Inert` class.
    """

    def __init__(self, file, storage=None, placeholders: set[str] | None = None) -> None:
        super().__init__(file)
        self._storage = storage
        self.placeholders = placeholders if placeholders is not None else set()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__.set``), as protocol 2 (torch.save's default) writes them: a table lookup
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            value = _SAFE_GLOBALS[module, name]
            if isinstance(value, types.FunctionType):  # a private copy: BUILD on it cannot alter this module
                value = types.FunctionType(value.__code__, value.__globals__, value.__name__, value.__defaults__)
            return value
        root = module.split(".")[0]
        if root in _DANGEROUS_MODULES or (root == "builtins" and name in _DANGEROUS_BUILTINS):
            raise UnsafeCheckpointError(
                f"refused: the pickle references {module}.{name}, which can run commands or code or access files; "
                "no checkpoint needs it, so the file was not loaded and nothing in it was executed"
            )
        self.placeholders.add(f"{module}.{name}")
        return type(name, (Inert,), {"source": f"{module}.{name}", "__module__": __name__})

    def persistent_load(self, pid: Any) -> Any:
        if self._storage is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CorruptCheckpointError(f"unexpected persistent id {pid!r} in pickle")
        return self._storage(pid)


def _storage_record(pid: tuple) -> StorageRef:
    """``("storage", storage_type, key, location, numel[, view_metadata])`` -> :class:`StorageRef`."""
    if len(pid) not in (5, 6) or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int):
        raise CorruptCheckpointError(f"malformed storage record {pid!r}")
    ref = StorageRef(str(pid[2]), pid[1].dtype, pid[4])
    view = pid[5] if len(pid) == 6 else None
    if view is not None:  # legacy views: (view_key, element offset, element count) of the root storage
        _, offset, size = view
        ref = StorageRef(ref.key, ref.dtype, int(size), int(offset))
    return ref


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
    """

    path: Path
    data: Any
    placeholders: set[str]
    format: str
    _read: Any = None
    _close: Any = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def materialize(self, obj: Any) -> Any:
        """``obj`` (part of :attr:`data`) with every :class:`LazyTensor` replaced by a real CPU tensor."""
        cache: dict[str, torch.Tensor] = {}
        try:
            return self._walk(obj, cache)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, KeyError, TypeError) as error:
            raise CorruptCheckpointError(f"truncated or corrupt checkpoint {self.path}: {error}") from error

    def _walk(self, obj: Any, cache: dict[str, torch.Tensor]) -> Any:
        if isinstance(obj, LazyTensor):
            return self._tensor(obj, cache)
        if isinstance(obj, dict):
            return type(obj)((k, self._walk(v, cache)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._walk(v, cache) for v in obj)
        return obj

    def _corrupt(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"truncated or corrupt checkpoint {self.path}: {message}")

    def _tensor(self, lazy: LazyTensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        ref = lazy.storage
        if ref.key not in cache:
            cache[ref.key] = self._read(ref)
        raw = cache[ref.key]  # uint8
        start = ref.offset * _element_size(ref.dtype)
        stop = start + ref.numel * _element_size(ref.dtype)
        if stop > raw.numel() or (stop - start) % _element_size(lazy.dtype):
            raise self._corrupt(f"storage {ref.key} holds {raw.numel()} bytes; its record needs {stop}")
        flat = raw[start:stop].view(lazy.dtype) if stop > start else torch.empty(0, dtype=lazy.dtype)
        if any(s < 0 for s in lazy.size) or any(st < 0 for st in lazy.stride) or lazy.offset < 0:
            raise self._corrupt(f"negative size, stride or offset in a tensor of storage {ref.key}")
        if all(s > 0 for s in lazy.size):
            needed = lazy.offset + sum((s - 1) * st for s, st in zip(lazy.size, lazy.stride, strict=True)) + 1
            if needed > flat.numel():
                raise self._corrupt(
                    f"a tensor of shape {lazy.size} needs {needed} elements of storage {ref.key}, "
                    f"which holds {flat.numel()}"
                )
        return torch.as_strided(flat, lazy.size, lazy.stride, lazy.offset).clone(memory_format=torch.contiguous_format)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


_READ_ERRORS = (
    pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, struct.error, ValueError,
    TypeError, AttributeError, IndexError, RuntimeError, MemoryError, RecursionError,
)  # fmt: skip


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Unpickle a ``torch.save`` file safely (see the module docstring); tensor data is read by ``materialize``.

    Raises:
        UnsafeCheckpointError: the pickle names code that runs commands or code.
        CorruptCheckpointError: a truncated / corrupt file, or not a PyTorch checkpoint.
        UnsupportedCheckpointError: a big-endian checkpoint.
        ValueError: the file does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        if head.startswith(b"PK"):
            return _load_zip(path)
        if head.startswith(b"\x80\x02\x8a\x0a"):
            return _load_legacy(path)
    except (UnsafeCheckpointError, UnsupportedCheckpointError):
        raise
    except CorruptCheckpointError as error:
        raise CorruptCheckpointError(f"truncated or corrupt checkpoint {path}: {error}") from error
    except _READ_ERRORS as error:
        raise CorruptCheckpointError(
            f"truncated or corrupt checkpoint {path}: {type(error).__name__}: {error}"
        ) from error
    raise CorruptCheckpointError(
        f"{path} is not a PyTorch checkpoint (neither the zip format of torch.save nor its legacy pickle stream; "
        f"it starts with {head!r})"
    )


def _load_zip(path: Path) -> Checkpoint:
    archive = zipfile.ZipFile(path)  # BadZipFile when truncated: the central directory is at the end
    try:
        return _read_zip_pickle(path, archive)
    except BaseException:
        archive.close()
        raise


def _read_zip_pickle(path: Path, archive: zipfile.ZipFile) -> Checkpoint:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CorruptCheckpointError(f"expected one <name>/data.pkl in the archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in archive.namelist():
        order = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
        if order != sys.byteorder:
            raise UnsupportedCheckpointError(f"{path} is {order}-endian; this machine is {sys.byteorder}-endian")

    def read(ref: StorageRef) -> torch.Tensor:
        return _bytes_tensor(archive.read(f"{prefix}data/{ref.key}"))

    placeholders: set[str] = set()
    unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), _storage_record, placeholders)
    return Checkpoint(path, unpickler.load(), placeholders, "zip", read, archive.close)


def _load_legacy(path: Path) -> Checkpoint:
    size = path.stat().st_size
    with path.open("rb") as handle:
        if RestrictedUnpickler(handle).load() != LEGACY_MAGIC:
            raise CorruptCheckpointError("invalid magic number")
        RestrictedUnpickler(handle).load()  # protocol version
        info = RestrictedUnpickler(handle).load()
        if isinstance(info, dict) and info.get("little_endian") is False:
            raise UnsupportedCheckpointError(f"{path} is a big-endian legacy checkpoint; they are not supported")
        dtypes: dict[str, torch.dtype] = {}

        def record(pid: tuple) -> StorageRef:
            ref = _storage_record(pid)
            dtypes.setdefault(ref.key, ref.dtype)
            return ref

        placeholders: set[str] = set()
        data = RestrictedUnpickler(handle, record, placeholders).load()
        spans: dict[str, tuple[int, int]] = {}
        for key in RestrictedUnpickler(handle).load():  # then each storage: int64 element count, its bytes
            key = str(key)
            if key not in dtypes:
                raise CorruptCheckpointError(f"storage {key} is listed but no tensor uses it")
            (count,) = struct.unpack("<q", handle.read(8))
            nbytes = count * _element_size(dtypes[key])
            if count < 0 or handle.tell() + nbytes > size:
                raise CorruptCheckpointError(f"storage {key} ends past the end of the file")
            spans[key] = (handle.tell(), nbytes)
            handle.seek(nbytes, io.SEEK_CUR)

    def read(ref: StorageRef) -> torch.Tensor:
        start, nbytes = spans[ref.key]
        with path.open("rb") as stream:
            stream.seek(start)
            return _bytes_tensor(stream.read(nbytes))

    return Checkpoint(path, data, placeholders, "legacy", read)
