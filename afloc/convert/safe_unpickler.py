"""A budgeted, restricted unpickler for checkpoints written by others (used by :mod:`afloc.convert.safe_pickle`).

It is a subclass of Python's pure-Python unpickler, so that every opcode passes through code we control:

- **No code runs, nothing is imported.** Globals resolve through a table of our own tensor-rebuilding functions,
  plain containers, scalars and torch dtype / storage-type markers; a global from a module that runs commands
  or code or touches files or the network is refused (:class:`UnsafeCheckpointError`); any other global becomes
  an inert placeholder class (:class:`Inert`) that records its arguments.
- **No shared object can be changed.** Every load builds its own table (function copies, storage-type markers,
  placeholder classes). ``BUILD`` (``__setstate__``) is applied only to a fresh placeholder instance, once; on
  an ``OrderedDict`` it is dropped (a state dict's ``_metadata``); on anything else the file is refused.
- **Nothing is slow or large by construction.** Calls to whitelisted constructors take scalars or already-built
  flat containers (a ``str`` of a shared list DAG would be exponential); dict keys and set elements are scalars
  or flat tuples of scalars (hashing a tuple DAG is exponential); and every load has a :class:`Budget`:
  opcodes, memo entries, nesting depth and wall time, checked as the pickle is read.
- **Errors name types, never values**: no ``repr`` of anything the file built.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
import types
from collections import OrderedDict
from typing import Any

from .pickle_records import (
    CONTAINER_TYPES,
    DANGEROUS_BUILTINS,
    DANGEROUS_MODULES,
    SCALAR_TYPES,
    Budget,
    BudgetExceededError,
    Clock,
    CorruptCheckpointError,
    Inert,
    UnsafeCheckpointError,
    check_key,
    construct,
    global_table,
    type_name,
)

_GLOBAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves globals through a per-load whitelist, never imports, and keeps to a budget.

    Args:
        file: binary stream positioned at a pickle.
        storage: ``persistent_load`` handler for torch storage records, or ``None`` if none are allowed.
        placeholders: receives the ``module.name`` of every global replaced by an :class:`Inert` class.
        clock: the budget and time accounting of the file (one per file, shared by its pickles).
        table: the load's whitelist (:func:`global_table`), shared by the pickles of one file.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        file,
        storage=None,
        placeholders: set[str] | None = None,
        clock: Clock | None = None,
        table: dict | None = None,
    ) -> None:
        super().__init__(file)
        self._storage = storage
        self.placeholders = placeholders if placeholders is not None else set()
        self.clock = clock or Clock(Budget())
        self.table = table if table is not None else global_table()
        self._classes: dict[tuple[str, str], type] = {}
        self._callables = {id(v) for v in self.table.values() if callable(v)}

    # ------------------------------------------------------------------ the loop, with the budget
    def load(self) -> Any:
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read, self.readinto, self.readline = self._unframer.read, self._unframer.readinto, self._unframer.readline
        self.metastack, self.stack = [], []
        self.append = self.stack.append
        self.proto = 0
        clock, budget, dispatch, read = self.clock, self.clock.budget, self.dispatch, self.read
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                clock.opcodes += 1
                if clock.opcodes > budget.max_opcodes:
                    raise BudgetExceededError(f"the pickle runs more than {budget.max_opcodes} opcodes")
                if not clock.opcodes & 0x3FF:
                    clock.check_time()
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def _memo_put(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= self.clock.budget.max_memo:
            raise BudgetExceededError(f"the pickle stores more than {self.clock.budget.max_memo} memo entries")
        self.memo[index] = self.stack[-1]

    def load_memoize(self) -> None:
        self._memo_put(len(self.memo))

    def load_put(self) -> None:
        index = int(self.readline()[:-1])
        if index < 0:
            raise CorruptCheckpointError("negative PUT index")
        self._memo_put(index)

    def load_binput(self) -> None:
        self._memo_put(self.read(1)[0])

    def load_long_binput(self) -> None:
        self._memo_put(int.from_bytes(self.read(4), "little"))

    def load_mark(self) -> None:
        if len(self.metastack) >= self.clock.budget.max_depth:
            raise BudgetExceededError(f"the pickle nests deeper than {self.clock.budget.max_depth} levels")
        super().load_mark()

    # ------------------------------------------------------------------ globals
    def find_class(self, module: str, name: str) -> Any:
        if len(module) + len(name) > 200 or not _GLOBAL_NAME.fullmatch(module) or not _GLOBAL_NAME.fullmatch(name):
            raise CorruptCheckpointError("the pickle names a global that is not a Python identifier")
        # Python 2 names (``__builtin__.set``), as protocol 2 (torch.save's default) writes them: a table lookup
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self.table:
            return self.table[module, name]
        root = module.split(".")[0]
        if root in DANGEROUS_MODULES or (root == "builtins" and name in DANGEROUS_BUILTINS):
            raise UnsafeCheckpointError(
                f"refused: the pickle references {module}.{name}, which can run commands or code or access files; "
                "no checkpoint needs it, so the file was not loaded and nothing in it was executed"
            )
        if (module, name) not in self._classes:
            if len(self.placeholders) >= self.clock.budget.max_placeholders:
                raise BudgetExceededError(f"the pickle names more than {self.clock.budget.max_placeholders} classes")
            self.placeholders.add(f"{module}.{name}")
            self._classes[module, name] = type(
                name.rsplit(".", 1)[-1],
                (Inert,),
                {"__slots__": (), "source": f"{module}.{name}", "__module__": __name__},
            )
        return self._classes[module, name]

    def get_extension(self, code: int) -> None:
        raise CorruptCheckpointError("the pickle uses the copyreg extension registry (EXT opcodes); torch never does")

    def persistent_load(self, pid: Any) -> Any:
        if self._storage is None or type(pid) is not tuple or not pid or pid[0] != "storage":
            raise CorruptCheckpointError(f"unexpected persistent id (a {type_name(pid)}) in the pickle")
        return self._storage(pid)

    # ------------------------------------------------------------------ calls: only whitelisted, checked
    def _is_placeholder(self, cls: Any) -> bool:
        return isinstance(cls, type) and cls in self._classes.values()

    def _call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        if type(args) is not tuple or (kwargs is not None and type(kwargs) is not dict):
            raise CorruptCheckpointError(f"call arguments are a {type_name(args)}, not a tuple")
        if self._is_placeholder(func):
            return func(*args, **(kwargs or {}))
        if kwargs:
            raise CorruptCheckpointError("keyword arguments are only accepted for placeholder classes")
        if func in (*SCALAR_TYPES.values(), *CONTAINER_TYPES.values(), OrderedDict):
            return construct(func, args)
        if id(func) in self._callables and isinstance(func, types.FunctionType):
            return func(*args)
        raise CorruptCheckpointError(f"the pickle calls a {type_name(func)}, which is not a known constructor")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not self._is_placeholder(cls) and not (cls in (dict, list, set, OrderedDict) and args == ()):
            raise CorruptCheckpointError(f"NEWOBJ of a {type_name(cls)} is not accepted")
        self.append(self._call(cls, args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not self._is_placeholder(cls):
            raise CorruptCheckpointError(f"NEWOBJ_EX of a {type_name(cls)} is not accepted")
        self.append(self._call(cls, args, kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self._call(klass, tuple(args)))

    # ------------------------------------------------------------------ mutation: fresh objects only
    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, Inert) and not isinstance(target, type):
            if target._built:
                raise CorruptCheckpointError(f"the pickle sets the state of a {type_name(target)} twice")
            target.state, target._built = state, True
        elif type(target) is not OrderedDict:  # a state dict's _metadata: dropped, we never read it
            raise UnsafeCheckpointError(
                f"refused: the pickle tries to modify a {type_name(target)} object (BUILD); only placeholders it "
                "created itself may receive a state"
            )

    def _container(self, types_: tuple, what: str) -> Any:
        target = self.stack[-1]
        if type(target) not in types_ and not (isinstance(target, Inert) and not isinstance(target, type)):
            raise CorruptCheckpointError(f"{what} on a {type_name(target)} is not accepted")
        return target

    def _set_items(self, target: Any, items: list) -> None:
        if len(items) % 2:
            raise CorruptCheckpointError("SETITEMS with an odd number of items")
        for index in range(0, len(items), 2):
            check_key(items[index], "dict key")
            target[items[index]] = items[index + 1]
            if not index & 0x3FF:
                self.clock.check_time()

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self._container((dict, OrderedDict), "SETITEM"), [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self._container((dict, OrderedDict), "SETITEMS"), items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        result: dict = {}
        self._set_items(result, items)
        self.append(result)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._container((list,), "APPEND").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._container((set,), "ADDITEMS")
        if isinstance(target, Inert):
            raise CorruptCheckpointError("ADDITEMS on a placeholder is not accepted")
        for item in items:
            check_key(item, "set element")
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            check_key(item, "set element")
        self.append(frozenset(items))


for _opcode, _method in {
    pickle.MEMOIZE: RestrictedUnpickler.load_memoize, pickle.PUT: RestrictedUnpickler.load_put,
    pickle.BINPUT: RestrictedUnpickler.load_binput, pickle.LONG_BINPUT: RestrictedUnpickler.load_long_binput,
    pickle.MARK: RestrictedUnpickler.load_mark, pickle.REDUCE: RestrictedUnpickler.load_reduce,
    pickle.NEWOBJ: RestrictedUnpickler.load_newobj, pickle.NEWOBJ_EX: RestrictedUnpickler.load_newobj_ex,
    pickle.BUILD: RestrictedUnpickler.load_build, pickle.SETITEM: RestrictedUnpickler.load_setitem,
    pickle.SETITEMS: RestrictedUnpickler.load_setitems, pickle.DICT: RestrictedUnpickler.load_dict,
    pickle.APPEND: RestrictedUnpickler.load_append, pickle.APPENDS: RestrictedUnpickler.load_appends,
    pickle.ADDITEMS: RestrictedUnpickler.load_additems, pickle.FROZENSET: RestrictedUnpickler.load_frozenset,
}.items():  # fmt: skip
    RestrictedUnpickler.dispatch[_opcode[0]] = _method
