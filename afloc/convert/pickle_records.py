"""What the restricted unpickler may build, and the limits it works within (see :mod:`afloc.convert.safe_unpickler`).

The whitelist of globals (made anew for every load), the tensor records that stand for tensors until their
bytes are read, the inert placeholder for every other class, the rules for dict keys and constructor
arguments, the :class:`Budget` of a load, and the one-pass check of how deeply the built objects nest.
"""

from __future__ import annotations

import time
import types
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The pickle references code that would run commands or code, or tries to modify an object it did not build."""


class CorruptCheckpointError(ValueError):
    """The file is truncated, corrupt, not a PyTorch checkpoint, or exceeds a :class:`Budget`."""


class UnsupportedCheckpointError(ValueError):
    """A valid checkpoint in a variant this reader does not handle (big-endian byte order)."""


class BudgetExceededError(CorruptCheckpointError):
    """The checkpoint needs more work or memory than its :class:`Budget` allows."""


@dataclass(frozen=True)
class Budget:
    """Limits of one checkpoint load; a file exceeding any of them is refused (:class:`BudgetExceededError`).

    The defaults are 10-100x what the authors' released checkpoints need, and keep any crafted file of under
    1 MB within about 2 s and 200 MB (``benchmarks/README.md``, "Hostile checkpoints").

    Attributes:
        max_opcodes: pickle opcodes executed, summed over the pickles of the file.
        max_memo: memo entries of one pickle.
        max_depth: nesting depth of containers (MARK stack, and the built object graph).
        max_placeholders: distinct unknown classes replaced by :class:`Inert` placeholders.
        max_seconds: wall time of unpickling, and again of :meth:`Checkpoint.materialize`.
        max_pickle_bytes: size of the (decompressed) pickle itself.
        max_entry_bytes: size of one tensor storage.
        max_total_bytes: storage bytes read plus tensor bytes built, over the whole file.
        max_expansion, expansion_allowance: the same total may also not exceed
            ``expansion_allowance + max_expansion * file size``: a small file cannot make large tensors, whether
            by a deflate bomb or by many views of one storage.
    """

    max_opcodes: int = 1_000_000
    max_memo: int = 500_000
    max_depth: int = 100
    max_placeholders: int = 1_000
    max_seconds: float = 30.0
    max_pickle_bytes: int = 64 << 20
    max_entry_bytes: int = 4 << 30
    max_total_bytes: int = 32 << 30
    max_expansion: float = 4.0
    expansion_allowance: int = 64 << 20

    def byte_limit(self, file_size: int) -> int:
        """Most storage + tensor bytes a file of ``file_size`` bytes may produce."""
        return min(self.max_total_bytes, self.expansion_allowance + int(self.max_expansion * file_size))


class Clock:
    """Opcode and wall-time accounting shared by the pickles of one file."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.max_seconds
        self.opcodes = 0

    def check_time(self, what: str = "reading the pickle") -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceededError(f"{what} took longer than the budget of {self.budget.max_seconds:g} s")


# Modules whose mere mention marks an attack: they run commands or code, load code, or open connections. Anything
# else unknown only becomes an inert placeholder, so this list decides "refuse" versus "ignore", not safety.
DANGEROUS_MODULES = frozenset(
    "os posix nt subprocess _posixsubprocess sys importlib runpy shutil socket pty code codeop ctypes "
    "multiprocessing pickle _pickle marshal webbrowser pdb platform signal asyncio _thread pydoc "
    "urllib http ftplib smtplib telnetlib".split()
)
DANGEROUS_BUILTINS = frozenset(
    "eval exec compile open __import__ getattr setattr delattr globals locals vars input breakpoint "
    "exit quit help memoryview".split()
)
SCALAR_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "complex": complex}
CONTAINER_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}  # fmt: skip
_DTYPE_NAMES = {str(dtype).removeprefix("torch."): dtype for dtype in set(_STORAGE_DTYPES.values())}
_ATOMS = (str, bytes, int, float, bool, type(None))
_KEY_INT_LIMIT = 2**61  # below it an int hashes to itself: no crafted collisions
MAX_TENSOR_DIMS = 64


