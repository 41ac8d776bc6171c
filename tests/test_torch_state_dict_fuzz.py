"""A crafted `.pth` must never crash the process nor read memory outside its
storages (issue 18): the attacks the issue names, and a fuzz test mutating the
authors' fixture (../shared/fixtures/authors_skipblocknet_m, SPEC §8).

The fuzz cases run in worker subprocesses (`python <this file> --worker a b`)
that load the reader by file path, without keras: a case that kills its
worker by a signal fails the test and is named. Every case must either load
tensors equal to an independent computation of each view from the storage
bytes (explicit index arithmetic, bounds asserted), or raise CheckpointError.
"""

import collections
import importlib.util
import io
import json
import os
import pickle
import random
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
READER_FILE = os.path.join(HERE, "..", "keras_skipblock", "models", "torch_state_dict.py")
PTH = os.path.join(HERE, "..", "..", "shared", "fixtures", "authors_skipblocknet_m", "skipblocknet_m.pth")
PREFIX = "skipblocknet_m/"  # the fixture's archive folder
SEED = 18
N_CASES = 640
N_WORKERS = 4

if __name__ == "__main__":  # a worker: the reader alone, without importing keras/TF
    _spec = importlib.util.spec_from_file_location("torch_state_dict_under_test", READER_FILE)
    reader = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(reader)
else:
    from keras_skipblock.models import torch_state_dict as reader


# -- writing torch-format pickles opcode by opcode (any value, however wrong) -------------


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:  # REDUCE: func(*args)
    def __init__(self, func, args):
        self.func, self.args = func, args


class PersId:  # BINPERSID: what torch writes for a storage
    def __init__(self, pid):
        self.pid = pid


class ODict:  # collections.OrderedDict() filled by SETITEMS, optionally BUILD with a state
    def __init__(self, items, state=None):
        self.items, self.state = list(items), state


class Raw:  # opcodes as given
    def __init__(self, data):
        self.data = data


def emit(value):
    """Protocol-2 pickle opcodes for `value` (no memo), as torch's pickler writes them."""
    if isinstance(value, Raw):
        return value.data
    if value is None:
        return b"N"
    if value is True:
        return b"\x88"
    if value is False:
        return b"\x89"
    if isinstance(value, int):
        if 0 <= value < 256:
            return b"K" + bytes([value])
        if 0 <= value < 65536:
            return b"M" + struct.pack("<H", value)
        if -2**31 <= value < 2**31:
            return b"J" + struct.pack("<i", value)
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return (b"\x8a" + bytes([len(data)]) if len(data) < 256 else b"\x8b" + struct.pack("<I", len(data))) + data
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(value, tuple):
        return b"(" + b"".join(emit(v) for v in value) + b"t"
    if isinstance(value, list):
        return b"]" + (b"(" + b"".join(emit(v) for v in value) + b"e" if value else b"")
    if isinstance(value, dict):
        body = b"".join(emit(k) + emit(v) for k, v in value.items())
        return b"}" + (b"(" + body + b"u" if value else b"")
    if isinstance(value, Global):
        return b"c" + value.module.encode() + b"\n" + value.name.encode() + b"\n"
    if isinstance(value, Call):
        return emit(value.func) + emit(tuple(value.args)) + b"R"
    if isinstance(value, PersId):
        return emit(value.pid) + b"Q"
    if isinstance(value, ODict):
        out = b"ccollections\nOrderedDict\n)R"
        if value.items:
            out += b"(" + b"".join(emit(k) + emit(v) for k, v in value.items) + b"u"
        if value.state is not None:
            out += emit(value.state) + b"b"
        return out
    raise TypeError(type(value))


def pickle_bytes(value):
    return b"\x80\x02" + emit(value) + b"."


def tensor_value(record):
    """What torch pickles for one tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""
    if "value" in record:
        return record["value"]
    pid = record.get("pid", ("storage", Global("torch", record["type"]), record["skey"], "cpu", record["numel"]))
    args = record.get("args", (PersId(pid), record["offset"], record["size"], record["stride"], False, ODict([])))
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), args)


def state_dict_value(records):
    metadata = ODict([("", {"version": 1})])  # torch's BUILD of state_dict._metadata
    return ODict([(r["key"], tensor_value(r)) for r in records], state={"_metadata": metadata})


def zip_bytes(pkl, storages, prefix=PREFIX, deflate=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(prefix + "data.pkl", pkl)
        for key, data in storages.items():
            method = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            archive.writestr(f"{prefix}data/{key}", data, compress_type=method)
        archive.writestr(prefix + "version", "3\n")
    return buffer.getvalue()


def checkpoint(records, storages, wrap=None, deflate=()):
    value = state_dict_value(records)
    return zip_bytes(pickle_bytes(value if wrap is None else wrap(value)), storages, deflate=deflate)


def patch_declared_sizes(data, name, file_size=None, compress_size=None):
    """The zip with `name`'s sizes in its central directory and local header replaced."""
    data = bytearray(data)
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        name_length, = struct.unpack_from("<H", data, position + 28)
        if bytes(data[position + 46: position + 46 + name_length]) == name.encode():
            local, = struct.unpack_from("<I", data, position + 42)
            for field, at_central, at_local in ((compress_size, 20, 18), (file_size, 24, 22)):
                if field is not None:
                    struct.pack_into("<I", data, position + at_central, field)
                    struct.pack_into("<I", data, local + at_local, field)
            return bytes(data)
        position = data.find(b"PK\x01\x02", position + 4)
    raise KeyError(name)


