"""Read a PyTorch state_dict (`torch.save(model.state_dict(), path)`) into
numpy arrays without importing torch.

A `.pth` written by torch >= 1.6 is a zip archive: `<name>/data.pkl` (a
pickle of the dict, whose tensors refer to storages by key) and
`<name>/data/<key>` (each storage's raw little-endian bytes). We unpickle it
with a restricted unpickler that knows only the handful of names a
state_dict needs and refuses everything else, so a malicious file cannot run
code: safer than `torch.load` on a file from the internet, and no 800 MB
dependency.

A crafted file must not crash the process or read memory outside its
storages either, so reading happens in three steps:

1. unpickle, *recording* each tensor (storage, offset, sizes, strides)
   instead of building it;
2. validate everything: the dict's structure, each storage (known dtype, an
   entry of the archive whose size matches the element count, sizes within
   the limits below) and each view (non-negative int64 sizes, strides and
   offset; offset + sum((size_i - 1) * stride_i) < the storage's element
   count, computed with Python's unbounded ints);
3. only then read the storages (at most their declared size, which must be
   what they hold) and build each tensor with `np.ndarray(buffer=...)`, which
   checks the view against the buffer once more.

Every failure is a `CheckpointError` naming the tensor and the numbers.
"""

import collections
import io
import pickle
import pickletools
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


# What one checkpoint may make us allocate (storages read + tensors built).
# 2 GiB: about 100x SkipblockNet-M (22 MB) and above any mobile model, yet a
# small crafted file cannot ask for more.
MAX_CHECKPOINT_BYTES = 2 * 1024**3
# data.pkl: the authors' is 51 KB for 354 tensors (~150 bytes each), so this
# leaves room for ~28,000 tensors. Unpickling builds at most ~72 bytes of
# objects per pickle byte (measured worst case: a run of EMPTY_DICT), so at
# most ~300 MB here; the opcode scan and _StateDict below keep it linear.
MAX_PICKLE_BYTES = 4 * 1024**2
# Deflate cannot expand data more than ~1032:1; a header claiming more lies.
_MAX_DEFLATE_RATIO = 1032
_MAX_DIMS = 32  # numpy 1.x's limit; torch models use 5 at most
_INT64_LIMIT = 2**63  # torch keeps sizes, strides and offsets as int64

# Storage class name -> numpy dtype (the legacy typed names that torch still
# writes into the pickle for backward compatibility).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


def _dtype_and_itemsize(type_name):
    """(numpy dtype of the built tensor, bytes per element in the file), or None if unknown."""
    if type_name == "BFloat16Storage":
        return np.dtype("<f4"), 2  # numpy has no bfloat16: widened to float32
    if type_name in _STORAGE_DTYPES:
        dtype = np.dtype(_STORAGE_DTYPES[type_name]).newbyteorder("<")
        return dtype, dtype.itemsize
    return None