class Inert:
    """Stands in for a class or function the pickle names but that is never imported or called.

    Creating, calling or filling an instance only records the data (``args``, ``kwargs``, ``state``, ``items``,
    ``values``). Each load makes its own subclasses, so nothing recorded outlives the load's objects.
    """

    __slots__ = ("args", "kwargs", "state", "_items", "_values", "_built")
    source = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj._items, obj._values, obj._built = args, kwargs, None, None, None, False
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: :meth:`__new__` recorded the arguments."""

    @property
    def items(self) -> dict:
        return self._items if self._items is not None else {}

    @property
    def values(self) -> list:
        return self._values if self._values is not None else []

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._items is None:
            self._items = {}
        self._items[key] = value

    def append(self, value: Any) -> None:
        if self._values is None:
            self._values = []
        self._values.append(value)

    def extend(self, values: list) -> None:
        for value in values:
            self.append(value)

    def __repr__(self) -> str:
        return f"<inert {self.source}>"


@dataclass(frozen=True, slots=True)
class StorageType:
    """A ``torch.FloatStorage``-like marker: only its dtype matters. Made fresh by every load."""

    dtype: torch.dtype


@dataclass(frozen=True, slots=True)  # slots: a pickle cannot BUILD new attributes onto it
class StorageRef:
    """``numel`` elements of ``dtype`` starting ``offset`` elements into the storage ``key`` of the file, whose
    record declares ``root_numel`` elements (legacy views are slices of a root storage)."""

    key: str
    dtype: torch.dtype
    numel: int
    offset: int = 0
    root_numel: int = -1


@dataclass(frozen=True, slots=True)
class LazyTensor:
    """A tensor of the checkpoint whose data has not been read yet; see ``Checkpoint.materialize``."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size


def type_name(value: Any) -> str:
    """The type of an untrusted value, for error messages (never its ``repr``)."""
    return type(value).__name__


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_TENSOR_DIMS:
        raise CorruptCheckpointError(f"tensor {what} must be a tuple of at most {MAX_TENSOR_DIMS} integers")
    if not all(type(v) is int and 0 <= v < 2**62 for v in value):
        raise CorruptCheckpointError(f"tensor {what} must hold integers in [0, 2**62)")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef) or type(storage_offset) is not int or not 0 <= storage_offset < 2**62:
        raise CorruptCheckpointError(
            f"malformed tensor record (storage {type_name(storage)}, offset {type_name(storage_offset)})"
        )
    return LazyTensor(storage, storage_offset, _ints(size, "size"), _ints(stride, "stride"), storage.dtype)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    tensor = _rebuild_tensor_v2(storage, storage_offset, size, stride)
    if not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError(f"malformed tensor record (dtype is a {type_name(dtype)})")
    return LazyTensor(tensor.storage, tensor.offset, tensor.size, tensor.stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, LazyTensor):
        raise CorruptCheckpointError(f"malformed parameter record (data is a {type_name(data)})")
    return data  # a Parameter is just its tensor here


_REBUILDERS = (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor subclass or a tensor with Python attributes: keep the plain tensor, drop type and attributes."""
    if getattr(func, "__code__", None) not in {f.__code__ for f in _REBUILDERS} or type(args) is not tuple:
        raise CorruptCheckpointError(f"unexpected tensor record ({type_name(func)} with {type_name(args)})")
    return func(*args)


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError(f"unexpected _codecs.encode of a {type_name(text)} in the pickle")
    return text.encode("latin1")


def _copy(function: types.FunctionType) -> types.FunctionType:
    """A private copy of one of our functions, so that nothing a load does can alter this module's."""
    return types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__)


