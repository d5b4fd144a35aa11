"""A restricted unpickler for the data pickles of face models: FLAME's `generic_model.pkl` (a Python 2
pickle of numpy arrays, chumpy `Ch` arrays and a scipy sparse matrix) and the landmark embeddings
(`landmark_embedding.npy`: a pickled dict inside an .npy, some entries torch tensors).

Nothing in the file gets to name code: every global the pickle asks for is looked up in a fixed table
of data constructors, and anything else (`os.system`, `builtins.eval`, ...) is refused with the name.
Before anything is executed the whole opcode stream is scanned (pickletools): opcodes that reach
objects outside that table (persistent ids PERSID/BINPERSID, the copyreg extension registry
EXT1/EXT2/EXT4, out-of-band buffers) are refused, and GLOBAL/INST names are checked already there.

The table holds:
- numpy's array/dtype/scalar reconstruction (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`,
  `numpy.dtype`, `numpy.core.multiarray.scalar`; `numpy._core...` as numpy 2 writes them),
- `set`, `frozenset`, `object`, `collections.OrderedDict`, `copy_reg._reconstructor` (only to make a
  stand-in below), `_codecs.encode` (only latin-1: how Python 3 stores bytes in protocol 2),
- `chumpy.ch.Ch` -> a stand-in keeping the array under its state's 'x' (chumpy is never imported),
- `scipy.sparse[._]csc.csc_matrix` / `csr_matrix` -> a stand-in keeping (data, indices, indptr, shape),
  rebuilt afterwards through scipy's validating constructor,
- torch's tensor pickling (`torch._utils._rebuild_tensor_v2`, `torch.storage._load_from_bytes`); the
  storage bytes are read by `torch.load(..., weights_only=True)` and the tensor becomes a numpy array.
Stand-ins and wrappers define `__setstate__`, so a BUILD opcode aimed at them cannot rewrite them.
After loading, stand-ins are replaced by numpy arrays / scipy matrices in the returned structure.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from collections.abc import Callable

import numpy as np

from datasets.errors import UserError

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 1.26
    from numpy.core import multiarray as _multiarray


class PickleRefusedError(UserError, pickle.UnpicklingError):
    """The pickle asks for something outside the allowed data classes; nothing it names was run."""


_REFUSED_OPCODES = {
    "PERSID": "a persistent id (resolved outside the pickle)",
    "BINPERSID": "a persistent id (resolved outside the pickle)",
    "EXT1": "a copyreg extension code (resolved through the process-wide registry)",
    "EXT2": "a copyreg extension code (resolved through the process-wide registry)",
    "EXT4": "a copyreg extension code (resolved through the process-wide registry)",
    "NEXT_BUFFER": "an out-of-band buffer",
    "READONLY_BUFFER": "an out-of-band buffer",
}


class _Guarded:
    """A callable from the table: BUILD cannot rewrite it, and it names itself in messages."""

    def __init__(self, name: str, fn: Callable):
        self._name, self._fn = name, fn

    def __call__(self, *args):
        return self._fn(*args)

    def __setstate__(self, state):
        raise PickleRefusedError(f"refused: the pickle tries to set state on {self._name}")

    def __repr__(self):
        return f"<allowed {self._name}>"


class ChArray:
    """Stand-in for chumpy.ch.Ch: its pickled state is the object's __dict__, the array is under 'x'."""

    def __setstate__(self, state):
        if not isinstance(state, dict) or "x" not in state:
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise pickle.UnpicklingError(f"a chumpy Ch object without an 'x' array (state {keys}); "
                                         f"only plain Ch arrays are supported")
        self.x = state["x"]


class _SparseState:
    """Stand-in for a scipy sparse compressed matrix: keeps data, indices, indptr and the shape."""

    format = ""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a scipy {self.format} matrix with state of type {type(state).__name__}")
        self.state = state


class CscState(_SparseState):
    format = "csc"


class CsrState(_SparseState):
    format = "csr"


def _reconstructor(cls, base, state):
    """copy_reg._reconstructor, for the stand-ins only (how protocol 0/1 pickles new-style objects)."""
    if cls not in (ChArray, CscState, CsrState) or base is not object:
        raise PickleRefusedError(f"refused: copy_reg._reconstructor({getattr(cls, '__name__', cls)!r}, "
                                 f"{getattr(base, '__name__', base)!r}) is not a data class")
    return object.__new__(cls)


def _latin1_encode(text, encoding="latin1"):
    """_codecs.encode as Python 3 uses it for bytes in protocol 2 pickles: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise PickleRefusedError(f"refused: _codecs.encode with encoding {encoding!r} (only latin-1 is allowed)")
    return text.encode("latin-1")


def _load_torch_storage(data):
    """torch.storage._load_from_bytes through torch's own weights-only unpickler."""
    import torch

    if not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"a torch storage given as {type(data).__name__}, expected bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a torch storage that loads as {type(storage).__name__}")
    return storage