# Opcodes a state_dict never needs and that build far more than their size (sets)
# or refer to buffers outside the pickle.
_DENIED_OPCODES = {"EMPTY_SET", "ADDITEMS", "FROZENSET", "BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


def _scan_pickle(data):
    """Check data.pkl's opcodes before unpickling: well formed, none denied, and
    memo indices that count up (the C unpickler sizes its memo array by the
    largest index, so a 5-byte LONG_BINPUT 2**31 would allocate 32 GB)."""
    puts = 0
    try:
        for opcode, arg, position in pickletools.genops(data):
            if opcode.name in _DENIED_OPCODES:
                raise CheckpointError(f"data.pkl uses the pickle opcode {opcode.name} (byte {position}), "
                                      "which a state_dict never needs.")
            if opcode.name in _MEMO_PUTS:
                index = puts if opcode.name == "MEMOIZE" else arg
                if index > puts:
                    raise CheckpointError(f"data.pkl stores memo entry {_show(index)} (byte {position}) after "
                                          f"only {puts} entries; a pickler numbers them in order.")
                puts += 1
    except CheckpointError:
        raise
    except Exception as error:  # pickletools' ValueError for a bad opcode, a truncated argument, ...
        raise CheckpointError(f"data.pkl is corrupt ({_reason(error)}).") from None


class _StateDict(collections.OrderedDict):
    """What the pickle's `collections.OrderedDict` becomes. torch writes
    `OrderedDict()` then SETITEMS, then BUILD with `{"_metadata": ...}`. Built
    from arguments, or given BUILD state, a plain OrderedDict would copy an
    already-built (memo) object each time: a few bytes of pickle, megabytes of
    copies. So: no arguments, and the state (unused here) is not copied."""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise CheckpointError("the checkpoint builds an OrderedDict from arguments; torch never does.")
        super().__init__()

    def __setstate__(self, state):
        pass


class _Immutable:
    # The pickle's BUILD opcode could otherwise rewrite a recorded tensor's
    # fields after the fact; nothing in a state_dict does that.
    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError("the checkpoint tries to set the state of a storage or tensor record.")


class _StorageType(_Immutable):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _StorageRef(_Immutable):
    """A storage as the pickle names it (persistent id); read only after validation."""
    __slots__ = ("type_name", "key", "numel")

    def __init__(self, type_name, key, numel):
        self.type_name, self.key, self.numel = type_name, key, numel


class _PendingTensor(_Immutable):
    """torch._utils._rebuild_tensor_v2's arguments, recorded rather than executed."""
    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


def _record_tensor(*args):
    return _PendingTensor(args)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


def _show(value):
    """A short description of a value from the file, safe for any value (no
    repr of nested containers, no str() of a 10,000-digit int)."""
    if isinstance(value, _PendingTensor):
        return "a tensor"
    if isinstance(value, dict):
        return "a dict"
    if type(value) is int:
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, str):
        return repr(value[:80] + ("..." if len(value) > 80 else ""))
    return f"a {type(value).__name__}"


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor_v2"): _record_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)  # a name only; an unknown dtype is reported with its tensor
        raise CheckpointError(
            f"refusing to load {_show(module)[1:-1]}.{_show(name)[1:-1]} from the checkpoint: a state_dict "
            "holds only tensors, and anything else could run code. "
            "Save the weights with torch.save(model.state_dict(), path).")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements)
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"unexpected persistent id in the checkpoint ({_show(pid)}, expected a 5-tuple "
                "('storage', type, key, location, element count)).")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(key, str):
            raise CheckpointError(f"a storage key is {_show(key)}, not a string.")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"storage {_show(key)}: its type is {_show(storage_type)}, not a torch storage.")
        return _StorageRef(storage_type.name, key, numel)


def read_state_dict(path):
    """{name: numpy array} from a PyTorch checkpoint file, without torch.

    `path` is a file name (or a binary file object). Accepts a plain
    state_dict, a `{"state_dict": ...}` (or `{"model": ...}`) wrapper, and
    DataParallel's `module.` prefixes. Raises `CheckpointError` with the
    reason when the file is not such a checkpoint or is malformed.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist.") from None
    except Exception as error:  # BadZipFile, or a crafted directory that zipfile trips over
        raise CheckpointError(
            f"{path!r} is not a zip-format PyTorch checkpoint (torch >= 1.6 writes those; {_reason(error)}). "
            "Re-save it with torch.save(torch.load(path), path) on a recent torch.") from None
    with archive:
        try:
            return _read(archive)
        except CheckpointError as error:
            raise CheckpointError(f"{path!r}: {error}") from None


def _reason(error):
    return f"{type(error).__name__}: {str(error)[:200]}"


def _read(archive):
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"the archive holds {len(pickles)} data.pkl entries; expected one.")
    prefix = pickles[0][: -len("data.pkl")]
    _check_byteorder(archive, prefix)
    data = _read_entry(archive, archive.getinfo(pickles[0]), MAX_PICKLE_BYTES, "data.pkl")
    _scan_pickle(data)
    try:
        value = _RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except Exception as error:  # a truncated or corrupt pickle
        raise CheckpointError(f"data.pkl is corrupt ({_reason(error)}).") from None
    state = _unwrap(value)
    tensors, storages = _validate(state, archive, prefix)
    buffers = {key: _load_storage(archive, info, type_name, what)
               for key, (info, type_name, what) in storages.items()}
    result = {name: _build(name, buffers[ref.key], offset, size, stride)
              for name, (ref, offset, size, stride) in tensors.items()}
    if result and all(k.startswith("module.") for k in result):
        result = {k[len("module."):]: v for k, v in result.items()}
    return result


def _check_byteorder(archive, prefix):
    # torch >= 2.1 records the storages' byte order; older files are little-endian.
    try:
        info = archive.getinfo(f"{prefix}byteorder")
    except KeyError:
        return
    order = _read_entry(archive, info, 16, "byteorder").strip()
    if order != b"little":
        raise CheckpointError(f"the storages are {order[:16]!r}-endian; only little-endian files are read.")


def _check_declared_size(info, limit, what):
    """Refuse, before reading, an entry that is too big or whose header cannot be true."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{what} is encrypted.")
    if info.file_size > limit:
        raise CheckpointError(f"{what} declares {info.file_size} bytes, more than the limit of {limit}.")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise CheckpointError(f"{what} is stored uncompressed but declares {info.file_size} bytes "
                                  f"in {info.compress_size}.")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size:
            raise CheckpointError(f"{what} declares {info.file_size} bytes from {info.compress_size} compressed "
                                  f"ones, more than deflate's maximum ratio of {_MAX_DEFLATE_RATIO}.")
    else:  # torch stores uncompressed; other methods have no bounded ratio
        raise CheckpointError(f"{what} uses zip compression method {info.compress_type}; "
                              "only stored or deflated entries are read.")


