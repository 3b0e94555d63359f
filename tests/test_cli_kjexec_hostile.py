"""``kjexec`` against hostile command lines, damaged machines, interrupts and full disks."""
import errno
import os
import time

import pytest
from kjexec_world import (
    PHY_MODE,
    SEED_EXAMPLE,
    fake_reboot,
    run,
)

import kjcore
from kjcore import store
from kjcore.commands import kjexec
from kjcore.store import open_machine


# ------------------------------------------------------------------ hostile command lines
def test_no_lock_file_outside_a_machine(capsys, tmp_path):
    """A plain directory or a missing path is not a machine: kjexec leaves nothing in it."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in (plain, tmp_path / "missing"):
        assert kjexec.main(["--machine", str(path), "-u"]) == 1
        assert "cannot open machine" in capsys.readouterr().err
    assert list(plain.iterdir()) == []
    assert not (tmp_path / "missing").exists()


def test_exec_refuses_a_damaged_ram_file(capsys, mpath, monkeypatch):
    """-e runs what the RAM file holds: a file that is not what was saved is refused."""
    ran = []
    monkeypatch.setattr(kjcore.Machine, "reboot", lambda self, *a, **k: ran.append(1) or 0)
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    ram_file, = [n for n in os.listdir(mpath) if n.startswith("ram-")]
    with open(os.path.join(mpath, ram_file), "r+b") as f:
        f.seek(0x1000000)
        f.write(b"\xcc")                         # the image's first byte, checksum kept
    status, out, err = run(capsys, mpath, "-e")
    assert status == 1 and "cannot open machine" in err and "CRC-32 mismatch" in err
    assert ran == [] and out == ""


def test_stays_loaded_only_after_the_save(capsys, mpath, monkeypatch):
    monkeypatch.setattr(kjcore.Machine, "reboot", fake_reboot(b"hi\n"))
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0

    def full_disk(machine, path, **options):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(store, "save_machine", full_disk)
    status, out, err = run(capsys, mpath, "-e")
    assert status == 255 and "back in the first kernel" in out
    assert "stays loaded" not in out
    assert err == f"kjexec: cannot save machine {mpath}: [Errno 28] No space left on device\n"


def test_interrupt_and_oserror_are_one_line(capsys, mpath, monkeypatch):
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0

    def interrupted(self, *args, **limits):
        raise KeyboardInterrupt
    monkeypatch.setattr(kjcore.Machine, "reboot", interrupted)
    status, out, err = run(capsys, mpath, "-e")
    assert (status, err) == (130, "kjexec: interrupted\n")

    def eio(self, *args, **limits):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(kjcore.Machine, "reboot", eio)
    status, out, err = run(capsys, mpath, "-e")
    assert (status, err) == (255, "kjexec: [Errno 5] Input/output error\n")


@pytest.mark.parametrize("args, message", [
    (["-e", "--mem-max=0x1ffffff"], "--mem-max has no effect with --exec"),
    (["-e", PHY_MODE], f"the image {PHY_MODE} has no effect with --exec"),
    (["-u", "--args-none"], "--args-none has no effect with --unload"),
    (["-u", PHY_MODE], f"the image {PHY_MODE} has no effect with --unload"),
    (["-l", "--args-none", "--max-steps=5", PHY_MODE], "--max-steps has no effect with --load"),
    (["-p", "-u", "--timeout=1"], "--timeout has no effect with --unload"),
    (["--load-jump-back-helper", "--entry=0x1000", "--type=raw"],
     "--type has no effect with --load-jump-back-helper"),
    (["-u", "--entry=0x1000"], "--entry has no effect with --unload"),
    (["-S", "-e"], "--exec has no effect with --status"),
    (["-S", "--mem-max=0x1ffffff"], "--mem-max has no effect with --status"),
    (["--print-ckr-size", "-l", "--args-none", PHY_MODE],
     "--load has no effect with --print-ckr-size"),
])
def test_options_the_action_ignores_are_refused(capsys, mpath, args, message):
    status, out, err = run(capsys, mpath, *args)
    assert (status, out, err) == (1, "", f"kjexec: {message}\n")
    assert open_machine(mpath).kexec_image is None


def test_exec_limits_reach_reboot(capsys, mpath, monkeypatch):
    seen = []

    def reboot(self, magic1, magic2, cmd, **limits):
        seen.append(limits)
        return 0
    monkeypatch.setattr(kjcore.Machine, "reboot", reboot)
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    assert run(capsys, mpath, "-e", "--max-steps=1000", "--timeout", "2.5")[0] == 0
    assert run(capsys, mpath, "-e")[0] == 0
    assert seen == [{"max_steps": 1000, "timeout": 2.5}, {}]


@pytest.mark.parametrize("option, why", [
    ("--max-steps=0", "'0' is not a whole number from 1 to 1000000000000000"),
    ("--max-steps=1e9", "'1e9' is not a whole number from 1 to 1000000000000000"),
    ("--timeout=-1", "'-1' is not a number from 0.001 to 1000000"),
    ("--timeout=nan", "'nan' is not a number from 0.001 to 1000000"),
    ("--timeout=0", "'0' is not a number from 0.001 to 1000000"),
])
def test_exec_limits_are_validated(capsys, mpath, option, why):
    status, out, err = run(capsys, mpath, "-e", option)
    assert status == 1 and err == f"Bad option value in {option}: {why}\n"
    assert out.startswith("Usage: kjexec")


def test_exec_max_steps_stops_the_guest(capsys, mpath):
    """A guest that runs out of --max-steps loses the first kernel; the file is not saved."""
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    status, out, err = run(capsys, mpath, "-e", "--max-steps=50")
    assert status == 255 and "the first kernel is lost: StepLimit" in err
    assert open_machine(mpath).kexec_image.start == 0x1000000


def test_exec_timeout_stops_a_spinning_guest(capsys, tmp_path, mpath):
    spin = tmp_path / "spin.bin"
    spin.write_bytes(b"\xeb\xfe")                 # jmp . (forever)
    assert run(capsys, mpath, "--load-preserve-context", "--mem-min=0x1000000",
               "--mem-max=0x1ffffff", "--type=raw", "--entry=0x1000000", str(spin))[0] == 0
    t0 = time.monotonic()
    status, out, err = run(capsys, mpath, "-e", "--timeout=0.5")
    assert status == 255 and time.monotonic() - t0 < 10
    assert open_machine(mpath).kexec_image.start == 0x1000000
