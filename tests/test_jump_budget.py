"""A jump's guest is bounded by what the caller gave (issue 10, B3): ``max_steps`` (REP
elements and I/O to nobody's port included), a wall-clock ``timeout``, and Ctrl-C / SIGTERM,
which stop it within about a second.  The machine is then clearly in state ``"image"``."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from jump_world import DEST, load
from jump_world import machine as small_machine

import kjcore
from kjcore import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    Segment,
)
from kjcore.cpu import CPUFault, GuestTimeout, Status, StepLimit
from kjcore.machine_kexec import ExecResult

LOOP = b"\xeb\xfe"                                          # jmp .
#: mov ecx,-1; mov dx,0x1234; mov esi,DEST; rep outsb -- 4G bytes to a port nobody handles
OUTS = (b"\xb9\xff\xff\xff\xff\x66\xba\x34\x12\xbe" + DEST.to_bytes(4, "little") + b"\xf3\x6e")


def machine(code, flags=KEXEC_PRESERVE_CONTEXT, engine="emulated"):
    """A small machine (jump_world's) with ``code`` loaded at DEST."""
    m = small_machine(engine=engine)
    load(m, code, flags=flags)
    return m


def test_max_steps_counts_rep_elements():
    """The routine's page copies are ``rep movsl``: 1024 steps per page copied (the native
    engine does the copies outside the CPU)."""
    m = machine(b"\xc3")
    r = m.kernel_kexec()
    assert r.steps > 3 * 1024 * r.pages_swapped
    m2 = machine(b"\xc3")
    with pytest.raises(StepLimit, match="did not return within 3000 steps"):
        m2.kernel_kexec(max_steps=3000)
    assert m2.state == "image"


def test_rep_outs_to_nobodys_port_is_bounded_by_max_steps():
    """Ports nobody handles are an empty bus answered in compiled code, one step per byte."""
    m = machine(OUTS)
    t0 = time.monotonic()
    with pytest.raises(StepLimit) as e:
        m.kernel_kexec(max_steps=10 ** 7)
    assert time.monotonic() - t0 < 5
    assert 0xFFFFFFFF - 10 ** 7 < e.value.state["ecx"] < 0xFFFFFFFF - 10 ** 7 + 10_000
    assert m.state == "image" and not m.cpu.open_bus


@pytest.mark.parametrize("flags", [KEXEC_PRESERVE_CONTEXT, 0])
def test_timeout_stops_an_endless_guest(flags):
    m = machine(LOOP, flags)
    snap = m.snapshot()
    t0 = time.monotonic()
    if flags:
        with pytest.raises(GuestTimeout, match=r"did not return within 0.3 s") as e:
            m.kernel_kexec(max_steps=10 ** 15, timeout=0.3)
        assert isinstance(e.value, StepLimit) and e.value.status == Status.TIMEOUT
    else:
        r = m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC,
                     max_steps=10 ** 15, timeout=0.3)
        assert r == 0 and isinstance(m.last_result, ExecResult)
        assert m.last_result.status == Status.TIMEOUT and m.last_result.eip == DEST
    assert 0.3 <= time.monotonic() - t0 < 1.5
    assert m.state == "image" and m.cpu.eip == DEST
    with pytest.raises(RuntimeError, match="state='image'"):
        m.kernel_kexec()
    m.restore(snap)
    m.kexec_load(DEST, [Segment(b"\xc3", DEST, 0x1000)], KEXEC_PRESERVE_CONTEXT)
    assert m.kernel_kexec(timeout=5).steps > 0 and m.state == "kernel"