def _read_entry(archive, info, limit, what):
    """An entry's bytes, reading at most its declared size (+1 to notice more)."""
    _check_declared_size(info, limit, what)
    try:
        with archive.open(info) as file:
            data = file.read(info.file_size + 1)
    except Exception as error:  # bad CRC, truncated archive, corrupt deflate stream, ...
        raise CheckpointError(f"{what} cannot be read from the archive ({_reason(error)}).") from None
    if len(data) != info.file_size:
        raise CheckpointError(f"{what} declares {info.file_size} bytes but holds {len(data)}.")
    return data


def _unwrap(value):
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(value, dict) and isinstance(value.get(key), dict):
            value = value[key]
            break
    if not isinstance(value, dict):
        raise CheckpointError(f"the file holds {_show(value)}, not a state_dict (a dict of tensors).")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise CheckpointError(f"the state_dict has a key that is {_show(key)}, not a string.")
        if not isinstance(tensor, _PendingTensor):
            raise CheckpointError(f"tensor {_show(key)} is {_show(tensor)}, not a tensor: "
                                  "a state_dict holds only tensors.")
    return value


def _int64s(name, what, values):
    """`values` as a tuple of non-negative int64s, or a CheckpointError naming them."""
    if type(values) not in (tuple, list):
        raise CheckpointError(f"tensor {name}: its {what} is {_show(values)}, not a tuple of integers.")
    if len(values) > _MAX_DIMS:
        raise CheckpointError(f"tensor {name}: its {what} has {len(values)} dimensions, more than {_MAX_DIMS}.")
    values = tuple(values)
    for value in values:
        # type() is int, not isinstance: True is not a size
        if type(value) is not int or not 0 <= value < _INT64_LIMIT:
            raise CheckpointError(f"tensor {name}: its {what} holds {_show(value)}; sizes and strides "
                                  f"must be non-negative int64s, got ({', '.join(map(_show, values))}).")
    return values


