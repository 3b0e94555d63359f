"""Files and locks of machine directories (issue 10 B2).

Saves never follow a planted link; a failed save removes its own files and leaves the machine
as it was and usable; Machine.open/save take kjexec's lock, and a save never overwrites a
newer save made by someone else since the machine was opened; no lock file is left in a
directory that is not a machine; ``kjexec -e`` refuses a RAM file whose checksum is wrong.
"""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kjcore
from kjcore import store
from kjcore.commands import kjexec
from kjcore.store import MachineBusyError, MachineFileError, machine_lock, open_machine

MiB = 1 << 20
PHY_MODE = os.path.join(os.path.dirname(__file__), "..", "examples", "phy_mode.elf")


def _machine():
    m = kjcore.Machine(ram_size=16 * MiB)
    m.ram[0x500000:0x500010] = 7
    m.kexec_load(0x400000, [kjcore.Segment(b"\x90" * 5000, 0x400000, 0x2000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    return m


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m"
    _machine().save(path)
    return path


# ------------------------------------------------------------------ planted links
def test_save_never_follows_a_planted_link(tmp_path, saved, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    for name in ("machine.json.tmp", "machine.json.2.tmp", "ram-2.bin", "state-2.npz"):
        os.symlink(victim, saved / name)
    m = open_machine(saved)
    monkeypatch.setattr(store, "_next_generation", lambda path: 2)   # the planted names
    with pytest.raises(FileExistsError):
        m.save(saved)
    monkeypatch.undo()
    assert victim.read_bytes() == b"precious"
    m.save(saved)                                   # a fresh generation; debris removed
    assert victim.read_bytes() == b"precious"
    assert not any(os.path.islink(saved / n) for n in os.listdir(saved))


def test_planted_lock_link_is_refused(tmp_path, saved):
    victim = tmp_path / "victim"
    os.unlink(saved / store.LOCK_NAME)
    os.symlink(victim, saved / store.LOCK_NAME)
    with pytest.raises(OSError):
        open_machine(saved).save(saved)
    assert not victim.exists()


# ------------------------------------------------------------------ failing saves
def _fail(err):
    def f(*args, **kwargs):
        raise OSError(err, os.strerror(err))
    return f


@pytest.mark.parametrize("call, err", [("pwrite", errno.ENOSPC), ("fsync", errno.EIO),
                                       ("replace", errno.EROFS)])
def test_failed_save_removes_its_files_and_keeps_the_machine(saved, monkeypatch, call, err):
    before = sorted(os.listdir(saved))
    m = open_machine(saved)
    m.kexec_load(0, [])
    m.ram[0x600000] = 1
    fingerprint = _fingerprint_or_none(m)
    monkeypatch.setattr(store.os, call, _fail(err))
    with pytest.raises(OSError) as info:
        m.save(saved)
    monkeypatch.undo()
    assert info.value.errno == err
    assert sorted(os.listdir(saved)) == before                 # nothing of the failed save
    assert open_machine(saved, verify=True).kexec_image is not None     # the old state
    assert _fingerprint_or_none(m) == fingerprint and not m.kexec_lock.locked()
    m.save(saved)                                              # usable: the next save works
    assert open_machine(saved).kexec_image is None


def _fingerprint_or_none(m):
    return (m.ram.tobytes(), m.allocator.state().tobytes(), repr(m.kexec_image))


def test_failed_first_save_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(store.os, "pwrite", _fail(errno.ENOSPC))
    with pytest.raises(OSError):
        _machine().save(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError):
        _machine().save(tmp_path / "empty")
    assert os.listdir(tmp_path / "empty") == []                # no lock file left behind


def test_full_file_system_is_an_oserror_not_sigbus(tmp_path):
    """RAM is written with write(2): a file-size limit (like a full tmpfs) is EFBIG."""
    code = ("import resource, signal, sys, kjcore\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "m = kjcore.Machine(ram_size=16 << 20)\n"
            "m.ram[:] = 1\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "try:\n"
            "    m.save(sys.argv[1])\n"
            "except OSError as e:\n"
            "    print('OSError', e.errno)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OSError", str(errno.EFBIG)]
    assert not (tmp_path / "m").exists()


_TMPFS_CHILD = r"""
import sys, kjcore
from kjcore import store
m = kjcore.Machine(ram_size=16 << 20)           # mostly zero: a sparse file would fit
try:
    m.save(sys.argv[1])
except OSError as e:
    print("OSError", e.errno)
else:
    print("sum", int(store.open_machine(sys.argv[1]).ram.sum()))   # touches every page
"""


def test_full_tmpfs_is_enospc_at_save_not_sigbus_later(tmp_path):
    """A 6 MiB tmpfs holds a sparse 16 MiB RAM file; reading its holes later was SIGBUS."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = subprocess.run([sys.executable, "-c", _TMPFS_CHILD, str(mnt / "m")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"status {out.returncode}: {out.stderr}"
        assert out.stdout.split() == ["OSError", str(errno.ENOSPC)]
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ------------------------------------------------------------------ locks
def test_open_and_save_take_kjexecs_lock(saved):
    m = open_machine(saved)
    with machine_lock(saved) as free:
        assert free
        with pytest.raises(MachineBusyError, match="another process is using this machine"):
            open_machine(saved)
        with pytest.raises(MachineBusyError):
            m.save(saved)
        with machine_lock(saved) as again:
            assert not again
        inside = open_machine(saved, locked=True)
        store.save_machine(inside, saved, locked=True)
    m2 = open_machine(saved)                    # released
    assert m2.kexec_image is not None


def test_a_save_never_loses_another_processs_save(saved):
    script = open_machine(saved)                # a script opens the machine ...
    shell = open_machine(saved)                 # ... and so does a shell
    shell.kexec_load(0, [])
    shell.save(saved)
    script.ram[0x700000] = 1
    with pytest.raises(MachineFileError, match="saved by another process since"):
        script.save(saved)
    assert open_machine(saved).kexec_image is None          # the shell's save is intact
    script.save(saved.parent / "elsewhere")                 # its own state is not lost
    again = open_machine(saved)
    again.save(saved)
    again.save(saved)                                       # its own saves are fine


def test_kjexec_and_a_script_do_not_lose_updates(saved, capsys):
    script = open_machine(saved)
    assert kjexec.main(["--machine", str(saved), "-u"]) == 0
    with pytest.raises(MachineFileError, match="saved by another process"):
        script.save(saved)
    assert open_machine(saved).kexec_image is None


def test_no_lock_file_in_a_directory_that_is_not_a_machine(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    assert kjexec.main(["--machine", str(tmp_path / "d"), "-l", "--args-none", PHY_MODE]) != 0
    with pytest.raises(MachineFileError):
        open_machine(tmp_path / "d")
    with machine_lock(tmp_path / "d") as free:
        assert free
    assert os.listdir(tmp_path / "d") == ["notes.txt"]


# ------------------------------------------------------------------ kjexec -e
def test_kjexec_exec_refuses_a_ram_file_with_a_wrong_checksum(saved, capsys):
    meta = json.loads((saved / "machine.json").read_text())
    ram = saved / meta["ram_file"]
    with open(ram, "r+b") as f:
        f.seek(0x500000)
        f.write(b"\x99")
    status = kjexec.main(["--machine", str(saved), "-e"])
    out, err = capsys.readouterr()
    assert status != 0 and "CRC-32 mismatch" in err and "executing" not in out
    assert json.loads((saved / "machine.json").read_text()) == meta     # not re-saved
    assert np.fromfile(ram, dtype=np.uint8)[0x500000] == 0x99
