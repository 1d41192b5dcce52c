"""Writes weight files built to attack the readers, and a manifest of what
each must do, for the HostileFiles tests (tests/test_hostile_files.cpp).

Usage: make_hostile_files.py --out DIR [--small]

Every file is made by hand, opcode by opcode and header by header, the way
an attacker would make it: deep and shared pickled values, TorchScript
archives whose classes run code when loaded, archives that two zip readers
would read differently, records that inflate a thousandfold, a FIFO. The
manifest (DIR/manifest.json) gives, per file, the class of attack and what
each of the three public calls (inspect_checkpoint, read_state_dict,
load_state_dict) must do: "ok", "error:<part of the message>", or "any"
(either, within the time and memory bounds). --small makes every file at
most 64 KiB, for the fuzzers' seed corpora (fuzz/make_seeds.py).
"""

import argparse
import io
import json
import os
import struct
import zipfile
import zlib


# ---- pickles, opcode by opcode ------------------------------------------------


class Pickle:
    """Protocol-2 opcodes appended to a buffer, with a memo of globals."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = {}

    def op(self, code):
        self.out += code
        return self

    def put(self, slot):
        if slot < 256:
            self.out += b"q" + bytes([slot])
        else:
            self.out += b"r" + struct.pack("<I", slot)
        return self

    def get(self, slot):
        if slot < 256:
            self.out += b"h" + bytes([slot])
        else:
            self.out += b"j" + struct.pack("<I", slot)
        return self

    def global_(self, module, name):
        key = (module, name)
        if key in self.memo:
            return self.get(self.memo[key])
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        slot = 1000000 + len(self.memo)
        self.memo[key] = slot
        return self.put(slot)

    def str_(self, s):
        b = s.encode()
        self.out += b"X" + struct.pack("<I", len(b)) + b
        return self

    def int_(self, v):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            self.out += b"\x8a\x08" + struct.pack("<q", v)
        return self

    def mark(self):
        return self.op(b"(")

    def tuple_(self):
        return self.op(b"t")

    def stop(self):
        return bytes(self.out + b".")

    def storage(self, key, numel, dtype="FloatStorage"):
        """A BINPERSID storage reference in torch.save's zip form."""
        self.mark().str_("storage").global_("torch", dtype).str_(key)
        self.str_("cpu").int_(numel).tuple_().op(b"Q")
        return self

    def tensor(self, key, sizes, dtype="FloatStorage"):
        """_rebuild_tensor_v2(storage, 0, sizes, contiguous strides, False,
        OrderedDict())."""
        numel = 1
        for s in sizes:
            numel *= s
        strides, step = [], 1
        for s in reversed(sizes):
            strides.insert(0, step)
            step *= s
        self.global_("torch._utils", "_rebuild_tensor_v2").mark()
        self.storage(key, numel, dtype).int_(0)
        self.mark()
        for s in sizes:
            self.int_(s)
        self.tuple_().mark()
        for s in strides:
            self.int_(s)
        self.tuple_().op(b"\x89")
        self.global_("collections", "OrderedDict").op(b")R")
        return self.tuple_().op(b"R")


# ---- zip archives, header by header ---------------------------------------


class Zip:
    """Records and a central directory written by hand, so that names,
    offsets and directories can disagree on purpose."""

    def __init__(self):
        self.out = bytearray()
        self.entries = []

    def record(self, name, data, method=0, declared=None, local_name=None):
        """Appends a local header and data; returns its directory entry."""
        raw = data
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = c.compress(raw) + c.flush()
        size = len(raw) if declared is None else declared
        local = (local_name or name).encode()
        entry = {
            "name": name.encode(),
            "offset": len(self.out),
            "crc": zlib.crc32(raw),
            "csize": len(data),
            "size": size,
            "method": method,
        }
        self.out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0,
            entry["crc"], len(data), size, len(local), 0)
        self.out += local + data
        self.entries.append(entry)
        return entry

    def directory(self, entries=None, comment=b""):
        """Appends a central directory of `entries` and its end record."""
        entries = self.entries if entries is None else entries
        start = len(self.out)
        for e in entries:
            self.out += struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, e["method"], 0, 0,
                e["crc"], e["csize"], e["size"], len(e["name"]), 0, 0, 0, 0, 0,
                e["offset"])
            self.out += e["name"]
        size = len(self.out) - start
        self.out += struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), size,
            start, len(comment))
        self.out += comment
        return self

    def bytes(self):
        return bytes(self.out)


