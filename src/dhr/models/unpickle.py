"""Reading checkpoint files without executing them: a restricted unpickler for torch zips and pickles.

Safety. Nothing from a file is ever imported or run:

* torch zip files are first read with ``torch.load(weights_only=True)`` (torch's allow-list unpickler);
  when it rejects a global (e.g. ``opts`` stored as ``argparse.Namespace``), the zip's ``data.pkl`` is read
  with :class:`SafeUnpickler` instead, storages coming from the zip records.
* plain pickles (NVIDIA ``.pkl``) are read with :class:`SafeUnpickler` only.

:class:`SafeUnpickler` resolves a short allow-list of globals to functions written here (tensor and
storage rebuilding, ``OrderedDict``, plain builtin containers, numpy array reconstruction). Globals that
would run code (``os.system``, ``builtins.eval``, ``subprocess``, ``importlib``, ...) make it refuse the
file with :class:`~dhr.errors.CheckpointError`. Every other class becomes an inert :class:`OpaqueObject`
that only records its constructor arguments and ``__setstate__`` data. NVIDIA's persistent objects
(``torch_utils.persistence._reconstruct_persistent_obj(meta)``) become :class:`PersistentObject` holding
the class name and state; the embedded source code in ``meta['module_src']`` is never executed.

:func:`read_checkpoint_tree` is the entry point (:mod:`dhr.models.convert` maps what it returns);
:func:`to_plain` turns the inert objects into plain containers (e4e/pSp ``opts``).
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dhr.errors import CheckpointError
from dhr.models.native import load_state_file

__all__ = ["OpaqueObject", "PersistentObject", "SafeUnpickler", "read_checkpoint_tree", "to_plain"]

logger = logging.getLogger(__name__)



class OpaqueObject:
    """Inert stand-in for an object whose class is not allow-listed.

    It records what the pickle would have passed to the real class and nothing else: constructor
    arguments (``args``, ``kwargs``), the ``__setstate__`` payload (``state``) and items or list
    entries added by the pickle (``dict_items``, ``list_items``). ``pickle_module`` and
    ``pickle_name`` give the global the file referred to.
    """

    pickle_module = "?"
    pickle_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.dict_items, obj.list_items = {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments were recorded in __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dict_items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"<opaque {self.pickle_module}.{self.pickle_name}>"


@dataclass
class PersistentObject:
    """An NVIDIA ``torch_utils.persistence`` object: its class name and pickled state (plain data).

    ``state`` is the module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules`` (children,
    themselves :class:`PersistentObject` or :class:`OpaqueObject`), ``_init_kwargs`` and attributes.
    """

    class_name: str
    state: dict
    version: Any = None

    @property
    def init_kwargs(self) -> dict:
        kw = self.state.get("_init_kwargs") or {}
        return dict(kw) if isinstance(kw, Mapping) else {}


class _PlainDict(dict):
    """Stand-in for dict subclasses such as ``dnnlib.EasyDict`` (a plain dict; state is ignored)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.update(state)


class _Refused(pickle.UnpicklingError):
    pass


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_TORCH_DTYPES = {n: getattr(torch, n) for n in (
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")}
# Modules whose globals could run code, touch the system or import more code: refused outright.
_DENIED_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "socket", "pickle", "_pickle",
    "marshal", "types", "ctypes", "code", "codeop", "pty", "multiprocessing", "threading", "signal",
    "webbrowser", "functools", "operator", "io", "_io", "pathlib", "tempfile", "inspect", "pydoc", "timeit",
    "asyncio", "ssl", "http", "urllib", "requests", "shelve", "dill", "cloudpickle", "setuptools", "pip",
    "torch.hub", "torch.serialization", "torch.jit", "torch.ops", "torch._ops", "torch.package",
)
_SAFE_BUILTINS = {
    "set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "bytearray": bytearray,
    "list": list, "dict": dict, "tuple": tuple, "int": int, "float": float, "bool": bool, "str": str, "bytes": bytes,
    "object": object, "range": range,
}


def _storage_tensor(storage: Any) -> torch.Tensor:
    if isinstance(storage, torch.Tensor):
        return storage
    if isinstance(storage, torch.TypedStorage):
        return torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, 0, (storage.size(),), (1,))
    raise pickle.UnpicklingError(f"tensor storage of unexpected type {type(storage).__name__}")


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    base = _storage_tensor(storage)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    return base.as_strided(size, stride, int(offset))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data  # a plain tensor: parameters become ordinary tensors