@pytest.mark.parametrize("kw, error, match", [
    (dict(max_steps=0), ValueError, "max_steps must be positive, not 0"),
    (dict(max_steps=-5), ValueError, "max_steps must be positive"),
    (dict(max_steps=1.5), TypeError, "max_steps must be an integer, not float"),
    (dict(max_steps=True), TypeError, "not bool"),
    (dict(timeout=0), ValueError, "timeout must be a positive, finite number"),
    (dict(timeout=-1), ValueError, "timeout must be a positive"),
    (dict(timeout=float("nan")), ValueError, "not nan"),
    (dict(timeout=float("inf")), ValueError, "not inf"),
    (dict(timeout="1"), TypeError, "timeout must be a number of seconds, not str"),
])
def test_bad_budgets_are_refused_before_anything_happens(kw, error, match):
    m = machine(b"\xc3")
    ram = m.ram.copy()
    for call in (m.kernel_kexec, lambda **k: m.reboot(
            LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, **k)):
        with pytest.raises(error, match=match):
            call(**kw)
    assert m.pm_log == [] and m.state == "kernel" and np.array_equal(m.ram, ram)
    assert m.kexec_lock.acquire(blocking=False)


def test_budget_exceptions_are_cpu_faults():
    m = machine(b"\xf4")                                     # hlt: never comes back
    with pytest.raises(CPUFault, match="halted") as e:
        m.kernel_kexec()
    assert e.value.status == Status.HLT


_GUEST = textwrap.dedent("""
    import signal, sys
    import numpy as np
    import kjcore
    from kjcore.cpu import CPU
    if sys.argv[1] == "term":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    CPU(np.zeros(4096, np.uint8)).run(1)                  # compiled before the clock starts
    m = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10)
    m.kexec_load(0x80000, [kjcore.Segment(b"\\xeb\\xfe", 0x80000, 0x1000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    snap = m.snapshot()
    print("running", flush=True)
    try:
        m.kernel_kexec(max_steps=10 ** 15)
    except KeyboardInterrupt:
        print(f"interrupted: state={m.state}", flush=True)
    m.restore(snap)
    m.kexec_load(0x80000, [kjcore.Segment(b"\\xc3", 0x80000, 0x1000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    print(f"usable: {m.kernel_kexec().pages_swapped} pages", flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_an_endless_guest_within_a_second(sig):
    p = subprocess.Popen([sys.executable, "-c", _GUEST, "term" if sig == signal.SIGTERM else ""],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ))
    try:
        assert p.stdout.readline() == "running\n"
        time.sleep(0.5)                                    # the guest is in compiled code now
        t0 = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        p.kill()
    if sig == signal.SIGINT:
        assert out == "interrupted: state=image\nusable: 2 pages\n" and p.returncode == 0, err
        assert elapsed < 1.5
    else:
        assert err.strip() == "terminated" and p.returncode == 1 and elapsed < 1.5


# ------------------------------------------------------------------ bounded logs
def test_debug_console_keeps_the_last_mib_and_counts_the_rest():
    n = 3 << 20
    # mov ecx,n; mov dx,0xe9; mov esi,DEST; rep outsb; ret  (bytes past RAM read as 0xff)
    code = (b"\xb9" + n.to_bytes(4, "little") + b"\x66\xba\xe9\x00\xbe" + DEST.to_bytes(4, "little")
            + b"\xf3\x6e\xc3")
    m = machine(code)
    r = m.kernel_kexec()
    limit = kjcore.cpu.CPU.DEBUGCON_LIMIT
    assert len(r.debugcon) == len(m.debugcon) == limit and m.debugcon[-1:] == b"\xff"
    assert m.cpu.debugcon_dropped == m.debugcon_dropped == n - limit
    snap = m.snapshot()
    m.debugcon, m.debugcon_dropped = b"", 0
    m.restore(snap)
    assert m.debugcon_dropped == n - limit and len(m.debugcon) == limit


def test_pm_log_keeps_the_last_steps_and_counts_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr(kjcore.pm, "PM_LOG_LIMIT", 30)
    m = machine(b"\x8b\x04\x24\xff\xd0\xeb\xf9")     # L: mov (%esp),%eax; call *%eax; jmp L
    for _ in range(3):
        m.kernel_kexec()
    assert len(m.pm_log) == 30 and m.pm_log_dropped == 3 * 19 - 30
    assert m.pm_log[-1] == "restore console"
    m.save(tmp_path / "m")
    again = kjcore.Machine.open(tmp_path / "m")
    assert again.pm_log == m.pm_log and again.pm_log_dropped == m.pm_log_dropped
