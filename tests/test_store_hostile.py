"""Saved and allocator state are untrusted input (issue 10 B1).

A machine directory edited with recomputed checksums, a corrupt list in its RAM file, special
files in place of its files, absurd integers: each gives one DamagedMachineFile line, never a
traceback, a hang or memory proportional to what the file claims. The allocator and restore()
refuse frames that would let compiled code index outside its arrays.
"""
import hashlib
import io
import json
import os
import signal
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import kjcore
from kjcore import store
from kjcore.constants import IND_INDIRECTION
from kjcore.cpu.state import A20_CLEAR, KBC_D1
from kjcore.memory import FrameAllocator
from kjcore.store import DamagedMachineFile, open_machine, save_machine

MiB = 1 << 20


def _machine():
    m = kjcore.Machine(ram_size=16 * MiB, crashkernel=(8 * MiB, 4 * MiB))
    m.kexec_load(0x400000, [kjcore.Segment(b"\x90" * 5000, 0x400000, 0x2000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    m.kexec_load(8 * MiB, [kjcore.Segment(b"crash", 8 * MiB, 0x1000)], kjcore.KEXEC_ON_CRASH)
    return m


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m"
    save_machine(_machine(), path)
    return path


@pytest.fixture(autouse=True)
def no_hang():
    """A hang (a FIFO opened for reading, a list walked forever) fails the test instead."""
    def fail(*_):
        raise AssertionError("hung")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ editing a saved machine
def _arrays(path, meta):
    with np.load(path / meta["state_file"], allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path, edit_meta=None, edit_arrays=None, blob=None):
    """Edit a saved machine and recompute every checksum, as a careful attacker would."""
    meta = json.loads((path / "machine.json").read_text())
    if blob is None:
        arrays = _arrays(path, meta)
        if edit_arrays:
            edit_arrays(arrays)
        out = io.BytesIO()
        np.savez(out, **arrays)
        blob = out.getvalue()
    (path / meta["state_file"]).write_bytes(blob)
    meta["state_sha256"] = hashlib.sha256(blob).hexdigest()
    if edit_meta:
        edit_meta(meta)
    meta["meta_sha256"] = store._body_digest(meta)
    (path / "machine.json").write_text(json.dumps(meta))


def _set(tree, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        tree = tree[int(k)] if isinstance(tree, list) else tree[k]
    tree[keys[-1]] = value


def _state(key, value):
    return lambda meta: _set(meta["state"], key, value)


NR_FRAMES = 16 * MiB >> 12

META_EDITS = {
    "ram_size huge": lambda meta: (meta.update(ram_size=1 << 40),
                                   _set(meta["state"], "config.ram_size", 1 << 40)),
    "ram_size negative": lambda meta: meta.update(ram_size=-4096),
    "ram_size bool": lambda meta: meta.update(ram_size=True),
    "ram_size string": lambda meta: meta.update(ram_size=str(16 * MiB)),
    "config ram_size string": _state("config.ram_size", str(16 * MiB)),
    "config pae string": _state("config.pae", "yes"),
    "config kernel_reserved huge": _state("config.kernel_reserved", 1 << 62),
    "config alloc_seed negative": _state("config.alloc_seed", -1),
    "config unknown key": _state("config.turbo", True),
    "start string": _state("kexec_image.start", "0x400000"),
    "start huge": _state("kexec_image.start", 1 << 40),
    "head bool": _state("kexec_image.head", True),
    "head past RAM": _state("kexec_image.head", IND_INDIRECTION | 0x7FFFF000),
    "control page past RAM": _state("kexec_image.control_page", 0x7FFFF000),
    "control page not owned": _state("kexec_image.control_page", 0x1000),
    "swap page not owned": _state("kexec_image.swap_page", 0x2000),
    "swap page unaligned": _state("kexec_image.swap_page", 0x401001),
    "image type": _state("kexec_image.type", "evil"),
    "segments many": lambda meta: _set(meta["state"], "kexec_image.segments",
                                       meta["state"]["kexec_image"]["segments"] * 40),
    "segment memsz huge": _state("kexec_image.segments.0.memsz", 1 << 31),
    "segment bufsz lies": _state("kexec_image.segments.0.bufsz", 4),
    "crash image owns frames": lambda meta: _set(
        meta["state"], "kexec_crash_image.free_order",
        meta["state"]["kexec_image"]["free_order"]),
    "machine state": _state("cpu.state", "flying"),
    "pm log not strings": _state("pm.log", [1, 2]),
    "array reference missing": _state("allocator.free_stack", {"__array__": "nope"}),
    "generation string": lambda meta: meta.update(ram_file="../../etc/passwd"),
}

ARRAY_EDITS = {
    "free frame past RAM": lambda a: a["allocator.free_stack"].__setitem__(0, NR_FRAMES + 5),
    "free frame negative": lambda a: a["allocator.free_stack"].__setitem__(0, -1),
    "free frame reserved": lambda a: a["allocator.free_stack"].__setitem__(0, 3),
    "free frame in crash region": lambda a: a["allocator.free_stack"].__setitem__(
        0, (8 * MiB >> 12) + 1),
    "free frame twice": lambda a: a["allocator.free_stack"].__setitem__(
        0, a["allocator.free_stack"][1]),
    "free frame owned by the image": lambda a: a["allocator.free_stack"].__setitem__(
        0, a["kexec_image.free_order"][0]),
    "free stack of floats": lambda a: a.update(
        {"allocator.free_stack": a["allocator.free_stack"].astype(np.float64)}),
    "free stack giant": lambda a: a.update(
        {"allocator.free_stack": np.arange(4 * NR_FRAMES, dtype=np.int64)}),
    "image frame past RAM": lambda a: a["kexec_image.free_order"].__setitem__(0, 1 << 40),
    "image frame twice": lambda a: a["kexec_image.free_order"].__setitem__(
        0, a["kexec_image.free_order"][1]),
    "ind frame not owned": lambda a: a["kexec_image.ind_frames"].__setitem__(
        0, a["allocator.free_stack"][0]),
    "cpu registers short": lambda a: a.update({"cpu.registers": a["cpu.registers"][:10]}),
    "register out of range": lambda a: a["cpu.registers"].__setitem__(8, 1 << 40),
    "selector out of range": lambda a: a["cpu.registers"].__setitem__(16, 1 << 20),
    "cpl out of range": lambda a: a["cpu.registers"].__setitem__(15, 7),
    "A20 mask not a gate": lambda a: a["cpu.registers"].__setitem__(A20_CLEAR, 0xFF),
    "keyboard latch not a bit": lambda a: a["cpu.registers"].__setitem__(KBC_D1, 2),
}


@pytest.mark.parametrize("edit", sorted(META_EDITS))
def test_edited_metadata_with_recomputed_checksums(saved, edit):
    _rewrite(saved, edit_meta=META_EDITS[edit])
    _assert_damaged(saved)


@pytest.mark.parametrize("edit", sorted(ARRAY_EDITS))
def test_edited_arrays_with_recomputed_checksums(saved, edit):
    _rewrite(saved, edit_arrays=ARRAY_EDITS[edit])
    _assert_damaged(saved)


def _assert_damaged(path):
    tracemalloc.start()
    try:
        with pytest.raises(DamagedMachineFile) as info:
            open_machine(path, verify=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert peak < 64 * MiB, f"opening allocated {peak} bytes"


def test_deeply_nested_metadata(saved):
    nested = "[" * 100000 + "]" * 100000
    (saved / "machine.json").write_text('{"format": "kjcore-machine", "version": 1, '
                                        f'"state": {nested}}}')
    _assert_damaged(saved)


def _npy(header_shape, data, dtype="<i8"):
    """An .npy member whose header claims ``header_shape`` but holds ``data``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False,
                                               "shape": header_shape})
    return out.getvalue() + data


def _npz(members, compression=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return out.getvalue()


def _members(path):
    meta = json.loads((path / "machine.json").read_text())
    members = {}
    for k, v in _arrays(path, meta).items():
        out = io.BytesIO()
        np.lib.format.write_array(out, v)
        members[k] = out.getvalue()
    return members


def test_array_header_claiming_a_giant_shape(saved):
    members = _members(saved)
    members["allocator.free_stack"] = _npy((1 << 40,), bytes(64))
    _rewrite(saved, blob=_npz(members))
    _assert_damaged(saved)


def test_compressed_array_file_is_refused(saved):
    members = _members(saved)
    members["console.debugcon"] = _npy((64 * MiB,), bytes(64 * MiB), dtype="|u1")
    _rewrite(saved, blob=_npz(members, zipfile.ZIP_DEFLATED))      # a 64 KiB zip bomb
    _assert_damaged(saved)


# ------------------------------------------------------------------ the RAM file
def _edit_ram(path, addr, word):
    meta = json.loads((path / "machine.json").read_text())
    ram = path / meta["ram_file"]
    with open(ram, "r+b") as f:
        f.seek(addr)
        f.write(int(word).to_bytes(4, "little"))
    data = np.fromfile(ram, dtype=np.uint8)
    _rewrite(path, edit_meta=lambda m: m.update(ram_crc32=zlib.crc32(data)))


def test_self_linked_list_in_the_ram_file(saved):
    ind = int(open_machine(saved).kexec_image.indirection_pages()[0])
    _edit_ram(saved, ind, IND_INDIRECTION | ind)          # the page links to itself
    _assert_damaged(saved)


def test_cyclic_list_in_the_ram_file(saved):
    img = open_machine(saved).kexec_image
    ind = int(img.indirection_pages()[0])
    words = len(list(img.entries()))
    _edit_ram(saved, ind + 4 * (words - 2), IND_INDIRECTION | ind)   # DONE -> back to start
    _assert_damaged(saved)


@pytest.mark.parametrize("name", ["machine.json", "ram", "state"])
@pytest.mark.parametrize("kind", ["fifo", "device link", "directory"])
def test_special_file_in_place_of_a_file(saved, name, kind):
    meta = json.loads((saved / "machine.json").read_text())
    target = saved / {"ram": meta["ram_file"], "state": meta["state_file"]}.get(name, name)
    os.unlink(target)
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device link":
        os.symlink("/dev/zero", target)
    else:
        os.mkdir(target)
    with pytest.raises(store.MachineFileError) as info:   # machine.json: not a machine
        open_machine(saved)
    assert "\n" not in str(info.value)
    if name != "machine.json":
        assert isinstance(info.value, DamagedMachineFile)


# ------------------------------------------------------------------ allocator and restore()
@pytest.mark.parametrize("frames", [[64], [-1], [3], [41], [True], [2 ** 64 - 1], ["x"],
                                    [[20]], [20, 20], [1.5]])
def test_allocator_refuses_bad_frames(frames):
    a = FrameAllocator(nr_frames=64, reserved_frames=16, crash_frames=(40, 48), seed=1)
    f = a.alloc()
    before = a.state()
    with pytest.raises(ValueError):
        a.free_many(frames)
    with pytest.raises(ValueError):
        a.set_state(list(before) + list(frames) if frames != [20, 20] else frames)
    assert np.array_equal(a.state(), before)
    with pytest.raises(ValueError, match="free twice"):
        a.free(int(before[0]))
    a.free(f)


def test_planner_never_sees_a_frame_past_its_arrays():
    """A free-list frame >= nr_frames made the planner write outside its arrays."""
    m = kjcore.Machine(ram_size=16 * MiB)
    bad = np.append(m.allocator.state(), NR_FRAMES + 100)
    with pytest.raises(ValueError):
        m.allocator.set_state(bad)
    m.kexec_load(0x400000, [kjcore.Segment(b"ok", 0x400000, 0x1000)])
    assert m.kexec_image is not None


def test_restore_checks_the_snapshot_before_changing_anything():
    m = _machine()
    snap = m.snapshot()
    state = snap.state
    state["allocator"]["free_stack"] = np.append(state["allocator"]["free_stack"], NR_FRAMES)
    m.kexec_load(0, [])
    ram, free = m.ram.copy(), m.allocator.state()
    with pytest.raises(ValueError):
        m.restore(snap)
    assert np.array_equal(m.ram, ram) and np.array_equal(m.allocator.state(), free)
    assert m.kexec_image is None
    with pytest.raises(ValueError):
        m.restore(snap._replace(ram=np.zeros(10, dtype=np.uint8)))