def _validate(state, archive, prefix):
    """({name: (storage, offset, size, stride)}, {storage key: (ZipInfo, type name, description)}),
    with every view checked to lie inside its storage and the allocation within the limit."""
    tensors, storages, first_user = {}, {}, {}
    allocated = 0
    for key, pending in state.items():
        name = _show(key)
        args = pending.args
        if len(args) < 4 or not isinstance(args[0], _StorageRef):
            raise CheckpointError(f"tensor {name}: _rebuild_tensor_v2 got {len(args)} arguments "
                                  f"(first {_show(args[0]) if args else 'none'}); expected "
                                  "(storage, offset, size, stride, ...).")
        ref, offset = args[0], args[1]
        size, stride = _int64s(name, "size", args[2]), _int64s(name, "stride", args[3])
        storage = f"storage {_show(ref.key)}"
        if type(offset) is not int or not 0 <= offset < _INT64_LIMIT:
            raise CheckpointError(f"tensor {name}: its offset into {storage} is {_show(offset)}, "
                                  "not a non-negative int64.")
        if len(size) != len(stride):
            raise CheckpointError(f"tensor {name}: {len(size)} sizes {size} but {len(stride)} strides {stride}.")
        dtype_info = _dtype_and_itemsize(ref.type_name)
        if dtype_info is None:
            raise CheckpointError(f"tensor {name}: {storage} has the unknown dtype torch.{_show(ref.type_name)[1:-1]}.")
        dtype, itemsize = dtype_info
        numel = ref.numel
        if type(numel) is not int or not 0 <= numel < _INT64_LIMIT:
            raise CheckpointError(f"tensor {name}: {storage} has {_show(numel)} elements, "
                                  "not a non-negative int64.")

        if ref.key in storages:  # shared by several tensors: must be the same storage each time
            other, other_type, other_numel = first_user[ref.key]
            if (ref.type_name, numel) != (other_type, other_numel):
                raise CheckpointError(
                    f"tensor {name}: {storage} is torch.{_show(ref.type_name)[1:-1]} of {numel} elements here "
                    f"but torch.{other_type} of {other_numel} for tensor {other}.")
        else:
            entry = f"{prefix}data/{ref.key}"
            try:
                info = archive.getinfo(entry)
            except KeyError:
                raise CheckpointError(f"tensor {name}: {storage} names no entry of the archive "
                                      f"(no {_show(entry)}).") from None
            what = f"tensor {name}: {storage}"
            _check_declared_size(info, MAX_CHECKPOINT_BYTES, what)
            if info.file_size != numel * itemsize:
                raise CheckpointError(
                    f"{what} should hold {numel} elements of {itemsize} bytes "
                    f"({numel * itemsize} bytes) but its entry declares {info.file_size} bytes.")
            storages[ref.key] = (info, ref.type_name, what)
            first_user[ref.key] = (name, ref.type_name, numel)
            # the bytes read, plus the float32 copy that widens bfloat16
            allocated += info.file_size + (numel * 4 if ref.type_name == "BFloat16Storage" else 0)

        count = 1
        for s in size:
            count *= s
        if count == 0:
            # an empty tensor reads nothing, but its shape must still be one numpy can hold
            extent = 1
            for s in size:
                extent *= max(s, 1)
            if extent * dtype.itemsize > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"tensor {name}: its shape {size} is beyond the limit of "
                                      f"{MAX_CHECKPOINT_BYTES} bytes.")
            if offset > numel:
                raise CheckpointError(f"tensor {name}: its offset {offset} is past the end of {storage} "
                                      f"({numel} elements).")
        else:
            last = offset + sum((s - 1) * t for s, t in zip(size, stride))
            if last >= numel:
                raise CheckpointError(
                    f"tensor {name}: the view (offset {offset}, size {size}, stride {stride}) reads element "
                    f"{last} of {storage}, which holds {numel} elements: outside the storage.")
        allocated += count * dtype.itemsize
        if allocated > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"tensor {name}: loading the checkpoint up to this tensor ({size} of {dtype.name}) would "
                f"allocate {allocated} bytes, more than the limit of {MAX_CHECKPOINT_BYTES}.")
        tensors[key] = (ref, offset, size, stride)
    return tensors, storages


def _load_storage(archive, info, type_name, what):
    """A storage's elements as a read-only array of the built tensor's dtype."""
    raw = _read_entry(archive, info, MAX_CHECKPOINT_BYTES, what)
    if type_name == "BFloat16Storage":
        # bfloat16 is the top 16 bits of a float32; shifted in place, as budgeted (4 bytes each)
        wide = np.frombuffer(raw, "<u2").astype("<u4")
        wide <<= 16
        return wide.view("<f4")
    return np.frombuffer(raw, _dtype_and_itemsize(type_name)[0])


def _build(key, storage, offset, size, stride):
    """The tensor as a new array; the view was validated, and numpy checks it against the buffer again."""
    if 0 in size:
        return np.zeros(size, storage.dtype)
    itemsize = storage.dtype.itemsize
    # A dimension of size 1 never moves along its stride, whatever it is (torch allows any).
    strides = tuple(t * itemsize if s > 1 else 0 for s, t in zip(size, stride))
    try:
        view = np.ndarray(size, storage.dtype, buffer=storage, offset=offset * itemsize, strides=strides)
    except ValueError as error:  # unreachable after _validate; numpy's own bound check
        raise CheckpointError(f"tensor {_show(key)}: numpy refuses the view ({error}).") from None
    return view.copy()