def global_table() -> dict[tuple[str, str], Any]:
    """The whitelist, built anew for every load (fresh markers and function copies)."""
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _copy(_latin1_encode),
        ("torch._utils", "_rebuild_tensor_v2"): _copy(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _copy(_rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _copy(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _copy(_rebuild_parameter),
        ("torch._tensor", "_rebuild_from_type_v2"): _copy(_rebuild_from_type_v2),
        ("torch", "Tensor"): "torch.Tensor",  # only ever an argument of _rebuild_from_type_v2, which ignores it
        ("torch.nn.parameter", "Parameter"): "torch.nn.Parameter",
        ("torch.storage", "UntypedStorage"): StorageType(torch.uint8),
    }
    table.update({("builtins", name): value for name, value in {**SCALAR_TYPES, **CONTAINER_TYPES}.items()})
    table.update({("torch", name): StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})
    table.update({("torch", name): dtype for name, dtype in _DTYPE_NAMES.items()})
    return table


def check_key(key: Any, where: str) -> None:
    """Dict keys and set elements: scalars, or flat tuples of up to 16 scalars (cheap, collision-free hashing)."""
    if type(key) is tuple and len(key) <= 16:
        for item in key:
            check_key(item, where) if type(item) is not tuple else _bad_key(item, where)
        return
    if type(key) in (str, bytes, bool, type(None)) or (type(key) is int and -_KEY_INT_LIMIT < key < _KEY_INT_LIMIT):
        return
    _bad_key(key, where)


def _bad_key(key: Any, where: str) -> None:
    raise CorruptCheckpointError(
        f"a {where} is a {type_name(key)}; only strings, bytes, integers below 2**61, booleans, None and flat "
        "tuples of these are accepted"
    )


def _flat(value: Any, what: str) -> list | tuple | set | frozenset:
    if type(value) not in (list, tuple, set, frozenset):
        raise CorruptCheckpointError(f"{what} of a {type_name(value)} is not accepted")
    return value


def construct(cls: type, args: tuple) -> Any:
    """``cls(*args)`` for a whitelisted builtin type, with only arguments that make it cheap."""
    if cls in SCALAR_TYPES.values():
        if len(args) > 2 or not all(type(a) in _ATOMS for a in args):
            raise CorruptCheckpointError(f"{cls.__name__}() of {', '.join(map(type_name, args))} is not accepted")
        return cls(*args)
    if len(args) > 1:
        raise CorruptCheckpointError(f"{cls.__name__}() with {len(args)} arguments is not accepted")
    if not args:
        return cls()
    if cls in (dict, OrderedDict):
        source = args[0]
        pairs = source.items() if type(source) in (dict, OrderedDict) else _flat(source, f"{cls.__name__}()")
        result = cls()
        for pair in pairs:
            if type(source) not in (dict, OrderedDict) and (type(pair) not in (tuple, list) or len(pair) != 2):
                raise CorruptCheckpointError(f"{cls.__name__}() needs (key, value) pairs")
            check_key(pair[0], "dict key")
            result[pair[0]] = pair[1]
        return result
    items = _flat(args[0], f"{cls.__name__}()")
    if cls in (set, frozenset):
        for item in items:
            check_key(item, "set element")
    return cls(items)


def _children(obj: Any) -> tuple | list:
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        return obj if kind in (list, tuple) else tuple(obj)
    if kind in (dict, OrderedDict):
        return tuple(obj.values())  # keys are scalars or flat tuples (check_key)
    if isinstance(obj, Inert) and not isinstance(obj, type):
        return (obj.args, obj.kwargs, obj.state, obj._items, obj._values)
    return ()


def check_nesting(root: Any, clock: Clock) -> None:
    """Refuse an object graph nested deeper than the budget; visits each object once (iterative, no recursion).

    Depth is the longest chain of containers, not counting edges back to an object being visited (cycles).
    """
    limit = clock.budget.max_depth
    height: dict[int, int] = {}
    on_path: set[int] = {id(root)}
    path: list[tuple[Any, Any]] = [(root, iter(_children(root)))]
    visited = 0
    while path:
        obj, children = path[-1]
        for child in children:
            key = id(child)
            if key not in height and key not in on_path and _children(child):
                if len(path) >= limit:
                    raise BudgetExceededError(f"the checkpoint's objects nest deeper than {limit} levels")
                on_path.add(key)
                path.append((child, iter(_children(child))))
                break
        else:
            path.pop()
            on_path.discard(id(obj))
            height[id(obj)] = 1 + max((height.get(id(c), 0) for c in _children(obj)), default=0)
            if height[id(obj)] > limit:
                raise BudgetExceededError(f"the checkpoint's objects nest deeper than {limit} levels")
            visited += 1
            if not visited & 0x3FF:
                clock.check_time("checking the checkpoint's structure")
