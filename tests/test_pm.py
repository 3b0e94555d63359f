"""The preserve-context power-management sequence of kernel_kexec (SPEC §8): on its own,
then around a real jump."""
import errno

import numpy as np
import pytest
from jump_world import RET, load, machine, out_e9, reboot, state_diff

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


class _Raises(RecordingDevice):
    """A device whose callback ``method`` raises ``exc`` (issue 10 B6)."""

    def __init__(self, name, method, exc):
        super().__init__(name)
        self.method, self.exc = method, exc

    def suspend(self, state):
        super().suspend(state)
        if self.method == "suspend":
            raise self.exc
        return 0

    def power_down(self, state):
        super().power_down(state)
        if self.method == "power_down":
            raise self.exc
        return 0


@pytest.mark.parametrize("exc", [ValueError("bad device"), KeyboardInterrupt(),
                                 OSError(errno.EIO, "io")], ids=["ValueError",
                                                                 "KeyboardInterrupt", "OSError"])
def test_a_suspend_callback_that_raises_unwinds_then_propagates(m, exc):
    m.devices.append(_Raises("c", "suspend", exc))
    with pytest.raises(type(exc)) as e:
        preserve_context_transition(m, lambda: pytest.fail("jumped"))
    assert e.value is exc
    assert m.pm_log == ORDER[:4] + ["resume console", "thaw processes", "restore console"]
    assert m.devices[0].calls == m.devices[1].calls == ["suspend(freeze)", "resume(restore)"]
    assert m.devices[2].calls == ["suspend(freeze)"]


def test_a_power_down_callback_that_raises_unwinds_then_propagates(m):
    m.devices.insert(1, _Raises("c", "power_down", RuntimeError("stuck")))
    with pytest.raises(RuntimeError, match="stuck"):
        preserve_context_transition(m, lambda: pytest.fail("jumped"))
    assert m.pm_log == ORDER[:8] + UNDO[2:]
    assert m.devices[0].calls == ["suspend(freeze)", "power_down(freeze)", "power_up(restore)",
                                  "resume(restore)"]
    assert m.devices[2].calls == ["suspend(freeze)", "resume(restore)"]


def test_a_raising_callback_through_kernel_kexec_leaves_the_machine_usable():
    m = kjcore.Machine(32 << 20)
    m.kexec_load(0x1000000, [kjcore.Segment(b"\xc3", 0x1000000, 0x1000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    a = RecordingDevice("a")
    m.devices = [a, _Raises("b", "suspend", ValueError("no"))]
    with pytest.raises(ValueError):
        m.kernel_kexec()
    assert a.calls == ["suspend(freeze)", "resume(restore)"] and m.state == "kernel"
    m.devices = [a]
    m.kernel_kexec()                    # the lock was released and the jump works
    assert m.state == "kernel" and m.pm_log[-1] == "restore console"


# --------------------------------------------------------------- the PM sequence (SPEC 8)


def test_pm_sequence_around_a_real_jump():
    m = machine()
    m.devices = [RecordingDevice("disk"), RecordingDevice("net")]
    load(m, out_e9("j") + RET)
    reboot(m)
    assert m.pm_log == ORDER + ["machine_kexec"] + UNDO
    for dev in m.devices:
        assert dev.calls == ["suspend(freeze)", "power_down(freeze)", "power_up(restore)",
                             "resume(restore)"]
    assert m.debugcon == b"j"


@pytest.mark.parametrize("failure, code, log", [
    ("freeze", errno.EBUSY, ["prepare console", "freeze processes", "restore console"]),
    ("suspend", errno.EIO, ORDER[:4] + ["resume console", "thaw processes", "restore console"]),
    ("power_down", errno.ENODEV, ORDER[:8] + UNDO[2:]),
])
def test_pm_failures_unwind_and_skip_the_jump(failure, code, log):
    m = machine()
    ok = RecordingDevice("ok")
    bad = RecordingDevice("bad", fail_suspend=errno.EIO if failure == "suspend" else 0,
                          fail_power_down=-errno.ENODEV if failure == "power_down" else 0)
    m.devices = [ok, bad]
    if failure == "freeze":
        m.freeze_processes = lambda: -errno.EINTR
    img = load(m, out_e9("!") + RET)
    start = img.start
    ram, state = m.ram.copy(), m.cpu.get_state()
    with pytest.raises(KexecError) as e:
        reboot(m)
    assert e.value.errno == code
    assert m.pm_log == log
    assert np.array_equal(m.ram, ram)                      # no jump: not a byte changed
    assert state_diff(m.cpu.get_state(), state) == []
    assert m.debugcon == b"" and img.start == start and m.state == "kernel"
    if failure == "power_down":
        assert ok.calls == ["suspend(freeze)", "power_down(freeze)", "power_up(restore)",
                            "resume(restore)"]
    m.freeze_processes = lambda: 0
    m.devices = []
    m.pm_log.clear()
    assert reboot(m) == 0 and m.debugcon == b"!"           # and nothing is left locked