def floats(*values):
    return np.asarray(values, "<f4").tobytes()


def one_tensor(tmp_path, size, stride, offset=0, numel=4, type="FloatStorage", skey="0",
               storages=None, **zip_options):
    """A .pth whose one tensor "w" is a view of a 4-float storage [1, 2, 3, 4]."""
    record = dict(key="w", type=type, skey=skey, numel=numel, offset=offset, size=size, stride=stride)
    path = tmp_path / "crafted.pth"
    path.write_bytes(checkpoint([record], storages or {"0": floats(1, 2, 3, 4)}, **zip_options))
    return str(path)


# -- the attacks issue 18 names, one by one -------------------------------------------


def test_a_view_inside_its_storage_loads_its_values(tmp_path):
    state = reader.read_state_dict(one_tensor(tmp_path, (2, 2), (1, 2)))
    np.testing.assert_array_equal(state["w"], [[1, 3], [2, 4]])  # a transposed view
    state = reader.read_state_dict(one_tensor(tmp_path, (3,), (0,), offset=3))  # stride 0 (expand)
    np.testing.assert_array_equal(state["w"], [4, 4, 4])
    state = reader.read_state_dict(one_tensor(tmp_path, (0, 5), (5, 1), offset=4))  # empty, at the end
    assert state["w"].shape == (0, 5)
    # a dimension of size 1 never moves along its stride, whatever it is (torch allows any)
    state = reader.read_state_dict(one_tensor(tmp_path, (1, 2), (2**62, 1), offset=2))
    np.testing.assert_array_equal(state["w"], [[3, 4]])


@pytest.mark.parametrize("size, stride, offset, message", [
    # 6 elements over 4 floats: loaded bytes from outside the storage before
    ((6,), (1,), 0, r"'w'.*size \(6,\), stride \(1,\).*reads element 5 of storage '0', which holds 4 elements"),
    # 10^8 elements: a segmentation fault before
    ((10**8,), (1,), 0, r"'w'.*size \(100000000,\).*reads element 99999999 of storage '0', which holds 4"),
    ((1,), (1,), 5, r"'w'.*offset 5, size \(1,\).*reads element 5 of storage '0', which holds 4 elements"),
    ((1,), (1,), 4, r"'w'.*offset 4.*reads element 4 of storage '0', which holds 4 elements"),
    ((0,), (1,), 5, r"'w': its offset 5 is past the end of storage '0' \(4 elements\)"),
    # numpy's own bound check overflows on these strides (2**62 + 2**62 wraps to a negative
    # int64); Python's unbounded ints do not
    ((2, 2), (2**62, 2**62), 0, r"'w'.*reads element 9223372036854775808 of storage '0', which holds 4"),
])
def test_a_view_outside_its_storage_is_refused_naming_the_numbers(tmp_path, size, stride, offset, message):
    with pytest.raises(reader.CheckpointError, match=message):
        reader.read_state_dict(one_tensor(tmp_path, size, stride, offset))


@pytest.mark.parametrize("size, stride, offset, message", [
    # a negative stride walking before the start (elements 1, 0, -1); torch has no negative strides
    ((3,), (-1,), 1, r"'w': its stride holds -1; .*non-negative int64s, got \(-1\)"),
    ((2,), (1,), -1, r"'w': its offset into storage '0' is -1, not a non-negative int64"),
    ((-2,), (1,), 0, r"'w': its size holds -2"),
    ((True,), (1,), 0, r"'w': its size holds a bool"),  # bool is not an int here
    ((2,), (1.0,), 0, r"'w': its stride holds a float"),
    ((2**63,), (1,), 0, r"'w': its size holds 9223372036854775808"),
    ((2, 2), (1,), 0, r"'w': 2 sizes \(2, 2\) but 1 strides \(1,\)"),
])
def test_sizes_strides_and_offsets_must_be_non_negative_int64s(tmp_path, size, stride, offset, message):
    with pytest.raises(reader.CheckpointError, match=message):
        reader.read_state_dict(one_tensor(tmp_path, size, stride, offset))


def test_storage_problems_are_refused_naming_the_tensor_and_the_numbers(tmp_path):
    with pytest.raises(reader.CheckpointError,
                       match=r"'w': storage '0' has the unknown dtype torch\.ComplexFloatStorage"):
        reader.read_state_dict(one_tensor(tmp_path, (2,), (1,), type="ComplexFloatStorage"))
    with pytest.raises(reader.CheckpointError,
                       match=r"'w': storage '7' names no entry of the archive \(no 'skipblocknet_m/data/7'\)"):
        reader.read_state_dict(one_tensor(tmp_path, (2,), (1,), skey="7"))
    with pytest.raises(reader.CheckpointError, match=r"'w': storage '0' should hold 5 elements of 4 bytes "
                                                     r"\(20 bytes\) but its entry declares 16 bytes"):
        reader.read_state_dict(one_tensor(tmp_path, (5,), (1,), numel=5))
    with pytest.raises(reader.CheckpointError, match=r"'w': storage '0' has -4 elements"):
        reader.read_state_dict(one_tensor(tmp_path, (2,), (1,), numel=-4))
    # the same storage as two dtypes (a second view of it whose bytes would mean something else)
    records = [dict(key="a", type="FloatStorage", skey="0", numel=4, offset=0, size=(4,), stride=(1,)),
               dict(key="b", type="IntStorage", skey="0", numel=4, offset=0, size=(4,), stride=(1,))]
    path = tmp_path / "two_dtypes.pth"
    path.write_bytes(checkpoint(records, {"0": floats(1, 2, 3, 4)}))
    with pytest.raises(reader.CheckpointError, match=r"'b': storage '0' is torch\.IntStorage of 4 elements here "
                                                     r"but torch\.FloatStorage of 4 for tensor 'a'"):
        reader.read_state_dict(str(path))


