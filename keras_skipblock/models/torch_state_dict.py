"""Read a PyTorch state_dict (`torch.save(model.state_dict(), path)`) into
numpy arrays without importing torch.

A `.pth` written by torch >= 1.6 is a zip archive: `<name>/data.pkl` (a
pickle of the dict, whose tensors refer to storages by key) and
`<name>/data/<key>` (each storage's raw little-endian bytes). We unpickle it
with a restricted unpickler that knows only the handful of names a
state_dict needs and refuses everything else, so a malicious file cannot run
code: safer than `torch.load` on a file from the internet, and no 800 MB
dependency.
"""

import collections
import pickle
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


# Storage class name -> numpy dtype (the legacy typed names that torch still
# writes into the pickle for backward compatibility).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """torch._utils._rebuild_tensor_v2: a strided view into a storage."""
    array, itemsize = storage
    if not size:
        return np.array(array[offset])
    view = np.lib.stride_tricks.as_strided(
        array[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"refusing to load {module}.{name} from the checkpoint: a state_dict holds only tensors, "
            "and anything else could run code. Save the weights with torch.save(model.state_dict(), path).")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r} in the checkpoint.")
        storage_type, key = pid[1], pid[2]
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            if storage_type.name == "BFloat16Storage":
                # numpy has no bfloat16: widen to float32 (the top 16 bits of a float32)
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
                self._storages[key] = (array, 4)
            else:
                dtype = np.dtype(_STORAGE_DTYPES[storage_type.name]).newbyteorder("<")
                self._storages[key] = (np.frombuffer(raw, dtype), dtype.itemsize)
        return self._storages[key]


def read_state_dict(path):
    """{name: numpy array} from a PyTorch checkpoint file, without torch.

    Accepts a plain state_dict, a `{"state_dict": ...}` (or `{"model": ...}`)
    wrapper, and DataParallel's `module.` prefixes. Raises `CheckpointError`
    with the reason when the file is not such a checkpoint.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist.") from None
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path!r} is not a zip-format PyTorch checkpoint (torch >= 1.6 writes those). "
            "Re-save it with torch.save(torch.load(path), path) on a recent torch.") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path!r} holds {len(pickles)} data.pkl entries; expected one.")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as file:
            try:
                value = _RestrictedUnpickler(file, archive, prefix).load()
            except CheckpointError as error:
                raise CheckpointError(f"{path!r}: {error}") from None
            except Exception as error:  # a truncated or corrupt pickle
                raise CheckpointError(f"{path!r} is corrupt: {error}") from None
    return _unwrap(value, path)


def _unwrap(value, path):
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(value, dict) and isinstance(value.get(key), dict):
            value = value[key]
            break
    if not isinstance(value, dict) or not all(isinstance(v, np.ndarray) for v in value.values()):
        raise CheckpointError(f"{path!r} does not hold a state_dict (a dict of tensors).")
    if value and all(k.startswith("module.") for k in value):
        value = {k[len("module."):]: v for k, v in value.items()}
    return dict(value)