def torch_zip(pkl, storages=(), extra=(), byteorder="little",
              version=(b"3\n", 0)):
    """A torch.save archive: data.pkl, byteorder, data/<key> records, the
    `extra` records (name, data, method, declared size) and version."""
    z = Zip()
    z.record("archive/data.pkl", pkl)
    z.record("archive/byteorder", byteorder.encode())
    for key, data in storages:
        z.record("archive/data/" + key, data)
    for name, data, method, declared in extra:
        z.record("archive/" + name, data, method, declared)
    z.record("archive/version", version[0], version[1])
    return z.directory().bytes()


def script_zip(pkl, storages=()):
    """A TorchScript archive: a torch.save-like archive with
    constants.pkl."""
    return torch_zip(pkl, storages, extra=[
        ("constants.pkl", Pickle().op(b")").stop(), 0, None)])


def legacy(pkl_root, storages=()):
    """torch.save's legacy stream: magic, protocol, sys_info, the root
    pickle, the storage keys, then each storage's bytes."""
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    proto = b"\x80\x02M\xe9\x03."
    info = Pickle().op(b"}").mark().str_("little_endian").op(b"\x88")
    info = info.op(b"u").stop()
    keys = Pickle().mark()
    for key, _ in storages:
        keys.str_(key)
    out = magic + proto + info + pkl_root + keys.op(b"l").stop()
    for _, data in storages:
        out += struct.pack("<q", len(data) // 4) + data
    return out


def legacy_tensor(p, key, n):
    """_rebuild_tensor_v2 over a legacy storage reference."""
    p.global_("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().str_("storage").global_("torch", "FloatStorage").str_(key)
    p.str_("cpu").int_(n).op(b"N").tuple_().op(b"Q").int_(0)
    p.mark().int_(n).tuple_().mark().int_(1).tuple_().op(b"\x89")
    p.global_("collections", "OrderedDict").op(b")R")
    return p.tuple_().op(b"R")


FLOATS = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


def state_dict_pickle(names, one_tensor=True):
    """An OrderedDict of `names` -> one 4-float tensor (storage "0"), or
    as many tensors on that one storage."""
    p = Pickle().global_("collections", "OrderedDict").op(b")R").mark()
    first = True
    for name in names:
        p.str_(name)
        if first or not one_tensor:
            p.tensor("0", [4]).put(1)
            first = False
        else:
            p.get(1)
    return p.op(b"u").stop()


# ---- the attacks -------------------------------------------------------------


def nested_rebuild(levels):
    """_rebuild_from_type_v2(func, type, args, state) whose func is itself,
    `levels` deep: each level is a tuple inside the last."""
    p = Pickle()
    p.global_("torch._tensor", "_rebuild_from_type_v2").put(1).op(b"0")
    p.global_("torch", "Tensor").put(2).op(b"0")
    p.get(1)
    for _ in range(levels):
        p.mark().get(1).get(2)
    p.mark().tuple_()  # the innermost args: ()
    for _ in range(levels):
        p.op(b"}").tuple_()
    return p.op(b"R").stop()


def nested_lists(levels):
    p = Pickle()
    for _ in range(levels):
        p.op(b"]")
    for _ in range(levels - 1):
        p.op(b"a")
    return p.stop()


def nested_script_modules(levels):
    """TorchScript module objects, each the only attribute of the last."""
    p = Pickle()
    for _ in range(levels):
        p.global_("__torch__", "M").op(b")\x81}").str_("m")
    p.op(b"N")
    for _ in range(levels):
        p.op(b"sb")
    return p.stop()


def module_dag(levels, script=False):
    """Pickled modules whose two children are one module, `levels` deep:
    2**levels paths over `levels` objects."""
    p = Pickle()
    cls = ("__torch__", "M") if script else ("torch.nn.modules.module", "Module")
    # The leaf holds the one tensor.
    p.global_(*cls).op(b")\x81}")
    if script:
        p.str_("w").tensor("0", [4]).op(b"s")
    else:
        p.str_("_parameters").global_("collections", "OrderedDict").op(b")R")
        p.str_("w").tensor("0", [4]).op(b"s")
        p.op(b"s").str_("_modules").op(b"}s")
    p.op(b"b").put(0)
    for level in range(levels):
        p.op(b"0").global_(*cls).op(b")\x81}")
        if script:
            p.str_("a").get(level).op(b"s").str_("b").get(level).op(b"s")
        else:
            p.str_("_parameters").op(b"}s").str_("_modules")
            p.op(b"}").str_("a").get(level).op(b"s").str_("b").get(level)
            p.op(b"ss")
        p.op(b"b").put(level + 1)
    return p.stop()


def shared_dict_many_keys(n):
    """A state dict of n names, and a root with n entries that all refer to
    it: every entry tried in turn is n * n steps."""
    p = Pickle().op(b"}").mark()
    for k in range(n):
        p.str_("t%d" % k)
        if k == 0:
            p.tensor("0", [4]).put(1)
        else:
            p.get(1)
    p.op(b"u").put(2).op(b"0").op(b"}").mark()
    for k in range(n):
        p.str_("x%d" % k).get(2)
    return p.op(b"u").stop()


def shared_dict_dag(levels):
    """d0 = {"w": tensor}; d(k+1) = {"a": dk, "b": dk}: 2**levels paths."""
    p = Pickle().op(b"}").str_("w").tensor("0", [4]).op(b"s").put(0)
    for level in range(levels):
        p.op(b"0}").str_("a").get(level).op(b"s").str_("b").get(level)
        p.op(b"s")
        p.put(level + 1)
    return p.stop()


def set_copies(n, copies):
    """A list of n ints, made into a set `copies` times."""
    p = Pickle().op(b"]").mark()
    for k in range(n):
        p.int_(k % 256)
    p.op(b"e").put(1).op(b"0").global_("builtins", "set").put(2).op(b"0")
    p.op(b"]").mark()
    for _ in range(copies):
        p.get(2).mark().get(1).tuple_().op(b"R")
    return p.op(b"e").stop()


def codec_copies(n, copies):
    """A string of n characters, encoded to bytes `copies` times."""
    p = Pickle().str_("a" * n).put(1).op(b"0").str_("latin1").put(2).op(b"0")
    p.global_("_codecs", "encode").put(3).op(b"0").op(b"]").mark()
    for _ in range(copies):
        p.get(3).get(1).get(2).op(b"\x86R")
    return p.op(b"e").stop()


def many_nones(n):
    return Pickle().op(b"]").mark().op(b"N" * n).op(b"e").stop()


def many_classes(n):
    """A dict whose n entries are objects of n different classes, with
    long names: an error that listed them all would be megabytes long."""
    p = Pickle().op(b"}").mark()
    for k in range(n):
        p.str_("e%d" % k).global_("m%d" % k, "Class%06d%s" % (k, "x" * 40))
        p.op(b")R")
    return p.op(b"u").stop()


def long_names(depth, name_len):
    """Modules nested `depth` deep, each with a name of name_len characters
    and the one tensor: the state dict's keys grow with the square of the
    depth."""
    p = Pickle()
    name = "n" * name_len
    for level in range(depth):
        p.global_("torch.nn.modules.module", "Module").op(b")\x81}")
        p.str_("_parameters").op(b"}").str_("w")
        if level == 0:
            p.tensor("0", [4]).put(1)
        else:
            p.get(1)
        p.op(b"s").op(b"s").str_("_modules").op(b"}").str_(name)
    p.op(b"N")
    for _ in range(depth):
        p.op(b"ssb")
    return p.stop()


def safetensors_file(header, data=b""):
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# ---- the corpus ------------------------------------------------------------


def script_archives(out, add):
    """Real TorchScript archives whose classes run code when LibTorch loads
    them (__setstate__): made by torch.jit, as an attacker would."""
    try:
        import torch
    except ImportError:
        return

    class Sets(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.ones(2)

        @torch.jit.export
        def __getstate__(self):
            return (self.x, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[torch.Tensor, bool]):
            print("RESNET_HOSTILE_CODE_RAN")
            self.x = torch.zeros(1 << 28)
            i = 0
            while i >= 0:
                i = i + 1
            self.training = state[1]

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)
            self.hook = Sets()

        def forward(self, x):
            return self.conv(x) + self.hook.x.sum()

    torch.manual_seed(0)
    m = torch.jit.script(Outer())
    buf = io.BytesIO()
    torch.jit.save(m, buf)
    add("script_setstate_runs_code.pt", buf.getvalue(), "torchscript-code",
        "a TorchScript module whose class prints, allocates 1 GiB and loops "
        "for ever in __setstate__ when LibTorch loads it; its weights read "
        "without running it",
        expect="ok", keys=["conv.weight", "conv.bias"], absent="RESNET_HOSTILE_CODE_RAN")


# Tuple is needed by the TorchScript annotation above.
from typing import Tuple  # noqa: E402


def make(out, small):
    os.makedirs(out, exist_ok=True)
    files = []
    limit = 64 * 1024

    def add(name, data, kind, about, expect="error:", keys=None, per_call=None,
            absent=None, values=None):
        if data is not None:
            if small and len(data) > limit:
                return
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
        calls = {c: expect for c in ("inspect", "read", "load")}
        calls.update(per_call or {})
        entry = {"file": name, "class": kind, "about": about, "expect": calls}
        if keys:
            entry["keys"] = keys
        if absent:
            entry["absent"] = absent
        if values:
            entry["values"] = values
        files.append(entry)

    s = 8 if small else 1  # divides the sizes for --small
    budget = "error:reading it would take more"
    # Deep values are refused by depth, or by memory where the nodes come
    # first.
    deep = "error:nested deeper|reading it would take more"
    vals = [("0", FLOATS)]

    # 1. Recursion in the reader's own code.
    add("rebuild_from_type_nested.pt",
        torch_zip(nested_rebuild(140000 // s // 10 if small else 140000)),
        "recursion", "_rebuild_from_type_v2 calling itself 140,000 levels deep",
        deep)
    add("rebuild_from_type_nested_legacy.pt",
        legacy(nested_rebuild(140000 // s // 10 if small else 140000)),
        "recursion", "the same in the legacy format", deep)
    add("nested_lists.pt",
        torch_zip(nested_lists(200000 // s // 10 if small else 200000)),
        "recursion", "lists nested 200,000 deep", deep)
    add("script_nested_modules.pt",
        script_zip(nested_script_modules(60000 // s // 10 if small else 60000)),
        "recursion", "TorchScript module objects nested 60,000 deep", deep)

    # 2. TorchScript archives: read by the library's pickle reader.
    bad = Pickle().global_("__torch__", "M").op(b")\x81}").mark()
    add("script_malformed_pickle.pt",
        script_zip(bad.out + b"\xff\x00."), "torchscript-code",
        "a TorchScript archive whose data.pkl is cut short by a bad opcode",
        "error:unsupported opcode")
    script_archives(out, add) if not small else None

    # 3. Hangs.
    fifo = os.path.join(out, "fifo.pt")
    if not small:
        if os.path.exists(fifo):
            os.remove(fifo)
        os.mkfifo(fifo)
        add("fifo.pt", None, "hang", "a FIFO: opening it to read waits for a "
            "writer", "error:FIFO")
    add("module_dag.pt", torch_zip(module_dag(64), vals), "hang",
        "pickled modules whose two children are one module, 64 levels: "
        "2^64 paths", budget)
    add("script_module_dag.pt", script_zip(module_dag(64, script=True), vals),
        "hang", "the same with TorchScript module objects", budget)
    n = 40000 // s
    add("shared_dict_many_keys.pt",
        torch_zip(shared_dict_many_keys(n), vals), "hang",
        "a state dict of %d names under %d entries: quadratic if each entry "
        "is tried afresh" % (n, n), "ok", keys=["t0", "t%d" % (n - 1)])
    add("shared_dict_dag.pt", torch_zip(shared_dict_dag(64), vals), "hang",
        "dicts whose two entries are one dict, 64 levels: 2^64 paths",
        per_call={"inspect": "ok", "read": "error:found no state dict",
                  "load": "error:found no state dict"})

    # 4. Memory out of proportion.
    add("set_copies.pt", torch_zip(set_copies(100000 // s, 100000 // s // 4)),
        "memory", "a list of 100,000 values made into a set 25,000 times",
        budget)
    add("codec_copies.pt", torch_zip(codec_copies(500000 // s, 20000 // s)),
        "memory", "a 500 kB string encoded to bytes 20,000 times", budget)
    add("many_values.pt", torch_zip(many_nones(1000000 // s)), "memory",
        "a million values of one byte each", budget)
    add("many_classes.pt", torch_zip(many_classes(20000 // s)), "memory",
        "20,000 objects of 20,000 classes with long names: an error listing "
        "them all", "error:found no state dict",
        per_call={"inspect": "ok"})
    add("long_names.pt", torch_zip(long_names(150 // (2 if small else 1), 8000 // s), vals), "memory",
        "modules nested 150 deep with names of 8,000 characters: keys grow "
        "with the square of the depth", "any")
    big = 1 << 30
    add("deflated_pickle_bomb.pt",
        _deflated_pickle(big // (s * 64) if small else big), "memory",
        "a deflated data.pkl that declares 1 GiB (1000:1)", budget)
    add("deflated_storage_bomb.pt",
        _deflated_storage(big // (s * 64) if small else big), "memory",
        "a deflated tensor record that declares 1 GiB", budget)
    add("deflated_version_bomb.pt",
        torch_zip(state_dict_pickle(["w"]), vals,
                  version=(b"\x00" * (big // 16 // s), 8)),
        "memory", "a deflated version record of 64 MiB (LibTorch's reader "
        "inflated it before any check); never read", "ok", keys=["w"])

    # 5. Readers that would disagree.
    z = Zip()
    z.record("archive/data.pkl", state_dict_pickle(["first"]))
    z.record("archive/data.pkl", state_dict_pickle(["second"]))
    z.record("archive/data/0", FLOATS)
    z.record("archive/version", b"3\n")
    add("duplicate_names.pt", z.directory().bytes(), "ambiguous",
        "two records named data.pkl with different state dicts",
        "error:two records are named")
    add("two_directories.pt", _two_directories(), "ambiguous",
        "a second directory and end record in the first's comment",
        "error:two end-of-directory records")
    add("zip64_disagrees.pt", _zip64_disagrees(), "ambiguous",
        "classic and zip64 end records with different record counts",
        "error:disagree")
    add("prepended_directory.pt", _moved_directory(), "ambiguous",
        "an end record that points at one directory while another lies "
        "before it", "error:does not end where the end record lies")
    z = Zip()
    z.record("archive/data.pkl", state_dict_pickle(["w", "v"]))
    z.record("archive/byteorder", b"big")
    e = z.record("archive/data/0", struct.pack(">4f", 1.0, 2.0, 3.0, 4.0))
    z.record("archive/version", b"3\n")
    other = dict(e, name=b"archive/data/1")
    add("overlapping_records.pt", z.directory(z.entries + [other]).bytes(),
        "ambiguous", "two names for one record's bytes (big-endian)",
        "error:disagrees with the directory")
    add("big_endian_shared_storage.pt",
        torch_zip(state_dict_pickle(["bn1.weight", "bn1.bias"], False),
                  [("0", struct.pack(">4f", 1.0, 2.0, 3.0, 4.0))],
                  byteorder="big"),
        "ambiguous", "a big-endian archive whose two tensors share one record: "
        "bn1.weight must be 1.0 on every path", "ok",
        keys=["bn1.weight", "bn1.bias"],
        values={"bn1.weight": 1.0, "bn1.bias": 1.0})
    z = Zip()
    z.record("archive/data.pkl", state_dict_pickle(["w"]),
             local_name="archive/data.pkX")
    z.record("archive/data/0", FLOATS)
    z.record("archive/version", b"3\n")
    add("local_name_differs.pt", z.directory().bytes(), "ambiguous",
        "a local header whose name is not the directory's",
        "error:disagrees with the directory")
    add("data_after_archive.pt",
        torch_zip(state_dict_pickle(["w"]), vals) + b"\x00" * 100,
        "ambiguous", "bytes after the end record",
        "error:no end-of-directory record")

    # The safetensors header and the legacy format.
    deep_header = b'{"t":' + b"[" * (200000 // s)
    add("safetensors_deep.safetensors",
        struct.pack("<Q", len(deep_header)) + deep_header, "recursion",
        "a safetensors header of 200,000 nested lists",
        "error:nests deeper")
    entries = {"t%d" % k: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
               for k in range(20000 // s)}
    add("safetensors_many_entries.safetensors", safetensors_file(entries),
        "memory", "20,000 empty tensors in a 1 MB header", "any")
    add("safetensors_long_shape.safetensors",
        safetensors_file({"t": {"dtype": "F32", "shape": [1] * (100000 // s),
                                "data_offsets": [0, 4]}}, b"\x00" * 4),
        "memory", "a tensor with 100,000 dimensions", "error:dimensions")
    p = Pickle().op(b"}").str_("w")
    legacy_tensor(p, "0", 1 << 40)
    add("legacy_huge_storage.pt", legacy(p.op(b"s").stop()), "memory",
        "a legacy storage that declares 4 TiB", "error:storages declare")
    p = Pickle().op(b"}").mark()
    for k in range(20000 // s):
        p.str_("w%d" % k)
        legacy_tensor(p, "k%d" % k, 0)
    add("legacy_many_storages.pt",
        legacy(p.op(b"u").stop()), "memory",
        "20,000 legacy storages, none of them in the file",
        "error:have no data|reading it would take more")

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"files": files}, f, indent=1)
    return files


def _deflated_pickle(declared):
    """data.pkl deflated from a pickle padded with `declared` bytes of
    FRAME-free no-ops (a long BINUNICODE)."""
    z = Zip()
    body = b"\x80\x02X" + struct.pack("<I", declared - 8) + b"a" * (declared - 8)
    body += b"."
    # Compressing a GiB in Python is slow: deflate a repeated block instead.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"a" * (1 << 20)
    data = c.compress(body[:7])
    left = declared - 8
    while left > 0:
        n = min(left, len(chunk))
        data += c.compress(chunk[:n])
        left -= n
    data += c.compress(b".") + c.flush()
    entry = {"name": b"archive/data.pkl", "offset": 0, "crc": 0,
             "csize": len(data), "size": declared, "method": 8}
    z.out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0,
                         len(data), declared, len(entry["name"]), 0)
    z.out += entry["name"] + data
    z.entries.append(entry)
    return z.directory().bytes()


def _deflated_storage(declared):
    p = Pickle().op(b"}").str_("w").tensor("0", [declared // 4]).op(b"s")
    z = Zip()
    z.record("archive/data.pkl", p.stop())
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b""
    chunk = b"\x00" * (1 << 20)
    left = declared
    while left > 0:
        n = min(left, len(chunk))
        data += c.compress(chunk[:n])
        left -= n
    data += c.flush()
    entry = {"name": b"archive/data/0", "offset": len(z.out), "crc": 0,
             "csize": len(data), "size": declared, "method": 8}
    z.out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0,
                         len(data), declared, len(entry["name"]), 0)
    z.out += entry["name"] + data
    z.entries.append(entry)
    return z.directory().bytes()


def _two_directories():
    """Directory A and its end record, whose comment holds directory B and
    an end record that ends the file: a reader taking the last end record
    sees B, one taking the first sees A."""
    z = Zip()
    a = z.record("archive/data.pkl", state_dict_pickle(["first"]))
    b = z.record("archive/data/0", FLOATS)
    v = z.record("archive/version", b"3\n")
    z.directory([a, b, v])
    end_a = bytes(z.out[-22:])
    del z.out[-22:]
    # B (data/0 alone) with its own end record, laid out where A's comment
    # starts.
    comment_start = len(z.out) + 22
    tmp = Zip()
    tmp.out = bytearray(comment_start)
    tmp.directory([b, v])
    comment = bytes(tmp.out[comment_start:])
    end_a = end_a[:20] + struct.pack("<H", len(comment))
    return bytes(z.out) + end_a + comment


def _zip64_disagrees():
    """Classic and zip64 end records that give different record counts: a
    reader that takes one sees one record, a reader that takes the other,
    two."""
    z = Zip()
    z.record("archive/data.pkl", state_dict_pickle(["w"]))
    z.record("archive/data/0", FLOATS)
    z.record("archive/version", b"3\n")
    cd_start = len(z.out)
    z.directory()
    end = bytes(z.out[-22:])
    del z.out[-22:]
    cd_size = len(z.out) - cd_start
    record_at = len(z.out)
    count = len(z.entries)
    z.out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0,
                         count - 1, count - 1, cd_size, cd_start)
    z.out += struct.pack("<IIQI", 0x07064B50, 0, record_at, 1)
    return bytes(z.out) + end


def _moved_directory():
    """A directory that is not where its end record says: a stub directory
    lies before the end record, the real one earlier."""
    z = Zip()
    z.record("archive/data.pkl", state_dict_pickle(["w"]))
    z.record("archive/data/0", FLOATS)
    z.record("archive/version", b"3\n")
    real_start = len(z.out)
    z.directory()
    end = z.out[-22:]
    del z.out[-22:]
    # A second (empty-named) directory block between the first and the end.
    z.out += b"PK\x01\x02" + b"\x00" * 42
    end = end[:16] + struct.pack("<I", real_start) + end[20:]
    return bytes(z.out) + bytes(end)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    files = make(args.out, args.small)
    print("%d hostile files in %s" % (len(files), args.out))


if __name__ == "__main__":
    main()