def test_declared_sizes_are_checked_before_reading_and_against_what_entries_hold(tmp_path):
    good = one_tensor(tmp_path, (4,), (1,))
    data = open(good, "rb").read()
    crafted = tmp_path / "declared.pth"
    # an oversized declared entry (3 GiB): refused before anything is read or allocated
    crafted.write_bytes(patch_declared_sizes(data, PREFIX + "data/0", 3 * 2**30, 3 * 2**30))
    with pytest.raises(reader.CheckpointError, match=r"'w': storage '0' declares 3221225472 bytes, more than "
                                                     r"the limit of 2147483648"):
        reader.read_state_dict(str(crafted))
    crafted.write_bytes(patch_declared_sizes(data, PREFIX + "data/0", file_size=20))
    with pytest.raises(reader.CheckpointError, match=r"stored uncompressed but declares 20 bytes in 16"):
        reader.read_state_dict(str(crafted))
    # deflated: a header claiming more than deflate can expand to, or more than the entry holds
    deflated = open(one_tensor(tmp_path, (4,), (1,), deflate=("0",)), "rb").read()
    crafted.write_bytes(patch_declared_sizes(deflated, PREFIX + "data/0", file_size=2**31))
    with pytest.raises(reader.CheckpointError, match=r"declares 2147483648 bytes from \d+ compressed ones, more "
                                                     r"than deflate's maximum ratio of 1032"):
        reader.read_state_dict(str(crafted))
    five = open(one_tensor(tmp_path, (5,), (1,), numel=5, deflate=("0",)), "rb").read()
    crafted.write_bytes(patch_declared_sizes(five, PREFIX + "data/0", file_size=20))
    with pytest.raises(reader.CheckpointError, match=r"'w': storage '0' declares 20 bytes but holds 16"):
        reader.read_state_dict(str(crafted))
    # an honest deflated entry loads
    np.testing.assert_array_equal(reader.read_state_dict(one_tensor(tmp_path, (4,), (1,), deflate=("0",)))["w"],
                                  [1, 2, 3, 4])


def test_bfloat16_is_widened_to_float32(tmp_path):
    bf16 = np.array([0x3F80, 0xC000, 0x4049], "<u2").tobytes()  # 1.0, -2.0, 3.140625
    path = one_tensor(tmp_path, (2,), (2,), numel=3, type="BFloat16Storage", storages={"0": bf16})
    state = reader.read_state_dict(path)
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], [1.0, 3.140625])


def test_what_a_checkpoint_may_allocate_is_capped(tmp_path, monkeypatch):
    # in bounds (stride 0 repeats one float) but 4 GiB to build
    with pytest.raises(reader.CheckpointError, match=r"'w': loading the checkpoint up to this tensor "
                                                     r"\(\(1073741824,\) of float32\) would allocate 4294967312 "
                                                     r"bytes, more than the limit of 2147483648"):
        reader.read_state_dict(one_tensor(tmp_path, (2**30,), (0,)))
    path = one_tensor(tmp_path, (4,), (1,))
    monkeypatch.setattr(reader, "MAX_PICKLE_BYTES", 100)
    with pytest.raises(reader.CheckpointError, match=r"data\.pkl declares \d+ bytes, more than the limit of 100"):
        reader.read_state_dict(path)


def test_the_pickle_must_be_a_dict_of_tensors(tmp_path):
    tensor = dict(key="w", type="FloatStorage", skey="0", numel=4, offset=0, size=(4,), stride=(1,))
    storages = {"0": floats(1, 2, 3, 4)}
    path = tmp_path / "structure.pth"
    cases = [
        (lambda state: [state], r"the file holds a list, not a state_dict"),
        (lambda state: ODict([(3, tensor_value(tensor))]), r"has a key that is 3, not a string"),
        (lambda state: ODict([("w", [1.0, 2.0])]), r"tensor 'w' is a list, not a tensor"),
        (lambda state: {"state_dict": ODict([("w", "weights")])}, r"tensor 'w' is 'weights', not a tensor"),
        # BUILD that would rewrite a recorded tensor after the checks
        (lambda state: ODict([("w", Raw(emit(tensor_value(tensor)) + emit({"args": ()}) + b"b"))]),
         r"tries to set the state of a storage or tensor record"),
        (lambda state: ODict([("w", Call(Global("torch._utils", "_rebuild_tensor_v2"), (1, 2)))]),
         r"'w': _rebuild_tensor_v2 got 2 arguments \(first 1\)"),
        (lambda state: ODict([("w", Call(Global("builtins", "eval"), ("1",)))]), r"refusing to load builtins\.eval"),
    ]
    for wrap, message in cases:
        path.write_bytes(zip_bytes(pickle_bytes(wrap(None)), storages))
        with pytest.raises(reader.CheckpointError, match=message):
            reader.read_state_dict(str(path))
    path.write_bytes(zip_bytes(pickle_bytes({"epoch": 3, "state_dict": state_dict_value([tensor])}), storages))
    np.testing.assert_array_equal(reader.read_state_dict(str(path))["w"], [1, 2, 3, 4])


