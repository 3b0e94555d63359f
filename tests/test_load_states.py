"""Issue 10 B6: the system calls know when the first kernel is gone, refuse what it cannot do,
and every KexecError prints."""
import errno
import subprocess
import sys

import numpy as np
import pytest

import kjcore
from kjcore import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    KexecError,
    Machine,
    Segment,
)
from kjcore.pm import RecordingDevice

MiB = 1 << 20
DEST = 0x1000000
HLT = b"\xf4"
RET = b"\xc3"


def _after_plain_exec():
    m = Machine(32 * MiB)
    m.kexec_load(DEST, [Segment(HLT, DEST, 0x1000)])
    m.kernel_kexec()
    assert m.state == "image"
    return m


@pytest.mark.parametrize("call", [
    lambda m: m.kexec_load(DEST, [Segment(b"\x90", DEST, 0x1000)]),
    lambda m: m.kexec_load(0, []),
    lambda m: m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC),
], ids=["load", "unload", "reboot"])
def test_no_system_call_after_a_plain_exec(call):
    m = _after_plain_exec()
    ram, free, image = m.ram.copy(), m.allocator.state(), m.kexec_image
    with pytest.raises(RuntimeError, match=r"first kernel is not running \(state='image'\)"):
        call(m)
    assert np.array_equal(m.ram, ram) and np.array_equal(m.allocator.state(), free)
    assert m.kexec_image is image and m.state == "image"


def test_kjexec_load_after_a_plain_exec_is_one_line(tmp_path, capsys):
    from kjcore.commands import kjexec
    m = _after_plain_exec()
    path = str(tmp_path / "m")
    m.save(path)
    flat = tmp_path / "img.bin"
    flat.write_bytes(HLT)
    status = kjexec.main(["--machine", path, "-l", "--type=raw", f"--entry={DEST:#x}",
                          str(flat)])
    err = capsys.readouterr().err
    assert status != 0
    assert err.count("\n") == 1 and "first kernel is not running (state='image')" in err
    assert Machine.open(path).state == "image"


def test_snapshot_during_a_jump_is_refused_like_save(tmp_path):
    m = Machine(32 * MiB)
    m.kexec_load(DEST, [Segment(RET, DEST, 0x1000)], KEXEC_PRESERVE_CONTEXT)
    seen = []

    class Peeker(RecordingDevice):
        def suspend(self, state):
            for what, call in (("snapshot", m.snapshot),
                               ("save", lambda: m.save(str(tmp_path / "x")))):
                try:
                    call()
                    seen.append((what, "allowed"))
                except RuntimeError as e:
                    seen.append((what, str(e)))
            return 0

    m.devices = [Peeker("peek")]
    m.kernel_kexec()
    assert [w for w, _ in seen] == ["snapshot", "save"]
    assert all("kexec lock is held" in text for _, text in seen), seen
    m.snapshot()                        # idle again: allowed


@pytest.mark.parametrize("err", [0, -1, 999, 2 ** 31, 2 ** 40, -2 ** 40, None])
def test_kexec_error_with_any_errno_prints(err):
    e = KexecError(err, "the rule")
    text = str(e)
    assert text.startswith(f"[Errno {err}]") and "the rule" in text
    assert repr(e)


def test_kexec_error_prints_in_a_traceback():
    code = "from kjcore.errors import KexecError\nraise KexecError(2 ** 40, 'huge')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "KexecError: [Errno 1099511627776] unknown error" in r.stderr


GOOD = (LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("bad", [lambda v: None, lambda v: "x", lambda v: 1.5, lambda v: True,
                                 lambda v: float(v), lambda v: str(v), lambda v: [v]],
                         ids=["None", "str", "1.5", "True", "float", "str-int", "list"])
def test_reboot_with_a_non_integer_argument_is_einval(which, bad):
    m = Machine(16 * MiB)
    m.kexec_load(0x800000, [Segment(HLT, 0x800000, 0x1000)])
    args = list(GOOD)
    args[which] = bad(args[which])
    with pytest.raises(KexecError) as e:
        m.reboot(*args)
    assert e.value.errno == errno.EINVAL
    assert m.state == "kernel" and m.last_result is None


def test_reboot_accepts_numpy_integers():
    m = Machine(16 * MiB)
    m.kexec_load(0x800000, [Segment(HLT, 0x800000, 0x1000)])
    assert m.reboot(*(np.uint32(v) for v in GOOD)) == 0 and m.state == "image"


def test_reboot_eperm_still_first():
    m = kjcore.Machine(16 * MiB, cap_sys_boot=False)
    with pytest.raises(KexecError) as e:
        m.reboot(None, None, None)
    assert e.value.errno == errno.EPERM