def _rebuild_torch_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2 without requires_grad or hooks; returns a numpy copy."""
    import torch
    from torch._utils import _rebuild_tensor_v2

    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a torch tensor over a {type(storage).__name__}, expected a storage")
    tensor = _rebuild_tensor_v2(storage, int(offset), tuple(size), tuple(stride), False, collections.OrderedDict())
    return tensor.detach().cpu().numpy().copy()


def _allowed_globals() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {}
    for numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(numpy_core, "_reconstruct")] = _multiarray._reconstruct
        table[(numpy_core, "scalar")] = _multiarray.scalar
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for builtins in ("__builtin__", "builtins"):
        table[(builtins, "set")] = set
        table[(builtins, "frozenset")] = frozenset
        table[(builtins, "object")] = object
    table[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("copy_reg", "copyreg"):
        table[(name, "_reconstructor")] = _Guarded(f"{name}._reconstructor", _reconstructor)
    table[("_codecs", "encode")] = _Guarded("_codecs.encode", _latin1_encode)
    table[("chumpy.ch", "Ch")] = ChArray
    for module in ("scipy.sparse.csc", "scipy.sparse._csc"):
        table[(module, "csc_matrix")] = CscState
    for module in ("scipy.sparse.csr", "scipy.sparse._csr"):
        table[(module, "csr_matrix")] = CsrState
    table[("torch._utils", "_rebuild_tensor_v2")] = _Guarded("torch._utils._rebuild_tensor_v2", _rebuild_torch_tensor)
    table[("torch.storage", "_load_from_bytes")] = _Guarded("torch.storage._load_from_bytes", _load_torch_storage)
    return table


_ALLOWED = _allowed_globals()


def _refuse_global(module: str, name: str) -> PickleRefusedError:
    return PickleRefusedError(
        f"refused to load {module}.{name}: the pickle may only build numpy arrays, chumpy Ch arrays, scipy "
        f"sparse matrices and torch tensors, so it is not a plain model file (possibly a malicious one)")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise _refuse_global(module, name)
        return target

    def persistent_load(self, pid):
        raise PickleRefusedError("refused: the pickle asks for a persistent id")


def scan_opcodes(data: bytes) -> None:
    """Refuse forbidden opcodes and GLOBAL/INST names outside the table before anything runs."""
    try:
        for opcode, arg, pos in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES:
                raise PickleRefusedError(f"refused: opcode {opcode.name} at byte {pos} asks for "
                                         f"{_REFUSED_OPCODES[opcode.name]}")
            if opcode.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                if (module, name) not in _ALLOWED:
                    raise _refuse_global(module, name)
    except PickleRefusedError:
        raise
    except Exception as e:  # genops raises ValueError on bytes that are not a pickle stream
        raise pickle.UnpicklingError(f"not a pickle stream ({type(e).__name__}: {e})") from e


def _resolve(obj, memo: dict):
    """Replace stand-ins by numpy arrays / scipy matrices throughout dicts, lists, tuples, object arrays."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, ChArray):
        out = np.asarray(_resolve(obj.x, memo))
        if out.dtype == object:
            raise pickle.UnpicklingError("a chumpy Ch object whose 'x' is not a numeric array")
    elif isinstance(obj, _SparseState):
        out = _sparse(obj)
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[key] = out
        for k, v in obj.items():
            out[k] = _resolve(v, memo)
        return out
    elif isinstance(obj, list):
        out = []
        memo[key] = out
        out.extend(_resolve(v, memo) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo) for v in obj)
    elif isinstance(obj, np.ndarray) and obj.dtype == object:
        out = np.empty(obj.shape, dtype=object)
        memo[key] = out
        for index in np.ndindex(obj.shape):
            out[index] = _resolve(obj[index], memo)
        return out
    else:
        out = obj
    memo[key] = out
    return out


def _sparse(obj: _SparseState):
    import scipy.sparse

    state = obj.state
    missing = [k for k in ("data", "indices", "indptr") if k not in state]
    shape = state.get("_shape", state.get("shape"))
    if missing or shape is None:
        raise pickle.UnpicklingError(f"a scipy {obj.format} matrix whose state lacks "
                                     f"{', '.join(missing + ([] if shape is not None else ['_shape']))}")
    try:
        shape = tuple(int(s) for s in shape)
        arrays = tuple(np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        if any(a.dtype == object for a in arrays) or len(shape) != 2:
            raise ValueError("data/indices/indptr must be numeric arrays and the shape 2-D")
        cls = scipy.sparse.csc_matrix if obj.format == "csc" else scipy.sparse.csr_matrix
        matrix = cls(arrays, shape=shape)
        matrix.check_format(full_check=True)
    except Exception as e:
        raise pickle.UnpicklingError(f"a scipy {obj.format} matrix that does not rebuild ({e})") from e
    return matrix


def load_restricted(data: bytes):
    """Unpickle bytes (Python 2 strings read as latin-1) with the table above; stand-ins resolved."""
    scan_opcodes(data)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        return _resolve(obj, {})
    except PickleRefusedError:
        raise
    except RecursionError as e:
        raise pickle.UnpicklingError("the pickle nests objects too deeply") from e
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # malformed streams raise all kinds of errors from the constructors they call
        raise pickle.UnpicklingError(f"not a readable data pickle ({type(e).__name__}: {e})") from e


def load_npy_restricted(data: bytes):
    """An .npy file's array. A pickled object array (dtype 'O', how np.save stores a dict) goes through
    the restricted unpickler; plain arrays through numpy with allow_pickle=False."""
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            _, _, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            _, _, dtype = npy_format.read_array_header_2_0(stream)
        else:
            _, _, dtype = npy_format._read_array_header(stream, version)
    except Exception as e:
        raise pickle.UnpicklingError(f"not an .npy file ({type(e).__name__}: {e})") from e
    if not dtype.hasobject:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise pickle.UnpicklingError(f"a damaged .npy array ({type(e).__name__}: {e})") from e
    return load_restricted(data[stream.tell():])


__all__ = ["PickleRefusedError", "load_npy_restricted", "load_restricted", "scan_opcodes"]