@pytest.mark.parametrize("size, stride, offset", [((6,), (1,), 0), ((10**8,), (1,), 0), ((1,), (1,), 5),
                                                  ((3,), (-1,), 1), ((), (), 4)])
def test_numpy_checks_each_view_against_the_buffer_once_more(size, stride, offset):
    """Behind the explicit check, the builder (np.ndarray with buffer=) refuses the issue's views by itself."""
    storage = np.frombuffer(floats(1, 2, 3, 4), "<f4")
    with pytest.raises(reader.CheckpointError, match="numpy refuses the view"):
        reader._build("w", storage, offset, size, stride)


def test_unpickling_cannot_be_made_to_allocate_far_more_than_the_pickle(tmp_path):
    """Small pickles that would make the C unpickler allocate gigabytes, or copy a
    built object again and again, are refused or made harmless."""
    path = tmp_path / "pickle.pth"
    storages = {"0": floats(1, 2, 3, 4)}

    def read(pkl):
        path.write_bytes(zip_bytes(pkl, storages))
        return reader.read_state_dict(str(path))

    # LONG_BINPUT 2**31 - 1: the C unpickler would size its memo array to 2**32 pointers (32 GB)
    with pytest.raises(reader.CheckpointError, match=r"memo entry 2147483647 \(byte 3\) after only 0 entries"):
        read(b"\x80\x02}r\xff\xff\xff\x7f.")
    with pytest.raises(reader.CheckpointError, match=r"pickle opcode EMPTY_SET \(byte 2\)"):
        read(b"\x80\x04\x8f.")
    with pytest.raises(reader.CheckpointError, match=r"corrupt \(ValueError: at position 2, opcode b'\\xff' unknown"):
        read(b"\x80\x02\xff.")
    with pytest.raises(reader.CheckpointError, match=r"builds an OrderedDict from arguments"):
        read(pickle_bytes(Call(Global("collections", "OrderedDict"), ([("a", 1)],))))
    # 2,000 OrderedDicts each given (BUILD) one memo'd 1,000-entry state: a plain
    # OrderedDict copies it every time (measured: 52 MB from this 24 KB pickle); ours keeps none of it
    tensor = dict(key="w", type="FloatStorage", skey="0", numel=4, offset=0, size=(4,), stride=(1,))
    big_state = b"}q\x01(" + b"".join(emit(f"k{i}") + b"N" for i in range(1000)) + b"u"
    one_copy = b"h\x02)Rh\x01b"  # OrderedDict() from memo 2, BUILD with memo 1
    # POP (0) drops the references pushed to fill the memo
    junk = b"]q\x00(" + big_state + b"0ccollections\nOrderedDict\nq\x020" + one_copy * 2000 + b"e"
    pkl = b"\x80\x02}(" + emit("state_dict") + emit(state_dict_value([tensor])) + emit("junk") + junk + b"u."
    import tracemalloc

    tracemalloc.start()
    try:
        state = read(pkl)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(state["w"], [1, 2, 3, 4])
    assert len(pkl) < 40_000 and peak < 5_000_000, (len(pkl), peak)


# -- the fuzz test -----------------------------------------------------------------------


def test_fuzzed_checkpoints_load_storage_values_or_raise_checkpoint_error(record_property):
    """N_CASES mutations of the fixture, in N_WORKERS subprocesses; a signal fails the case."""
    if not os.path.exists(PTH):
        pytest.fail(f"the authors' fixture is missing: {os.path.abspath(PTH)} (CI has ../shared)")
    bounds = np.linspace(0, N_CASES, N_WORKERS + 1).astype(int)
    workers = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        # files, not pipes: a full pipe would stall a worker until its turn to be read
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        command = [sys.executable, os.path.abspath(__file__), "--worker", str(a), str(b)]
        workers.append((subprocess.Popen(command, stdout=out, stderr=err, text=True), out, err))
    results, failures = [], []
    for worker, out, err in workers:
        try:
            worker.wait(timeout=600)  # a hang guard, not a timing check
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        out.seek(0), err.seek(0)
        lines = [json.loads(line) for line in out.read().splitlines() if line.endswith("}")]  # not a cut line
        results += [line for line in lines if "outcome" in line]
        if worker.returncode != 0:
            started = [line["start"] for line in lines if "start" in line]
            case = started[-1] if started else None
            kind, what = _case(_Fixture(), case)[:2] if case is not None else (None, None)
            failures.append(f"worker {worker.args[-2:]} ended with {worker.returncode} (negative: killed by "
                            f"that signal) during case {case} ({kind}: {what}): {err.read()[-2000:]}")
    failures += [f"case {r['case']} ({r['kind']}: {r['what']}): {r['outcome']}: {r['detail']}"
                 for r in results if r["outcome"] not in ("loaded", "CheckpointError")]
    assert not failures, "\n".join(failures[:20])
    assert sorted(r["case"] for r in results) == list(range(N_CASES))
    counts = collections.Counter(r["outcome"] if r["outcome"] == "loaded" else f"CheckpointError: {r['reason']}"
                                 for r in results)
    summary = "; ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"\nfuzz: {len(results)} cases; {summary}")
    record_property("fuzz_outcomes", summary)
    # both paths exercised: many views load (and matched the storage), many are refused
    assert counts["loaded"] >= N_CASES // 10
    assert len(results) - counts["loaded"] >= N_CASES // 2
    # no CheckpointError without a reason this test recognises (so the counts mean something)
    assert "CheckpointError: unrecognised" not in counts, [r["detail"] for r in results
                                                          if r.get("reason") == "unrecognised"]


