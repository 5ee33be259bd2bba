"""numpy arrays from untrusted pickles without numpy's own unpickling code.

numpy's reconstructors (``numpy.dtype`` + ``dtype.__setstate__``,
``multiarray._reconstruct`` + ``ndarray.__setstate__``, ``multiarray.scalar``)
trust their arguments: a pickle can copy an object dtype, clear its flags with
``__setstate__`` and hand ``scalar`` eight bytes that numpy then treats as a
``PyObject*`` (memory corruption, no Python exception). So no numpy global is
ever given to an unpickler here. Each name a numpy pickle uses maps to a
stand-in below that accepts only plain numeric data and builds the array with
``numpy.frombuffer`` on a checked dtype:

====================================================  =======================================
global in the pickle                                  stand-in (what it accepts)
====================================================  =======================================
``numpy.dtype``                                       :class:`_DTypeSpec`: bool / int / uint /
                                                      float / complex type strings only (no
                                                      object, void, structured, sub-array,
                                                      string or datetime dtypes); its
                                                      ``__setstate__`` accepts only the state
                                                      numpy writes for such a dtype (byte
                                                      order, itemsize, alignment, flags 0)
``numpy.ndarray``                                     :class:`_ArraySpec` (placeholder class)
``numpy[._]core.multiarray._reconstruct``             :func:`_reconstruct`: an empty
                                                      :class:`_ArraySpec`; its ``__setstate__``
                                                      needs a checked dtype, a non-negative
                                                      shape and exactly ``prod(shape) *
                                                      itemsize`` bytes
``numpy[._]core.multiarray.scalar``                   :func:`_scalar`: checked dtype and
                                                      exactly ``itemsize`` bytes
``numpy[._]core.numeric._frombuffer`` (protocol 5)    :func:`_frombuffer`: same checks
``_codecs.encode`` (bytes in protocol-2 pickles)      :func:`_latin1_encode`: ``str`` ->
                                                      latin-1 bytes, nothing else
``builtins.bytes`` (``b""`` in protocol 2)            :func:`_empty_bytes`: no argument only
====================================================  =======================================

The unpickled object holds placeholders; :func:`finalize` replaces them by
real arrays / dtypes (and refuses a placeholder that was never filled).
Anything that does not fit raises :class:`UnsafeNumpyData`.
"""
import math
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List

import numpy as np

__all__ = ["UnsafeNumpyData", "SafeUnpickler", "finalize", "torch_safe_globals"]

# dtype strings numpy pickles for plain numeric dtypes ('f4', '<i8', '|b1', 'c16', '?')
_NUMERIC_DESCR = re.compile(r"^[<>|=]?([biufc]\d{1,2}|\?)$")
_NUMERIC_KINDS = "biufc"


class UnsafeNumpyData(Exception):
    """A pickled numpy object that is not plain numeric data (or is malformed)."""


def _as_bytes(data, what: str) -> bytes:
    if isinstance(data, str):  # Python 2 pickles decoded with encoding="latin1"
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise UnsafeNumpyData(f"{what}: data must be bytes, got {type(data).__name__}")


class _DTypeSpec:
    """Stand-in for ``numpy.dtype(descr, align, copy)``: a plain numeric dtype or a refusal."""

    dtype = None

    def __init__(self, descr=None, align=False, copy=False):
        if not isinstance(descr, str) or not _NUMERIC_DESCR.match(descr):
            raise UnsafeNumpyData(f"numpy dtype {descr!r} is not a plain numeric dtype")
        try:
            dtype = np.dtype(descr)
        except TypeError as e:
            raise UnsafeNumpyData(f"numpy dtype {descr!r}: {e}") from None
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafeNumpyData(f"numpy dtype {descr!r} is not a plain numeric dtype")
        self.dtype = dtype

    def __setstate__(self, state):
        dtype = self.resolve()
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise UnsafeNumpyData(f"numpy dtype state {state!r:.80} is not a plain dtype's")
        version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
        metadata = state[8] if len(state) == 9 else None
        if (
            version not in (3, 4)
            or order not in ("<", ">", "|", "=")
            or (subarray, names, fields, metadata) != (None, None, None, None)
            or elsize not in (-1, dtype.itemsize)
            or alignment not in (-1, dtype.alignment)
            or flags != 0
        ):
            raise UnsafeNumpyData(f"numpy dtype state {state!r:.80} is not that of a plain {dtype}")
        if order in "<>":
            self.dtype = dtype.newbyteorder(order)

    def resolve(self) -> np.dtype:
        if self.dtype is None:
            raise UnsafeNumpyData("numpy dtype built without a type string")
        return self.dtype


def _dtype_of(spec) -> np.dtype:
    if not isinstance(spec, _DTypeSpec):
        raise UnsafeNumpyData(f"expected a numpy dtype, got {type(spec).__name__}")
    return spec.resolve()


def _build_array(data, dtype: np.dtype, shape, order: str, what: str) -> np.ndarray:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise UnsafeNumpyData(f"{what}: shape {shape!r:.80} is not a tuple of non-negative integers")
    data = _as_bytes(data, what)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise UnsafeNumpyData(f"{what}: {len(data)} data bytes for shape {shape} of {dtype} ({expected} expected)")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape, order=order)