def _rebuild_from_type(func: Any, _new_type: Any, args: Any, _state: Any = None) -> Any:
    # Tensor subclasses: ``func`` was itself resolved through the allow-list (or is an inert placeholder).
    return func(*args)


def _load_storage_bytes(b: bytes) -> torch.Tensor:
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)
        return _storage_tensor(st)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode(encoding)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, (OpaqueObject, _PlainDict)):
        return cls.__new__(cls)
    if cls is collections.OrderedDict:
        return collections.OrderedDict()
    raise pickle.UnpicklingError(f"copyreg._reconstructor of unexpected class {cls!r}")


def _persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, Mapping) or "class_name" not in meta:
        raise pickle.UnpicklingError("persistent object without a class_name")
    state = meta.get("state")
    if isinstance(state, OpaqueObject):
        state = state.dict_items
    return PersistentObject(class_name=str(meta["class_name"]), state=dict(state or {}), version=meta.get("version"))


def _numpy_globals(module: str, name: str) -> Any:
    if module not in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy"):
        return None
    if module == "numpy":
        return {"ndarray": np.ndarray, "dtype": np.dtype}.get(name)
    if name in ("_reconstruct", "scalar"):
        try:
            mod = __import__("numpy._core.multiarray", fromlist=[name])
        except ImportError:
            mod = __import__("numpy.core.multiarray", fromlist=[name])
        return getattr(mod, name)
    return None


class SafeUnpickler(pickle.Unpickler):
    """A pickle reader that imports and executes nothing from the file.

    Allow-listed globals resolve to functions of this module (tensor rebuild, storages, containers,
    numpy arrays); code-running globals raise; everything else becomes an :class:`OpaqueObject` subclass.

    Args:
        file: Binary stream positioned at a pickle.
        storages: For torch zip files, a callable ``(key, dtype, numel) -> 1-D tensor`` that serves
            ``persistent_load`` records; ``None`` for plain pickles (persistent ids are then refused).
    """

    def __init__(self, file: Any, storages: Any = None) -> None:
        super().__init__(file)
        self._storages = storages
        self._opaque: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        root = module.split(".")[0]
        if module == "torch._utils":
            if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return _rebuild_tensor
            if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
                return _rebuild_parameter
        if full == "torch._tensor._rebuild_from_type_v2":
            return _rebuild_from_type
        if full == "torch.storage._load_from_bytes":
            return _load_storage_bytes
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if full == "torch.Size":
            return tuple
        if full == "torch.device":
            return str
        if full == "collections.OrderedDict":
            return collections.OrderedDict
        if full == "_codecs.encode":
            return _codecs_encode
        if full == "copyreg._reconstructor":
            return _reconstructor
        if module in ("builtins", "__builtin__"):
            if name in _SAFE_BUILTINS:
                return _SAFE_BUILTINS[name]
            raise _Refused(full)
        if name == "_reconstruct_persistent_obj" and module.endswith("persistence"):
            return _persistent_obj
        if name == "EasyDict":
            return _PlainDict
        np_obj = _numpy_globals(module, name)
        if np_obj is not None:
            return np_obj
        if module in _DENIED_MODULES or root in _DENIED_MODULES or any(module.startswith(d + ".") for d in _DENIED_MODULES):
            raise _Refused(full)
        key = (module, name)
        if key not in self._opaque:
            self._opaque[key] = type(f"Opaque_{name}", (OpaqueObject,), {"pickle_module": module, "pickle_name": name})
        return self._opaque[key]

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise pickle.UnpicklingError("unexpected persistent id in a plain pickle")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid[:5]
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unsupported storage type {dtype!r}")
        return self._storages(str(key), dtype, int(numel))


