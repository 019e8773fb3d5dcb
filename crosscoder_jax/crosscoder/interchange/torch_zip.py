"""`torch.save` files of a flat state dict, written and read without torch.

The paper's code (`crosscoder.py`: `torch.save(self.state_dict(), "<n>.pt")`, `torch.load`) and the
dictionary_learning trainers (`model_final.pt`) keep weights in torch's zip serialisation, and this
library does not depend on torch. The layout follows torch/serialization.py (`_save`, format
version 3, what torch 2.x writes): a zip archive (stored, not compressed) whose entries sit under
one folder named after the file: `data.pkl` (a protocol-2 pickle of an `OrderedDict` name ->
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, each storage
a persistent id `("storage", torch.<Type>Storage, key, "cpu", numel)`), `data/<key>` (the storage's
raw little-endian bytes, aligned to 64 bytes in the file as torch aligns them), `byteorder`,
`version` ("3"), `.format_version` and `.storage_alignment`. `torch.load(path)` with its default
`weights_only=True` reads what `save_state_dict` writes: the pickle uses only the globals its
restricted unpickler allows.

`load_state_dict` reads such files (ours, or torch's own) into NumPy arrays with an unpickler that
resolves only those globals, so a file cannot run code on load.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

try:  # bfloat16 storages (ml_dtypes ships with jax)
    from ml_dtypes import bfloat16 as _bf16
except ImportError:  # pragma: no cover
    _bf16 = None

# torch storage class <-> NumPy dtype (torch/storage.py's typed storages)
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "IntStorage": np.int32, "LongStorage": np.int64, "ShortStorage": np.int16, "CharStorage": np.int8,
             "ByteStorage": np.uint8, "BoolStorage": np.bool_}
if _bf16 is not None:
    _STORAGES["BFloat16Storage"] = _bf16
_STORAGE_OF = {np.dtype(v): k for k, v in _STORAGES.items()}
ALIGNMENT = 64  # torch's default `storage_alignment`


def _unicode(s: str) -> bytes:
    b = s.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    if 0 <= i < 256:
        return pickle.BININT1 + bytes([i])
    if -2**31 <= i < 2**31:
        return pickle.BININT + struct.pack("<i", i)
    b = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(b)]) + b


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _int_tuple(values) -> bytes:
    return pickle.MARK + b"".join(_int(int(v)) for v in values) + pickle.TUPLE


def _data_pkl(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The pickle torch writes for an OrderedDict of contiguous CPU tensors (storage keys 0, 1, ...)."""
    empty_ordered_dict = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    out = [pickle.PROTO + b"\x02", empty_ordered_dict, pickle.MARK]
    for key, (name, a) in enumerate(arrays.items()):
        stride = [int(np.prod(a.shape[i + 1:], dtype=np.int64)) for i in range(a.ndim)]
        storage_id = (pickle.MARK + _unicode("storage") + _global("torch", _STORAGE_OF[a.dtype])
                      + _unicode(str(key)) + _unicode("cpu") + _int(a.size) + pickle.TUPLE)
        args = (pickle.MARK + storage_id + pickle.BINPERSID + _int(0) + _int_tuple(a.shape) + _int_tuple(stride)
                + pickle.NEWFALSE + empty_ordered_dict + pickle.TUPLE)
        out += [_unicode(name), _global("torch._utils", "_rebuild_tensor_v2"), args, pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def save_state_dict(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes `arrays` (name -> NumPy array; float32/64/16, bfloat16, int8-64, uint8, bool) as a
    `torch.save` file of an OrderedDict of tensors (atomically: a temporary file, then renamed)."""
    path = Path(path)
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}  # (ascontiguousarray makes 0-d 1-d)
    for name, a in arrays.items():
        if a.dtype not in _STORAGE_OF:
            raise TypeError(f"{name}: dtype {a.dtype} has no torch storage type here; cast it first")
    prefix = path.stem or "archive"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        def put(name: str, data: bytes | memoryview, align: bool = False) -> None:
            info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(data)
            if align:  # pad the local header's extra field so the data starts on an ALIGNMENT boundary
                zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule: 20 more header bytes
                start = fh.tell() + zipfile.sizeFileHeader + len(info.filename.encode()) + 20 * zip64
                pad = (-(start + 4)) % ALIGNMENT
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            with zf.open(info, "w", force_zip64=info.file_size > zipfile.ZIP64_LIMIT) as dest:
                dest.write(data)

        put("data.pkl", _data_pkl(arrays))
        put(".format_version", b"1")
        put(".storage_alignment", str(ALIGNMENT).encode())
        put("byteorder", b"little")
        for key, a in enumerate(arrays.values()):
            little = a if sys.byteorder == "little" else a.byteswap()
            put(f"data/{key}", memoryview(little.reshape(-1).view(np.uint8)), align=True)
        put("version", b"3\n")
    os.replace(tmp, path)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[offset])  # 0-d array
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_unused):
    return data


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGES[name])


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a state dict of tensors needs; anything else is an error."""

    def __init__(self, data: bytes, read_record, byteorder: str):
        super().__init__(io.BytesIO(data))
        self._read_record = read_record
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict of tensors; "
                                     "this reader loads only tensors (save a state_dict())")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self._storages:
            data = np.frombuffer(self._read_record(f"data/{key}"), dtype=storage_type.dtype, count=int(numel))
            self._storages[key] = data.byteswap() if self._byteorder != sys.byteorder else data
        return self._storages[key]


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `torch.save` zip file holding a dict of tensors (what `state_dict()` gives) into
    name -> NumPy array (bfloat16 as ml_dtypes.bfloat16). Other objects are refused."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a torch zip file (torch.save before torch 1.6 wrote another "
                         "format): load it with torch and save it again with a current torch")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path} has no data.pkl: not a torch.save file")
        prefix = pkl[: -len("data.pkl")]
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        state = _Unpickler(zf.read(pkl), lambda rec: zf.read(prefix + rec), byteorder).load()
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"{path} does not hold a dict of tensors")
    return dict(state)
