"""reboot(2) and the power-management sequence around a real jump (SPEC §8)."""
import errno

import numpy as np
import pytest
from jump_world import (
    HLT,
    RAM,
    RESERVED,
    RET,
    load,
    machine,
    out_e9,
    reboot,
    state_diff,
)

import kjcore
from kjcore import (
    KEXEC_ON_CRASH,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    KexecError,
    Segment,
)
from kjcore.constants import LINUX_REBOOT_MAGIC2_ALL
from kjcore.machine_kexec import JumpResult


# --------------------------------------------------------------------- reboot(2) errors (8)
def test_reboot_accepts_every_magic2_and_returns_0():
    for magic2 in LINUX_REBOOT_MAGIC2_ALL:
        m = machine()
        load(m, RET)
        assert m.reboot(LINUX_REBOOT_MAGIC1, magic2, LINUX_REBOOT_CMD_KEXEC) == 0
        assert isinstance(m.last_result, JumpResult)


def _unchanged(m, ram, state):
    assert np.array_equal(m.ram, ram)
    assert state_diff(m.cpu.get_state(), state) == []
    assert m.pm_log == [] and m.debugcon == b""


@pytest.mark.parametrize("args, code", [
    ((LINUX_REBOOT_MAGIC1 ^ 1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC), errno.EINVAL),
    ((LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2 + 1, LINUX_REBOOT_CMD_KEXEC), errno.EINVAL),
    ((LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0x01234567), errno.EINVAL),  # RESTART: not modelled
])
def test_reboot_einval(args, code):
    m = machine()
    load(m, out_e9("!") + RET)
    ram, state = m.ram.copy(), m.cpu.get_state()
    with pytest.raises(KexecError) as e:
        m.reboot(*args)
    assert e.value.errno == code
    _unchanged(m, ram, state)


def test_reboot_eperm_comes_before_the_magic_check():
    """sys_reboot tests CAP_SYS_BOOT first (kernel order): no capability -> EPERM even with
    wrong magic numbers."""
    m = machine(cap_sys_boot=False)
    ram, state = m.ram.copy(), m.cpu.get_state()
    for magic1 in (LINUX_REBOOT_MAGIC1, 0):
        with pytest.raises(KexecError) as e:
            m.reboot(magic1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)
        assert e.value.errno == errno.EPERM
    _unchanged(m, ram, state)


def test_reboot_ebusy_while_the_kexec_lock_is_held():
    m = machine()
    load(m, out_e9("!") + RET)
    ram, state = m.ram.copy(), m.cpu.get_state()
    with m.kexec_lock:
        for call in (reboot, lambda m: m.kernel_kexec()):
            with pytest.raises(KexecError) as e:
                call(m)
            assert e.value.errno == errno.EBUSY
    _unchanged(m, ram, state)
    assert reboot(m) == 0 and m.debugcon == b"!"          # the lock was not left held


def test_reboot_einval_without_an_image_and_never_runs_the_crash_image():
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, crashkernel=(0x80000, 0x40000))
    ram, state = m.ram.copy(), m.cpu.get_state()
    with pytest.raises(KexecError) as e:
        reboot(m)
    assert e.value.errno == errno.EINVAL
    m.kexec_load(0x80000, [Segment(out_e9("C") + HLT, 0x80000, 0x1000)], KEXEC_ON_CRASH)
    ram = m.ram.copy()
    with pytest.raises(KexecError) as e:
        reboot(m)
    assert e.value.errno == errno.EINVAL
    _unchanged(m, ram, state)
    assert m.kexec_crash_image is not None and not m.kexec_lock.locked()