def _unpickle(stream: Any, source: str, storages: Any = None) -> Any:
    try:
        return SafeUnpickler(stream, storages).load()
    except _Refused as e:
        raise CheckpointError(
            f"{source}: refusing to load: the file calls '{e}', which could execute code. Only convert "
            f"checkpoints from sources you trust, and never with plain pickle.load"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            RuntimeError, OverflowError, MemoryError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{source}: cannot read this file ({type(e).__name__}: {str(e)[:200]}); it is truncated, corrupt, or "
            f"not a PyTorch/StyleGAN checkpoint"
        ) from None


def _unpickle_torch_zip(path: Path, source: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{source}: corrupt zip container ({e})") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{source}: zip file without data.pkl; not a torch.save checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        cache: dict[str, torch.Tensor] = {}

        def storages(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in cache:
                try:
                    raw = zf.read(f"{prefix}data/{key}")
                except KeyError:
                    raise pickle.UnpicklingError(f"storage record data/{key} is missing") from None
                itemsize = torch.empty(0, dtype=dtype).element_size()
                if len(raw) != numel * itemsize:
                    raise pickle.UnpicklingError(f"storage data/{key} holds {len(raw)} bytes, expected {numel * itemsize}")
                cache[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return cache[key]

        try:
            data = zf.read(pkl[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{source}: corrupt zip record {pkl[0]} ({e})") from None
        return _unpickle(io.BytesIO(data), source, storages)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_checkpoint_tree(path: str | os.PathLike) -> tuple[Any, str]:
    """Reads a checkpoint file into plain data (dicts, lists, tensors, placeholders) without running it.

    Args:
        path: A torch ``.pt`` (zip or legacy), an NVIDIA pickle or a ``.safetensors`` file.

    Returns:
        ``(tree, container)`` with container one of ``torch-zip``, ``torch-zip-restricted``,
        ``torch-legacy``, ``pickle``, ``safetensors``.

    Raises:
        CheckpointError: If the file is missing, truncated, corrupt or would execute code.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: file not found")
    if path.suffix == ".safetensors":
        return load_state_file(path), "safetensors"
    if zipfile.is_zipfile(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True), "torch-zip"
        except pickle.UnpicklingError as e:
            logger.info("%s: torch weights_only loader refused (%s); using the restricted reader", source, str(e)[:120])
            return _unpickle_torch_zip(path, source), "torch-zip-restricted"
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{source}: cannot read this torch file ({type(e).__name__}: {str(e)[:200]}); "
                                  f"it is truncated or corrupt") from None
    with open(path, "rb") as f:
        tree = _unpickle(f, source)
    if isinstance(tree, int) and tree == _LEGACY_MAGIC:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True), "torch-legacy"
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{source}: cannot read this legacy torch file ({type(e).__name__}: "
                                  f"{str(e)[:200]})") from None
    return tree, "pickle"


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Turns placeholders into plain data: ``OpaqueObject`` -> its state (dict) or args; tensors kept."""
    if _depth > 50:
        return None
    if isinstance(obj, OpaqueObject):
        if isinstance(obj.state, Mapping):
            return {str(k): to_plain(v, _depth + 1) for k, v in obj.state.items()}
        if obj.dict_items:
            return {str(k): to_plain(v, _depth + 1) for k, v in obj.dict_items.items()}
        return {"__class__": f"{obj.pickle_module}.{obj.pickle_name}", "args": to_plain(list(obj.args), _depth + 1)}
    if isinstance(obj, PersistentObject):
        return {"__class__": obj.class_name}
    if isinstance(obj, Mapping):
        return {k: to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, _depth + 1) for v in obj) if isinstance(obj, list) else tuple(
            to_plain(v, _depth + 1) for v in obj)
    return obj
