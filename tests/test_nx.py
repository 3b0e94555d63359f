"""SPEC §5.3: with NX the control page is executable exactly while an image is loaded."""
import kjcore
from kjcore import KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.first_kernel import translate


def executable(m, phys):
    return translate(m.ram, m.first_kernel, m.first_kernel.va(phys))[1]


def test_control_page_executable_while_loaded():
    m = kjcore.Machine(16 << 20, pae=True, nx=True, crashkernel=(8 << 20, 2 << 20))
    m.kexec_load(0x100000, [Segment(b"\xc3", 0x100000, 0x1000)], KEXEC_PRESERVE_CONTEXT)
    cp = m.kexec_image.control_page
    assert executable(m, cp) and not executable(m, m.kexec_image.swap_page)
    m.kexec_load(8 << 20, [Segment(b"", 8 << 20, 0x1000)], KEXEC_ON_CRASH)
    crash_cp = m.kexec_crash_image.control_page
    assert executable(m, crash_cp)
    m.kexec_load(0, [])
    assert not executable(m, cp) and executable(m, crash_cp)
    m.kexec_load(0, [], KEXEC_ON_CRASH)
    assert not executable(m, crash_cp)


def test_without_nx_nothing_changes():
    m = kjcore.Machine(16 << 20, pae=True)
    before = m.ram[:0x10000].copy()
    m.kexec_load(0x100000, [Segment(b"\xc3", 0x100000, 0x1000)])
    assert (m.ram[:0x10000] == before).all()