# What each CheckpointError was about, from its message (first match).
REASONS = [
    ("not a zip archive", r"not a zip-format PyTorch checkpoint"),
    ("entry unreadable (CRC, truncated, bad deflate)", r"cannot be read from the archive"),
    ("entry holds other than its declared size", r"declares \d+ bytes but holds"),
    ("impossible header sizes or method", r"stored uncompressed but declares|maximum ratio|compression method|"
                                          r"encrypted"),
    ("over a size limit", r"more than the limit|beyond the limit"),
    ("refused global (code)", r"refusing to load"),
    ("corrupt pickle", r"data\.pkl is corrupt"),
    ("pickle opcode scan (memo index, denied opcode)", r"memo entry|pickle opcode"),
    ("no single data.pkl", r"data\.pkl entries"),
    ("bad persistent id", r"persistent id|storage key is|not a torch storage"),
    ("not a dict of str to tensors", r"not a state_dict|not a string|not a tensor|set the state|"
                                     r"OrderedDict from arguments"),
    ("rebuild arguments", r"_rebuild_tensor_v2 got"),
    ("size/stride/offset not non-negative int64", r"non-negative int64|not a tuple of integers|"
                                                  r"dimensions, more than|sizes .* but \d+ strides"),
    ("unknown dtype", r"unknown dtype"),
    ("missing storage entry", r"names no entry"),
    ("element count != entry size", r"should hold \d+ elements"),
    ("storage used as two dtypes/counts", r"elements here but torch\."),
    ("view outside its storage", r"outside the storage|past the end"),
    ("byte order", r"-endian"),
]


def reason_of(message):
    for reason, pattern in REASONS:
        if re.search(pattern, message):
            return reason
    return "unrecognised"


# -- the fuzz cases (deterministic: case i depends only on SEED and i) --------------------


class _Fixture:
    """The fixture's tensors as records, and a trimmed copy (its small tensors) for cheap cases."""

    def __init__(self):
        with open(PTH, "rb") as file:
            self.zip = file.read()
        archive = zipfile.ZipFile(io.BytesIO(self.zip))
        info = archive.getinfo(PREFIX + "data.pkl")
        self.pkl = archive.read(info)
        name_length, extra_length = struct.unpack_from("<HH", self.zip, info.header_offset + 26)  # local header
        self.pkl_start = info.header_offset + 30 + name_length + extra_length
        assert self.zip[self.pkl_start:self.pkl_start + len(self.pkl)] == self.pkl
        state = _OracleUnpickler(io.BytesIO(self.pkl)).load()
        records = []
        for key, tensor in state.items():
            pid, offset, size, stride = tensor.args[:4]
            records.append(dict(key=key, type=pid.pid[1].name, skey=pid.pid[2], numel=pid.pid[4],
                                offset=offset, size=tuple(size), stride=tuple(stride)))
        small = [r for r in records if r["numel"] <= 2048][:40]
        self.records = small
        self.storages = {r["skey"]: archive.read(f"{PREFIX}data/{r['skey']}") for r in small}


