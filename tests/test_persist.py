"""Persistent machines (kjcore.store, kjcore.machine_state): round trips, atomic saves,
clear errors."""
import errno
import json
import os

import numpy as np
import pytest

import kjcore
from kjcore import machine_state, state_codec, store
from kjcore.store import (
    DamagedMachineFile,
    ForeignMachineFile,
    MachineFileError,
    MachineFileVersionError,
    open_machine,
    save_machine,
)

MiB = 1 << 20


def _loaded_machine(**kw):
    """A 32 MiB machine with a preserve-context image and a crash image loaded."""
    kw.setdefault("crashkernel", (16 * MiB, 8 * MiB))
    m = kjcore.Machine(ram_size=32 * MiB, **kw)
    m.ram[0x5000:0x5010] = np.arange(16, dtype=np.uint8)         # first-kernel data
    m.kexec_load(0x800000, [kjcore.Segment(b"\x90" * 5000, 0x800000, 0x2000),
                            kjcore.Segment.zero(0, 0x900000, 0x3000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    m.kexec_load(16 * MiB, [kjcore.Segment(b"crash", 16 * MiB, 0x1000)], kjcore.KEXEC_ON_CRASH)
    return m


def _assert_same_machine(a, b):
    assert machine_state.machine_config(a) == machine_state.machine_config(b)
    assert np.array_equal(a.ram, b.ram)
    assert np.array_equal(a.allocator.state(), b.allocator.state())
    for slot in ("kexec_image", "kexec_crash_image"):
        x, y = getattr(a, slot), getattr(b, slot)
        assert (x is None) == (y is None)
        if x is None:
            continue
        assert repr(x) == repr(y)
        assert x.segments == y.segments
        assert list(x.entries()) == list(y.entries())
        assert np.array_equal(x.ind_frames, y.ind_frames)
        assert np.array_equal(x.parked_frames, y.parked_frames)
        assert np.array_equal(x.frames_to_free(), y.frames_to_free())
    assert not b.kexec_lock.locked()


def test_round_trip_fresh(tmp_path):
    m = kjcore.Machine(ram_size=16 * MiB)
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    _assert_same_machine(m, m2)
    assert m2.kexec_image is None and m2.kexec_crash_image is None
    assert isinstance(m2.ram, np.memmap)


@pytest.mark.parametrize("kw", [dict(), dict(pae=True, nx=True), dict(profile="mainline"),
                                dict(alloc_seed=7, kernel_reserved=2 * MiB),
                                dict(kexec_jump=False, cap_sys_boot=False, engine="native",
                                     strict_bus=True, fix_pae_return=True)])
def test_round_trip_config(tmp_path, kw):
    m = kjcore.Machine(ram_size=16 * MiB, **kw)
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    assert machine_state.machine_config(m2) == machine_state.machine_config(m)
    assert m2._profile_id == m._profile_id and m2._crash_region == m._crash_region


def test_round_trip_loaded_images(tmp_path):
    m = _loaded_machine()
    m.kexec_image.start = 0x801234            # as after a jump: start is state
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    _assert_same_machine(m, m2)
    assert m2.kexec_image.preserve_context and m2.kexec_image.start == 0x801234
    assert m2.kexec_crash_image.type == "crash" and m2.kexec_crash_image.swap_page is None
    assert m2.kexec_image.segments[1].buf is None            # zero segment stays zero


def test_reopened_machine_behaves_identically(tmp_path):
    """Loads after a reopen allocate the same frames and write the same RAM."""
    m = _loaded_machine(alloc_seed=3)
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    for mm in (m, m2):
        mm.kexec_load(0xA00000, [kjcore.Segment(b"x" * 9000, 0xA00000, 0x4000)])
        mm.kexec_load(0, [], kjcore.KEXEC_ON_CRASH)
    _assert_same_machine(m, m2)
    save_machine(m2, tmp_path / "m")
    _assert_same_machine(m, open_machine(tmp_path / "m"))


def test_every_machine_attribute_is_accounted_for():
    """A Machine attribute nobody saves is state silently lost: extend machine_state."""
    m = kjcore.Machine(ram_size=16 * MiB)
    known = machine_state.SAVED_ATTRIBUTES | set(machine_state.UNSAVED_ATTRIBUTES)
    missing = sorted(set(vars(m)) - known)
    assert not missing, (f"Machine attributes {missing} are neither saved by "
                         "kjcore.machine_state.machine_state nor listed in UNSAVED_ATTRIBUTES")


def test_ram_is_copy_on_write_until_saved(tmp_path):
    m = kjcore.Machine(ram_size=16 * MiB)
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    m2.ram[0x100000] = 0xAB
    m2.kexec_load(0x800000, [kjcore.Segment(b"y", 0x800000, 0x1000)])
    del m2                                          # a process dying before its save
    m3 = open_machine(tmp_path / "m")
    assert m3.ram[0x100000] == 0 and m3.kexec_image is None
    m3.ram[0x100000] = 0xCD
    save_machine(m3, tmp_path / "m")
    assert open_machine(tmp_path / "m").ram[0x100000] == 0xCD


def test_save_allocates_ram_and_cleans_old_generations(tmp_path):
    path = tmp_path / "m"
    m = kjcore.Machine(ram_size=64 * MiB)
    save_machine(m, path)
    save_machine(m, path)
    names = sorted(os.listdir(path))
    assert names == [".lock", "machine.json", "ram-2.bin", "state-2.npz"]
    st = os.stat(path / "ram-2.bin")
    assert st.st_size == 64 * MiB
    if hasattr(os, "posix_fallocate"):
        assert st.st_blocks * 512 >= 64 * MiB         # no holes to fault in later (SIGBUS)


# ------------------------------------------------------------------ interrupted saves
_STAGES = ["ram", "arrays", "meta", "replace", "cleanup"]


@pytest.mark.parametrize("stage", _STAGES)
def test_interrupted_save_keeps_previous_state(tmp_path, monkeypatch, stage):
    """A crash at any point of a save: before the commit (the rename of machine.json) the
    previous state opens, after it the new one; the next save works and cleans up."""
    path = tmp_path / "m"
    old = _loaded_machine()
    save_machine(old, path)
    new = _loaded_machine()
    new.kexec_load(0, [])                            # differs from old: no normal image
    new.ram[0x7000] = 0x55

    class Crash(Exception):
        pass

    def after(real):                                 # the step completes, then the crash
        def f(*args, **kwargs):
            real(*args, **kwargs)
            raise Crash(stage)
        return f

    def instead(*args, **kwargs):                    # the crash happens before the step
        raise Crash(stage)

    if stage == "ram":
        monkeypatch.setattr(store, "_write_ram", after(store._write_ram))
    elif stage == "arrays":
        monkeypatch.setattr(store, "_write_file", after(store._write_file))
    elif stage == "meta":
        monkeypatch.setattr(store, "_write_meta", instead)
    elif stage == "replace":                         # machine.json.tmp written, not renamed
        monkeypatch.setattr(store.os, "replace", instead)
    else:                                            # committed, old files not yet removed
        monkeypatch.setattr(store, "_remove_stale", instead)
    with pytest.raises(Crash):
        save_machine(new, path)
    monkeypatch.undo()
    assert not new.kexec_lock.locked()
    reopened = open_machine(path, verify=True)
    if stage == "cleanup":
        _assert_same_machine(new, reopened)
    else:
        _assert_same_machine(old, reopened)
    # the next save succeeds and leaves exactly one generation
    save_machine(new, path)
    _assert_same_machine(new, open_machine(path, verify=True))
    gens = [n for n in os.listdir(path) if n.startswith(("ram-", "state-"))]
    assert len(gens) == 2 and "machine.json.tmp" not in os.listdir(path)


def test_partial_files_of_a_crashed_save_are_ignored(tmp_path):
    path = tmp_path / "m"
    m = _loaded_machine()
    save_machine(m, path)
    (path / "ram-9.bin").write_bytes(b"partial")
    (path / "state-9.npz").write_bytes(b"partial")
    (path / "machine.json.tmp").write_text("{")
    _assert_same_machine(m, open_machine(path))
    save_machine(m, path)
    meta = json.loads((path / "machine.json").read_text())
    assert meta["generation"] == 10
    assert sorted(os.listdir(path)) == [".lock", "machine.json", "ram-10.bin", "state-10.npz"]


# ------------------------------------------------------------------ errors
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m"
    save_machine(_loaded_machine(), path)
    return path


def _meta(path):
    return json.loads((path / "machine.json").read_text())


def _write_meta(path, meta, rehash=True):
    if rehash:
        meta["meta_sha256"] = store._body_digest(meta)
    (path / "machine.json").write_text(json.dumps(meta))


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_machine(tmp_path / "nope")


def test_foreign_file_and_directory(tmp_path):
    (tmp_path / "file").write_bytes(b"\x7fELF")
    with pytest.raises(ForeignMachineFile, match="not a directory"):
        open_machine(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("hello")
    with pytest.raises(ForeignMachineFile, match="no machine.json"):
        open_machine(tmp_path / "dir")
    m = kjcore.Machine(ram_size=16 * MiB)
    with pytest.raises(ForeignMachineFile, match="not a kjcore machine; refusing"):
        save_machine(m, tmp_path / "dir")
    with pytest.raises(ForeignMachineFile, match="not a directory"):
        save_machine(m, tmp_path / "file")
    assert (tmp_path / "file").read_bytes() == b"\x7fELF"


def test_foreign_json(saved):
    _write_meta(saved, {"format": "something-else", "version": 1})
    with pytest.raises(ForeignMachineFile, match="not a kjcore-machine file"):
        open_machine(saved)


def test_wrong_version(saved):
    meta = _meta(saved)
    meta["version"] = store.FORMAT_VERSION + 1
    _write_meta(saved, meta)
    with pytest.raises(MachineFileVersionError, match="format version 2; this kjcore reads "
                                                      "version 1"):
        open_machine(saved)


@pytest.mark.parametrize("damage", ["garbage-json", "edited", "truncated-ram", "missing-ram",
                                    "bad-npz", "bad-state", "ram-crc"])
def test_damaged(saved, damage):
    meta = _meta(saved)
    ram = saved / meta["ram_file"]
    if damage == "garbage-json":
        (saved / "machine.json").write_text('{"format": "kjcore-machine", ')
    elif damage == "edited":
        meta["state"]["config"]["cap_sys_boot"] = False
        _write_meta(saved, meta, rehash=False)
    elif damage == "truncated-ram":
        os.truncate(ram, 4096)
    elif damage == "missing-ram":
        os.unlink(ram)
    elif damage == "bad-npz":
        with open(saved / meta["state_file"], "r+b") as f:
            f.seek(40)
            f.write(b"\xff\xff\xff")
    elif damage == "bad-state":
        meta["state"]["config"]["profile"] = "2.4.0"
        _write_meta(saved, meta)
    elif damage == "ram-crc":
        with open(ram, "r+b") as f:
            f.seek(0x5003)
            f.write(b"\xee")
        open_machine(saved)                          # only verify=True reads all of RAM
    with pytest.raises(DamagedMachineFile) as info:
        open_machine(saved, verify=True)
    assert isinstance(info.value, MachineFileError) and isinstance(info.value, ValueError)
    assert str(saved) in str(info.value)


def test_save_refuses_while_the_kexec_lock_is_held(tmp_path):
    m = kjcore.Machine(ram_size=16 * MiB)
    with m.kexec_lock:
        with pytest.raises(RuntimeError, match="kexec lock is held"):
            save_machine(m, tmp_path / "m")
    assert not m.kexec_lock.locked()


# ------------------------------------------------------------------ state API
def test_snapshot_restore():
    m = _loaded_machine()
    snap = m.snapshot()
    ref = m.snapshot()
    m.kexec_load(0, [])
    m.kexec_load(0xA00000, [kjcore.Segment(b"z" * 100, 0xA00000, 0x1000)])
    m.ram[:4096] = 9
    m.restore(snap)
    other = _loaded_machine()
    _assert_same_machine(other, m)
    assert np.array_equal(snap.ram, ref.ram)          # the snapshot itself did not change


def test_set_machine_state_refuses_other_config():
    state = machine_state.machine_state(kjcore.Machine(ram_size=16 * MiB, pae=True))
    with pytest.raises(ValueError, match="pae"):
        machine_state.set_machine_state(kjcore.Machine(ram_size=16 * MiB), state)


def test_state_encoding_rejects_python_objects():
    with pytest.raises(TypeError, match="devices"):
        state_codec.encode({"devices": [object()]}, {}, "")


def test_errno_of_missing_path_is_enoent(tmp_path):
    with pytest.raises(OSError) as info:
        open_machine(tmp_path / "nope")
    assert info.value.errno == errno.ENOENT


def test_the_a20_gate_is_saved(tmp_path):
    m = kjcore.Machine(16 << 20)
    m.cpu.a20 = False
    m.save(tmp_path / "m")
    assert kjcore.Machine.open(tmp_path / "m").cpu.a20 is False