class _ArraySpec:
    """Stand-in for ``numpy.ndarray`` while unpickling; ``value`` is set by ``__setstate__``."""

    value = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafeNumpyData("numpy array state is not (version, shape, dtype, fortran, data)")
        shape, spec, fortran, data = state[-4:]
        if len(state) == 5 and state[0] != 1:
            raise UnsafeNumpyData(f"numpy array state version {state[0]!r} is not 1")
        if not isinstance(fortran, (bool, int)):
            raise UnsafeNumpyData("numpy array state: is_fortran must be a bool")
        self.value = _build_array(data, _dtype_of(spec), shape, "F" if fortran else "C", "numpy array")


def _reconstruct(cls, shape, typecode):
    if not (isinstance(cls, type) and issubclass(cls, _ArraySpec)):
        raise UnsafeNumpyData(f"numpy _reconstruct of {getattr(cls, '__name__', cls)!r}, not ndarray")
    return cls()


def _scalar(spec, data=None):
    dtype = _dtype_of(spec)
    data = _as_bytes(data, "numpy scalar")
    if len(data) != dtype.itemsize:
        raise UnsafeNumpyData(f"numpy scalar: {len(data)} bytes for a {dtype} ({dtype.itemsize} expected)")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf, spec, shape, order):
    if order not in ("C", "F"):
        raise UnsafeNumpyData(f"numpy _frombuffer: order {order!r:.20} is not C or F")
    return _build_array(buf, _dtype_of(spec), shape, order, "numpy array")


def _latin1_encode(obj, encoding="utf-8"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeNumpyData(f"_codecs.encode({type(obj).__name__}, {encoding!r:.20}) is not a latin-1 bytes literal")
    return obj.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise UnsafeNumpyData("bytes(...) with arguments is not an empty bytes literal")
    return b""


# global name in a pickle -> stand-in. numpy >= 2 writes numpy._core, older numpy numpy.core.
_NUMPY_GLOBALS: Dict[str, Any] = {
    "numpy.dtype": _DTypeSpec,
    "numpy.ndarray": _ArraySpec,
    "_codecs.encode": _latin1_encode,
    # protocol 2 writes b"" as bytes(): the stand-in takes no argument (bytes(n) would allocate n bytes)
    "builtins.bytes": _empty_bytes,
    "__builtin__.bytes": _empty_bytes,
}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[f"{_core}.multiarray._reconstruct"] = _reconstruct
    _NUMPY_GLOBALS[f"{_core}.multiarray.scalar"] = _scalar
    _NUMPY_GLOBALS[f"{_core}.numeric._frombuffer"] = _frombuffer

# plain containers a detectron2 / Detectron .pkl may hold
_CONTAINERS = {
    "collections.OrderedDict": OrderedDict,
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
}
_CONTAINERS.update({"__builtin__." + k.split(".")[1]: v for k, v in _CONTAINERS.items() if k.startswith("builtins.")})


def _named(obj, qualified: str):
    """`obj` under the global name `qualified`: torch's weights-only unpickler finds an
    allowed global by ``f"{__module__}.{__qualname__}"`` (the ``(obj, name)`` tuple
    form needs a newer torch); a class becomes a subclass so that BUILD accepts its
    instances."""
    module, _, name = qualified.rpartition(".")
    if isinstance(obj, type):
        return type(name, (obj,), {"__module__": module, "__qualname__": name})

    def call(*args):
        return obj(*args)

    call.__module__, call.__qualname__, call.__name__ = module, name, name
    return call


_TORCH_GLOBALS = [_named(obj, name) for name, obj in _NUMPY_GLOBALS.items()]


def torch_safe_globals() -> List[Any]:
    """The stand-ins, named as in numpy pickles, for ``torch.serialization.safe_globals``."""
    return list(_TORCH_GLOBALS)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for ``.pkl`` model-zoo files: plain containers and the numpy stand-ins only.
    Call :func:`finalize` on what ``load()`` returns."""

    def find_class(self, module, name):
        key = f"{module}.{name}"
        obj = _NUMPY_GLOBALS.get(key) or _CONTAINERS.get(key)
        if obj is None:
            raise pickle.UnpicklingError(f"global '{key}' is not allowed")
        return obj


def finalize(obj: Any) -> Any:
    """Replace the stand-ins inside `obj` by numpy arrays / dtypes. Dicts and lists
    are updated in place (an OrderedDict keeps its ``_metadata``); tuples and
    sets are rebuilt."""
    memo: Dict[int, Any] = {}

    def walk(x):
        key = id(x)
        if key in memo:
            return memo[key]
        if isinstance(x, _ArraySpec):
            if x.value is None:
                raise UnsafeNumpyData("numpy array placeholder without data")
            out = x.value
        elif isinstance(x, _DTypeSpec):
            out = x.resolve()
        elif isinstance(x, dict):
            memo[key] = x
            items = [(walk(k), walk(v)) for k, v in x.items()]
            x.clear()
            x.update(items)
            return x
        elif isinstance(x, list):
            memo[key] = x
            x[:] = [walk(v) for v in x]
            return x
        elif type(x) in (tuple, set, frozenset):
            out = type(x)(walk(v) for v in x)
        else:
            out = x
        memo[key] = out
        return out

    return walk(obj)