def _dims(rng, numel, max_ndim=3):
    """A random in-bounds view (offset, size, stride) of a storage of `numel` elements."""
    ndim = rng.randrange(max_ndim + 1)
    size = [rng.choice([1, 2, 3, 4, 5]) for _ in range(ndim)]
    stride = [rng.choice([0, 1, 2, 3, 7, numel // 4 or 1]) for _ in range(ndim)]
    for i, s in enumerate(size):
        if s == 1 and rng.random() < 0.3:
            stride[i] = rng.choice([2**40, 2**62, 2**63 - 1])  # unused by a size-1 dimension
    while numel and sum((s - 1) * t for s, t in zip(size, stride)) >= numel:
        i = rng.randrange(ndim)
        stride[i] //= 2
    extent = sum((s - 1) * t for s, t in zip(size, stride))
    if rng.random() < 0.1:
        size.append(0)  # empty: any offset up to the end
        stride.append(1)
        return rng.randrange(numel + 1), tuple(size), tuple(stride)
    return rng.randrange(max(numel - extent, 1)), tuple(size), tuple(stride)


ODD_INTS = [-1, -2**63, 2**63, 2**64, 2**100, 10**8, 2**31, 2**32 - 1]
ODD_VALUES = [True, False, 1.0, 2.5, float("nan"), "3", None, (), [1], {"a": 1}]


def _case(fixture, i):
    """(kind, what, zip bytes, expected outcome or None) of case i."""
    rng = random.Random(SEED * 1_000_003 + i)
    kind = SCHEDULE[i % len(SCHEDULE)]
    records = [dict(r) for r in fixture.records]
    storages = dict(fixture.storages)
    target = rng.choice(records)
    numel = target["numel"]
    what = f"tensor {target['key']}"
    expect, deflate = None, ()

    if kind == "size":
        size = list(target["size"])
        choice = rng.random()
        if choice < 0.5 or not size:
            value = rng.choice(ODD_INTS + ODD_VALUES + [0, 1, rng.randrange(64)])
            if size:
                size[rng.randrange(len(size))] = value
            else:
                size, target["stride"] = [value], (1,)
            what += f": a size -> {value!r}"
            expect = "error" if type(value) is not int or value < 0 or value >= 2**63 else None
        elif choice < 0.75:
            size.append(rng.choice([1, 2, 0]))
            what += f": one more size {size}, strides unchanged"
            expect = "error"
        else:
            size = size[1:]
            what += f": a size dropped {size}"
            expect = "error"
        target["size"] = tuple(size)
    elif kind == "stride":
        stride = list(target["stride"])
        value = rng.choice(ODD_INTS + ODD_VALUES + [0, 1, numel, numel + 1, -stride[0] if stride else -3])
        if stride:
            stride[rng.randrange(len(stride))] = value
            expect = "error" if type(value) is not int or value < 0 or value >= 2**63 else None
        else:
            stride = [value]
            expect = "error"  # one stride for no size
        target["stride"] = tuple(stride)
        what += f": a stride -> {value!r}"
    elif kind == "offset":
        value = rng.choice([numel, numel - 1, numel + 1, -1, 2**63 - 1, 2**63, 2**70, rng.randrange(numel + 8),
                            True, 1.0, None, "0"])
        target["offset"] = value
        what += f": offset -> {value!r} (storage of {numel})"
        if type(value) is not int or value < 0 or value >= 2**63:
            expect = "error"
        elif value >= numel and 0 not in target["size"]:
            expect = "error"
    elif kind == "view_inside":
        target["offset"], target["size"], target["stride"] = _dims(rng, numel)
        what += f": in-bounds view offset {target['offset']} size {target['size']} stride {target['stride']}"
        expect = "load"
    elif kind == "view_random":
        ndim = rng.randrange(4)
        target["size"] = tuple(rng.randrange(7) for _ in range(ndim))
        target["stride"] = tuple(rng.randrange(numel + 2) for _ in range(ndim))
        target["offset"] = rng.randrange(numel + 3)
        what += f": view offset {target['offset']} size {target['size']} stride {target['stride']} of {numel}"
    elif kind == "storage_key":
        other = rng.choice(records)
        value = rng.choice(["missing", 7, None, b"0".decode() + "\x00", "", "../" + target["skey"], "x" * 300,
                            other["skey"], "\ud800"])
        target["skey"] = value
        what += f": storage key -> {value!r}"
        expect = None if value == other["skey"] else "error"
    elif kind == "numel":
        value = rng.choice([numel + 1, numel - 1, 0, 2**40, -1, True, 1.0, 2**63, 2**64, None, numel * 2])
        target["numel"] = value
        what += f": element count {numel} -> {value!r}"
        expect = "error"
    elif kind == "dtype":
        known = ["FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "IntStorage", "ShortStorage",
                 "CharStorage", "ByteStorage", "BoolStorage", "BFloat16Storage"]
        choice = rng.random()
        if choice < 0.4:  # a known dtype, element count and view made consistent: must load
            value = rng.choice(known)
            itemsize = np.dtype({"BFloat16Storage": "<u2"}.get(value, reader._STORAGE_DTYPES.get(value))).itemsize
            target.update(type=value, numel=len(storages[target["skey"]]) // itemsize)
            target["offset"], target["size"], target["stride"] = _dims(rng, target["numel"])
            expect = "load"
        elif choice < 0.7:
            value = rng.choice(known)  # element count unchanged
            target["type"] = value
        else:
            value = rng.choice(["ComplexFloatStorage", "QInt8Storage", "UntypedStorage", "Float8_e4m3fnStorage",
                                "Storage", "TypedStorage"])
            target["type"] = value
            expect = "error"
        what += f": dtype -> {value}"
    elif kind == "storage_bytes":
        data = storages[target["skey"]]
        choice = rng.randrange(5)
        if choice == 0:
            storages[target["skey"]] = data[:-rng.choice([1, 4, len(data)])]
            what += ": storage truncated"
            expect = "error"
        elif choice == 1:
            storages[target["skey"]] = data + bytes(rng.choice([1, 3, 8]))
            what += ": storage longer than its element count"
            expect = "error"
        elif choice == 2:
            del storages[target["skey"]]
            what += ": storage entry removed"
            expect = "error"
        elif choice == 3:  # longer and counted: still loads
            itemsize = len(data) // numel
            target["numel"] = numel + 3
            storages[target["skey"]] = data + bytes(3 * itemsize)
            what += ": storage and element count grown together"
            expect = "load"
        else:
            storages[target["skey"]] = bytes(len(data))  # zeros: deflate reaches a high ratio
            deflate = (target["skey"],)
            what += ": zeros, deflated"
            expect = "load"
    elif kind == "declared_size":
        name = f"{PREFIX}data/{target['skey']}" if rng.random() < 0.8 else PREFIX + "data.pkl"
        deflate = (target["skey"],) if rng.random() < 0.5 else ()
        data = checkpoint(records, storages, deflate=deflate)
        info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
        real = info.file_size
        size = rng.choice([real + 1, real + 4, real - 1, 0, 2**31, 2**32 - 1, 3 * 2**30, real * 2000])
        both = rng.random() < 0.5 and not deflate
        what += f": {name} declared {real} -> {size} bytes{' (and compressed size)' if both else ''}" \
                f"{' deflated' if deflate and name != PREFIX + 'data.pkl' else ''}"
        return kind, what, patch_declared_sizes(data, name, size, size if both else None), "error"
    elif kind == "pid":
        value = rng.choice([
            ("storage",), ("module", Global("torch", "FloatStorage"), target["skey"], "cpu", numel),
            ["storage", Global("torch", "FloatStorage"), target["skey"], "cpu", numel],
            ("storage", "FloatStorage", target["skey"], "cpu", numel),
            ("storage", Global("torch", "FloatStorage"), target["skey"], "cpu", numel, 0),
            ("storage", Global("torch", "FloatStorage"), 0, "cpu", numel), 7, None, "storage",
        ])
        target["pid"] = value
        what += ": persistent id -> " + repr(value)[:60]
        expect = "error"
    elif kind == "structure":
        choice = i % 13  # every variant in turn (the kind's slots shift by one each schedule cycle)
        tensor = tensor_value(target)
        wraps = {
            0: (lambda s: {"state_dict": s}, "load", "{'state_dict': ...}"),
            1: (lambda s: {"model": s, "epoch": 3}, "load", "{'model': ...}"),
            2: (lambda s: ODict([("module." + r["key"], tensor_value(r)) for r in records]), "load",
                "DataParallel prefixes"),
            3: (lambda s: [s], "error", "a list"),
            4: (lambda s: ODict([(rng.choice([1, None, 2.5, (1,)]), tensor)]), "error", "a non-str key"),
            5: (lambda s: ODict([("w", rng.choice([1, "x", [tensor], {"a": tensor}, None]))]), "error",
                "a non-tensor value"),
            6: (lambda s: ODict([("w", Call(Global("torch._utils", "_rebuild_parameter"),
                                            (tensor, True, ODict([]))))]), "load", "an nn.Parameter"),
            7: (lambda s: ODict([("w", Call(Global(*rng.choice([("os", "system"), ("builtins", "eval"),
                                                                 ("numpy", "frombuffer"), ("torch", "load"),
                                                                 ("torch._utils", "_rebuild_qtensor")])),
                                            ("x",)))]), "error", "a refused global"),
            8: (lambda s: ODict([("w", Raw(emit(tensor) + emit({"args": (1,)}) + b"b"))]), "error",
                "BUILD on a tensor"),
            9: (lambda s: ODict([]), "load", "an empty dict"),
            10: (lambda s: ODict([("w", tensor_value(dict(target, size=Raw(b"N" + b"\x85" * 100_000 + b"\x85"))))]),
                 "error", "a 100,000-deep nested tuple as a size"),
            11: (lambda s: Raw(emit(s) + b"r" + struct.pack("<I", rng.choice([2**31 - 1, 2**24, 1000]))), "error",
                 "a memo index far past the entries stored"),
            12: (lambda s: Call(Global("collections", "OrderedDict"), ([("w", tensor)],)), "error",
                 "OrderedDict(arguments)"),
        }
        wrap, expect, label = wraps[choice]
        what = f"structure: {label}"
        return kind, what, checkpoint(records, storages, wrap=wrap), expect
    elif kind == "pickle_flip":
        data = bytearray(pickle_bytes(state_dict_value(records)))
        _mutate_bytes(rng, data, 1, 8)
        what = "trimmed data.pkl, bytes flipped"
        return kind, what, zip_bytes(bytes(data), storages), None
    elif kind == "pickle_cut":
        data = pickle_bytes(state_dict_value(records))
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data = data[:at]
            what = f"trimmed data.pkl cut at {at}"
        else:
            data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) + data[at:]
            what = f"trimmed data.pkl, random bytes inserted at {at}"
        return kind, what, zip_bytes(data, storages), None
    elif kind == "zip_flip":
        data = bytearray(checkpoint(records, storages))
        if rng.random() < 0.2:
            cut = rng.randrange(len(data))
            what = f"trimmed zip cut at {cut} of {len(data)}"
            return kind, what, bytes(data[:cut]), "error"
        _mutate_bytes(rng, data, 1, 6)
        return kind, "trimmed zip, bytes flipped", bytes(data), None
    elif kind == "fixture_pickle_flip":
        # the authors' own data.pkl, flipped in place with its CRC updated, among all its storages
        pkl = bytearray(fixture.pkl)
        _mutate_bytes(rng, pkl, 1, 4)
        data = bytearray(fixture.zip)
        data[fixture.pkl_start:fixture.pkl_start + len(pkl)] = pkl
        return kind, "fixture data.pkl, bytes flipped", _with_crc(bytes(data), PREFIX + "data.pkl", pkl), None
    elif kind == "fixture_zip_flip":
        data = bytearray(fixture.zip)
        _mutate_bytes(rng, data, 1, 4)
        return kind, "fixture zip, bytes flipped", bytes(data), None
    return kind, what, checkpoint(records, storages, deflate=deflate), expect


def _mutate_bytes(rng, data, low, high):
    for _ in range(rng.randint(low, high)):
        at = rng.randrange(len(data))
        data[at] = data[at] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)


def _with_crc(data, name, content):
    """`data` with `name`'s CRC in its central directory and local header set to that of `content`."""
    data = bytearray(data)
    crc = zlib.crc32(content)
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(name)
    struct.pack_into("<I", data, info.header_offset + 14, crc)
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        length, = struct.unpack_from("<H", data, position + 28)
        if bytes(data[position + 46:position + 46 + length]) == name.encode():
            struct.pack_into("<I", data, position + 16, crc)
            break
        position = data.find(b"PK\x01\x02", position + 4)
    return bytes(data)


KIND_WEIGHTS = [("size", 4), ("stride", 4), ("offset", 4), ("view_inside", 4), ("view_random", 5),
                ("storage_key", 2), ("numel", 2), ("dtype", 3), ("storage_bytes", 3), ("declared_size", 3),
                ("pid", 2), ("structure", 4), ("pickle_flip", 5), ("pickle_cut", 2), ("zip_flip", 4),
                ("fixture_pickle_flip", 1), ("fixture_zip_flip", 1)]
SCHEDULE = [kind for kind, weight in KIND_WEIGHTS for _ in range(weight)]


# -- the oracle: each view computed independently from the storage bytes -----------------


class _OracleTensor:
    def __init__(self, args):
        self.args = args


class _OracleType:
    def __init__(self, name):
        self.name = name


class _OraclePid:
    def __init__(self, pid):
        self.pid = pid


class _OracleUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda *args: _OracleTensor(args)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *unused: data
        if module == "torch":
            return _OracleType(name)
        raise AssertionError(f"the reader loaded a file with the global {module}.{name}")

    def persistent_load(self, pid):
        return _OraclePid(pid)


def expected_state(data):
    """{name: array} computed from the archive without the reader: each element's storage
    index by explicit arithmetic, asserted inside the storage."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    prefix = name[:-len("data.pkl")]
    value = _OracleUnpickler(io.BytesIO(archive.read(name))).load()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(value, dict) and isinstance(value.get(key), dict):
            value = value[key]
            break
    expected = {}
    for key, tensor in value.items():
        pid, offset, size, stride = tensor.args[:4]
        type_name, storage_key = pid.pid[1].name, pid.pid[2]
        raw = archive.read(f"{prefix}data/{storage_key}")
        if type_name == "BFloat16Storage":
            storage = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4")
        else:
            storage = np.frombuffer(raw, np.dtype(reader._STORAGE_DTYPES[type_name]).newbyteorder("<"))
        size, stride = tuple(size), tuple(stride)
        count = int(np.prod(size, dtype=object)) if size else 1
        if count == 0:
            assert 0 <= offset <= storage.size, (key, offset, storage.size)
            expected[key] = np.zeros(size, storage.dtype)
            continue
        flat = np.full(count, offset, dtype=object)  # Python ints: no overflow whatever the strides
        indices = np.indices(size, dtype=np.int64).reshape(len(size), count)
        for axis, (s, t) in enumerate(zip(size, stride)):
            if s > 1:  # a size-1 dimension's index is always 0
                flat = flat + indices[axis].astype(object) * t
        assert all(0 <= f < storage.size for f in (flat.min(), flat.max())), \
            f"{key}: the view reads elements {flat.min()}..{flat.max()} of a storage of {storage.size}"
        expected[key] = storage[flat.astype(np.int64)].reshape(size)
    if expected and all(k.startswith("module.") for k in expected):
        expected = {k[len("module."):]: v for k, v in expected.items()}
    return expected


def run_case(fixture, i):
    kind, what, data, expect = _case(fixture, i)
    result = dict(case=i, kind=kind, what=what)
    try:
        state = reader.read_state_dict(io.BytesIO(data))
    except reader.CheckpointError as error:
        message = str(error)
        result.update(outcome="CheckpointError", reason=reason_of(message), detail=message[:300])
        if expect == "load":
            result.update(outcome="refused a valid checkpoint")
        return result
    except BaseException as error:  # noqa: B902 - any other exception is what the test catches
        result.update(outcome=f"other exception {type(error).__name__}", detail=str(error)[:300])
        return result
    if expect == "error":
        result.update(outcome="loaded a checkpoint it should refuse", detail="")
        return result
    try:
        reference = expected_state(data)
        assert list(state) == list(reference), (list(state)[:5], list(reference)[:5])
        for key, array in state.items():
            want = reference[key]
            assert array.shape == want.shape and array.dtype == want.dtype, (key, array.shape, want.shape)
            assert array.tobytes() == want.tobytes(), f"{key}: values differ from the storage's"
    except Exception as error:  # noqa: B902
        result.update(outcome="loaded values not from the storage", detail=f"{type(error).__name__}: {error}"[:300])
        return result
    result.update(outcome="loaded", detail=f"{len(state)} tensors")
    return result


def _worker(start, stop):
    fixture = _Fixture()
    for i in range(start, stop):
        print(json.dumps({"start": i}), flush=True)  # the last one names the case if a signal kills us
        print(json.dumps(run_case(fixture, i)), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(int(sys.argv[2]), int(sys.argv[3]))
