"""The preserve-context power-management sequence of kernel_kexec (SPEC §8), on its own."""
import errno

import pytest

import kjcore
from kjcore import KexecError
from kjcore.pm import RecordingDevice, preserve_context_transition, shutdown_transition

ORDER = ["prepare console", "freeze processes", "suspend console", "suspend devices",
         "disable non-boot CPUs", "lock device PM", "interrupts off", "power devices down",
         "save processor state"]
UNDO = ["restore processor state", "power devices up", "interrupts on", "unlock device PM",
        "enable non-boot CPUs", "resume devices", "resume console", "thaw processes",
        "restore console"]


@pytest.fixture
def m():
    m = kjcore.Machine(16 << 20)
    m.devices = [RecordingDevice("a"), RecordingDevice("b")]
    return m


def test_order_and_exact_reverse(m):
    calls = []
    assert preserve_context_transition(m, lambda: calls.append("jump") or 7,
                                       lambda: calls.append("save"),
                                       lambda: calls.append("restore")) == 7
    assert m.pm_log == ORDER + ["machine_kexec"] + UNDO
    assert calls == ["save", "jump", "restore"]
    assert m.devices[0].calls == ["suspend(freeze)", "power_down(freeze)", "power_up(restore)",
                                  "resume(restore)"]


def test_freeze_failure_is_ebusy_and_skips_the_jump(m):
    m.freeze_processes = lambda: -errno.EAGAIN
    with pytest.raises(KexecError) as e:
        preserve_context_transition(m, lambda: pytest.fail("jumped"))
    assert e.value.errno == errno.EBUSY
    assert m.pm_log == ["prepare console", "freeze processes", "restore console"]
    assert m.devices[0].calls == []


def test_device_suspend_failure_resumes_the_suspended_ones_in_reverse(m):
    m.devices.append(RecordingDevice("c", fail_suspend=-errno.EIO))
    with pytest.raises(KexecError) as e:
        preserve_context_transition(m, lambda: pytest.fail("jumped"))
    assert e.value.errno == errno.EIO and "device c" in str(e.value)
    assert m.pm_log == ORDER[:4] + ["resume console", "thaw processes", "restore console"]
    assert m.devices[0].calls == m.devices[1].calls == ["suspend(freeze)", "resume(restore)"]


def test_power_down_failure_unwinds_from_interrupts(m):
    m.devices[1].fail_power_down = errno.ENODEV
    with pytest.raises(KexecError) as e:
        preserve_context_transition(m, lambda: pytest.fail("jumped"))
    assert e.value.errno == errno.ENODEV
    assert m.pm_log == ORDER[:8] + UNDO[2:]
    assert m.devices[0].calls == ["suspend(freeze)", "power_down(freeze)", "power_up(restore)",
                                  "resume(restore)"]


def test_a_jump_that_never_returns_is_not_unwound(m):
    def lost():
        raise RuntimeError("triple fault")
    with pytest.raises(RuntimeError):
        preserve_context_transition(m, lost)
    assert m.pm_log[-1] == "machine_kexec"


def test_shutdown_path(m):
    shutdown_transition(m)
    assert m.pm_log == ["reboot notifiers", "device shutdown", "machine shutdown"]
    assert m.devices[1].calls == ["shutdown()"]
