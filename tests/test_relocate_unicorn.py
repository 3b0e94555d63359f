"""The relocation routine (SPEC §7) run on Unicorn, checked against SPEC §12 invariants 7-11.

kjcore's own CPU is not used here: Unicorn (QEMU's TCG) is the independent oracle for the
i386 code, :func:`kjcore.swap.swap_pages` (``engine="reference"``) the oracle for the RAM.

Unicorn findings (unicorn 2.1.4), each shown by a test below:

* Paging (2-level with PSE, PAE with 2 MiB pages), CR0/CR3/CR4 writes by ``reg_write`` and by
  guest ``mov %eax, %crN``, turning paging off and on, and toggling CR4.PAE while paging is off
  all work; segment registers written by ``reg_write`` are loaded from the GDT in guest memory.
* EFER.NXE is accepted by ``reg_write(UC_X86_REG_MSR, (0xC0000080, value))`` and NX is
  enforced: without machine_kexec_prepare's ``set_page_executable`` the routine faults on its
  first instruction.
* With EFER.NXE set, stopping with ``emu_start(begin, until=X)`` raises a spurious #PF
  (CR2 = 0xC0000000, then #DF) when execution reaches X, although X is mapped executable
  (``test_unicorn_until_artifact_with_nx``).  The harness therefore stops with a one-address
  code hook and ``emu_stop()`` instead of ``until``.
* An exception with IDT limit 0 surfaces as ``UC_ERR_EXCEPTION``; an interrupt hook sees the
  vectors (14 then 8) and stops the run.
"""
import struct

import numpy as np
import pytest

import kjcore
from kjcore import IND_DONE, KEXEC_PRESERVE_CONTEXT, PAGE_OFFSET, PAGE_SIZE, Segment
from kjcore import relocate as R
from kjcore.cpu.state import IF as EFLAGS_IF
from kjcore.first_kernel import (
    CR0_PG,
    CR4_PAE,
    MSR_EFER,
    build_first_kernel,
    initial_cpu_state,
    set_page_executable,
)
from kjcore.swap import swap_pages

unicorn = pytest.importorskip("unicorn")
capstone = pytest.importorskip("capstone")
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_32, Uc, UcError  # noqa: E402
from unicorn import x86_const as X  # noqa: E402

MiB = 1 << 20
RAM_SIZE = 16 * MiB
RESERVED = 4 * MiB
CALLEE_SAVED = {"ebx": 0x11111111, "esi": 0x22222222, "edi": 0x33333333, "ebp": 0x44444444}
#: instruction budget per run; Unicorn counts every iteration of ``rep movsl`` (3072 per page)
COUNT = 100_000_000
REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags",
        "cr0", "cr2", "cr3", "cr4")

# ------------------------------------------------------------------------------ payload
# Hand-assembled phy_mode programs (paging off, flat segments), at the first destination.
DEST_A, DEST_B, DEST_C = 0x800000, 0x900000, 0xA00000
TABLE = DEST_A + 0x400         # destination pages to sample (address list)
RESULTS = DEST_A + 0x800       # first word of each sampled page, as the payload saw it
MARK = DEST_A + 0xC00          # byte the payload writes (visible in its source page later)
REENTRY_OFF = 0x80             # ping-pong payload: re-entry point inside the image


def _imm(v):
    return struct.pack("<I", v)


def sampling_payload(pages):
    """Copy the first word of every page in ``pages`` to RESULTS, mark, ``ret``."""
    code = (b"\xbe" + _imm(TABLE)                 # mov $TABLE, %esi
            + b"\xbf" + _imm(RESULTS)             # mov $RESULTS, %edi
            + b"\xb9" + _imm(len(pages))          # mov $n, %ecx
            + b"\xad\x8b\x00\xab\xe2\xfa"         # 1: lodsl; mov (%eax),%eax; stosl; loop 1b
            + b"\xc6\x05" + _imm(MARK) + b"\x5a"  # movb $0x5a, MARK
            + b"\xc3")                            # ret
    return code, struct.pack(f"<{len(pages)}I", *pages)


def pingpong_payload():
    """Call the jump-back entry (so the kernel resumes us later at REENTRY_OFF), then ``ret``.

    entry:   pop %ecx; call *%ecx            -> re-entry point = the address after the call
    reentry: movb $0x77, MARK + 1; ret
    """
    code = b"\x59\xff\xd1"
    code += b"\xc6\x05" + _imm(MARK + 1) + b"\x77\xc3"
    return code, 3                                 # code, offset of the re-entry point


def image_segments(code, extra=b""):
    """Three segments; every page starts with a distinct word; one segment is zero-padded."""
    a = bytearray(3 * PAGE_SIZE)
    a[:len(code)] = code
    a[TABLE - DEST_A:TABLE - DEST_A + len(extra)] = extra
    for i in range(1, 3):
        a[i * PAGE_SIZE:i * PAGE_SIZE + 4] = _imm(0xA0000000 + i)
    b = _imm(0xB0000000) * 1024
    c = _imm(0xC0000000) + b"\xcc" * 100              # bufsz < memsz: the rest is zero
    return [Segment(bytes(a), DEST_A, 3 * PAGE_SIZE), Segment(b, DEST_B, PAGE_SIZE),
            Segment(c, DEST_C, 2 * PAGE_SIZE)]


SAMPLED = [DEST_A + PAGE_SIZE, DEST_A + 2 * PAGE_SIZE, DEST_B, DEST_C, DEST_C + PAGE_SIZE]
EXPECTED_SAMPLES = [0xA0000001, 0xA0000002, 0xB0000000, 0xC0000000, 0]


# ------------------------------------------------------------------------------ harness
def make_machine(pae, nx, code, extra=b"", seed=1):
    m = kjcore.Machine(ram_size=RAM_SIZE, pae=pae, nx=nx, kernel_reserved=RESERVED)
    rng = np.random.default_rng(seed)
    m.ram[:] = rng.integers(0, 256, RAM_SIZE, dtype=np.uint8)   # the first kernel's data
    layout = build_first_kernel(m.ram, ram_size=RAM_SIZE, kernel_reserved=RESERVED, pae=pae,
                                nx=nx)
    m.kexec_load(DEST_A, image_segments(code, extra), KEXEC_PRESERVE_CONTEXT)
    set_page_executable(m.ram, layout, m.kexec_image.control_page, True)  # machine_kexec_prepare
    return m, layout


class Run:
    """One call of the routine on Unicorn, with RAM snapshots at interesting addresses."""

    def __init__(self, ram, layout, regs, stops=(), snapshots=()):
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.size = len(ram)
        uc.mem_map(0, self.size + PAGE_SIZE)          # + one page of "empty bus" (all ones)
        uc.mem_write(0, ram.tobytes())
        uc.mem_write(self.size, b"\xff" * PAGE_SIZE)
        self.snap = {}
        self.vectors = []
        self.entry_regs = {}
        # The kernel's own descriptors first: selectors are loaded from the GDT in RAM.
        state = initial_cpu_state(layout)
        uc.reg_write(X.UC_X86_REG_CR3, regs["cr3"])
        uc.reg_write(X.UC_X86_REG_CR4, regs["cr4"])
        if regs["efer"]:
            uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, regs["efer"]))
        uc.reg_write(X.UC_X86_REG_CR0, regs["cr0"])
        uc.reg_write(X.UC_X86_REG_GDTR, (0, state["gdtr_base"], state["gdtr_limit"], 0))
        for seg in ("ss", "ds", "es", "fs", "gs", "cs"):
            uc.reg_write(getattr(X, f"UC_X86_REG_{seg.upper()}"), regs[f"{seg}_selector"])
        # machine_kexec: empty GDT and IDT at PAGE_OFFSET (descriptor caches stay valid).
        uc.reg_write(X.UC_X86_REG_GDTR, (0, regs["gdtr_base"], regs["gdtr_limit"], 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, regs["idtr_base"], regs["idtr_limit"], 0))
        for name in ("eax", "ecx", "edx", "esp", "eflags"):
            uc.reg_write(getattr(X, f"UC_X86_REG_{name.upper()}"), regs[name])
        for name, value in CALLEE_SAVED.items():
            uc.reg_write(getattr(X, f"UC_X86_REG_{name.upper()}"), value)
        self.before_regs = self.regs()

        def on_code(u, address, size, what):
            if address in snapshots and snapshots[address] not in self.snap:
                self.snap[snapshots[address]] = self.ram()
                self.entry_regs[snapshots[address]] = self.regs()
            if address in stops:
                u.emu_stop()

        def on_intr(u, vector, data):
            self.vectors.append((vector, u.reg_read(X.UC_X86_REG_EIP),
                                 u.reg_read(X.UC_X86_REG_CR2)))
            u.emu_stop()

        for a in set(stops) | set(snapshots):
            uc.hook_add(UC_HOOK_CODE, on_code, begin=a, end=a)
        uc.hook_add(UC_HOOK_INTR, on_intr)
        self.error = None
        try:
            uc.emu_start(regs["eip"], 0xFFFFFFFF, count=COUNT)
        except UcError as e:
            self.error = e

    def regs(self):
        return {r: self.uc.reg_read(getattr(X, f"UC_X86_REG_{r.upper()}")) for r in REGS}

    def ram(self):
        return np.frombuffer(bytes(self.uc.mem_read(0, self.size)), dtype=np.uint8).copy()


def word(ram, addr):
    return int(ram[addr:addr + 4].view("<u4")[0])


def page_mask(size, pages):
    mask = np.zeros(size, dtype=bool)
    for p in pages:
        mask[p:p + PAGE_SIZE] = True
    return mask


def run_round_trip(pae, fix, nx=False, code_extra=None, start=None):
    code, extra = code_extra or sampling_payload(SAMPLED)
    m, layout = make_machine(pae, nx, code, extra)
    img = m.kexec_image
    regs = R.prepare_call(m.ram, layout, img.head, start or img.start, img.control_page,
                          img.swap_page, pae, True, fix)
    before = m.ram.copy()
    jb = R.jump_back_entry(img.control_page)
    run = Run(m.ram, layout, regs, stops={layout.return_address},
              snapshots={start or img.start: "entry", jb: "back"})
    return m, layout, img, regs, before, run


def allowed_pages(m, layout, img):
    return ([img.control_page, img.swap_page] + img.source_pages().tolist()
            + img.indirection_pages().tolist() + list(layout.kexec_tables()))


# -------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("pae,nx", [(False, False), (True, True), (True, False)])
def test_round_trip_invariants(pae, nx):
    """SPEC §12 invariants 7-11 on one preserve-context call (PAE with fix_pae_return)."""
    m, layout, img, regs, before, run = run_round_trip(pae, fix=pae, nx=nx)
    assert run.error is None and not run.vectors, (run.error, run.vectors)
    after = run.ram()
    out = run.regs()
    assert out["eip"] == layout.return_address

    # What the peer saw at entry (SPEC §7.8): paging off, IF = 0, one word on the swap page
    # stack, which is the jump-back entry.
    entry = run.entry_regs["entry"]
    assert entry["cr0"] & CR0_PG == 0 and entry["cr0"] & 1
    assert entry["cr4"] == 0 and entry["cr3"] == 0
    assert entry["eflags"] & EFLAGS_IF == 0
    assert entry["esp"] == img.swap_page + PAGE_SIZE - 4
    assert word(run.snap["entry"], entry["esp"]) == R.jump_back_entry(img.control_page)

    # Invariant 7 (RAM side): at entry, RAM is one reference swap pass of the RAM before the
    # jump, except the control page (code, data area, stack) and the pushed return address.
    during = before.copy()
    swap_pages(during, img.head, img.swap_page, engine="reference")
    # The first kernel's stack below its ESP at the call (the routine's frame lives there).
    stack_hole = np.zeros(RAM_SIZE, dtype=bool)
    stack_hole[layout.stack_bottom:regs["esp"] - PAGE_OFFSET] = True
    ignore = page_mask(RAM_SIZE, [img.control_page] + list(layout.kexec_tables())) | stack_hole
    ignore[img.swap_page + PAGE_SIZE - 4:img.swap_page + PAGE_SIZE] = True
    diff = np.flatnonzero((run.snap["entry"] != during) & ~ignore)
    assert diff.size == 0, [hex(d) for d in diff[:8]]
    # ... and from the payload's side: it read the image's words in every destination.
    back = run.snap["back"]
    assert [word(back, RESULTS + 4 * i) for i in range(len(SAMPLED))] == EXPECTED_SAMPLES
    assert back[MARK] == 0x5A

    # Invariant 10 / oracle: the second pass (swap back) is the reference pass over the RAM
    # the payload left.
    expect = back.copy()
    swap_pages(expect, img.head, img.swap_page, engine="reference")
    ignore = page_mask(RAM_SIZE, [img.control_page, img.swap_page]
                       + list(layout.kexec_tables())) | stack_hole
    diff = np.flatnonzero((after != expect) & ~ignore)
    assert diff.size == 0, [hex(d) for d in diff[:8]]

    # Invariant 8: everything but the allowed pages equals the RAM before the jump.
    allowed = page_mask(RAM_SIZE, allowed_pages(m, layout, img)) | stack_hole
    diff = np.flatnonzero((after != before) & ~allowed)
    assert diff.size == 0, [hex(d) for d in diff[:8]]
    for dst in img.destination_pages().tolist():
        assert np.array_equal(after[dst:dst + PAGE_SIZE], before[dst:dst + PAGE_SIZE])

    # Invariant 9: each source page holds its destination as the image left it.
    for src, dst in zip(img.source_pages().tolist(), img.destination_pages().tolist()):
        assert np.array_equal(after[src:src + PAGE_SIZE], back[dst:dst + PAGE_SIZE])
    src_a = img.source_pages()[0]
    assert after[src_a + MARK - DEST_A] == 0x5A

    # Invariant 11: a plain ret leaves ESP at swap + 4096; EAX is the word found there.
    assert out["eax"] == word(back, R.return_point_after_ret(img.swap_page))

    # CPU state of the first kernel after the return (SPEC §7.10, §8).
    for name, value in CALLEE_SAVED.items():
        assert out[name] == value, name
    assert out["eflags"] == regs["eflags"]
    assert (out["cr0"], out["cr3"], out["cr4"]) == (regs["cr0"], regs["cr3"], regs["cr4"])
    assert out["esp"] == regs["esp"] + 4            # the return address was popped
    # ECX = the DONE word the swap back stopped at, EDX = the swap page (2.6.27).
    assert (out["ecx"], out["edx"]) == (IND_DONE, img.swap_page)
    data = R.read_data_area(after, img.control_page)
    assert data["esp"] == regs["esp"] - 20
    assert (data["cr0"], data["cr3"], data["cr4"]) == (regs["cr0"], regs["cr3"], regs["cr4"])
    assert data["va_control"] == PAGE_OFFSET + img.control_page
    assert data["pa_pgd"] == layout.kexec_pgd and data["pa_swap"] == img.swap_page
    assert data["head"] == img.head and data["flags"] == (R.FLAG_FIX_PAE if pae else 0)


def test_faithful_pae_routine_cannot_come_back():
    """SPEC §7.10: CR0.PG is set while CR4 = 0 and CR3 holds PAE tables: #PF, #DF (triple)."""
    m, layout, img, regs, before, run = run_round_trip(pae=True, fix=False, nx=True)
    # The payload ran and came back to the routine; the swap back is done ...
    assert "back" in run.snap
    after = run.ram()
    for dst in img.destination_pages().tolist():
        assert np.array_equal(after[dst:dst + PAGE_SIZE], before[dst:dst + PAGE_SIZE])
    # ... then the first fetch after the CR0 write that sets PG faults.
    out = run.regs()
    pg_set = _instruction_after_paging_on()
    assert out["eip"] == img.control_page + pg_set
    assert out["cr0"] & CR0_PG and out["cr4"] & CR4_PAE == 0
    assert out["cr3"] == layout.kexec_pgd
    assert [v for v, _, _ in run.vectors][:1] == [14], run.vectors
    assert run.vectors[0][2] == img.control_page + pg_set     # CR2: the instruction fetch
    # Unicorn reports no error code: the fetch is recognised by CR2 at the #PF.
    at_pf = {**out, "cr2": run.vectors[0][2]}
    assert R.is_pae_return_fault(img.control_page, 14, None, out["eip"], at_pf)
    assert not R.is_pae_return_fault(img.control_page, 14, None, out["eip"],
                                     {**at_pf, "cr4": regs["cr4"]})


def _instruction_after_paging_on():
    """Offset of the instruction after the CR0 write on the way back (found by capstone)."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    insns = list(md.disasm(R.ROUTINE[:R.SYMBOLS["virtual_mapped"]], 0))
    writes = [i for i in insns if i.mnemonic == "mov" and i.op_str.startswith("cr0")
              and i.address > R.JUMP_BACK_OFFSET]
    assert len(writes) == 1
    assert writes[0].address + writes[0].size == R.PAGING_ON_RETURN_OFFSET
    return writes[0].address + writes[0].size


def test_ping_pong_reentry_point():
    """A peer that calls the jump-back entry is resumed there on the next exec (SPEC §7.9)."""
    code, reentry_off = pingpong_payload()
    m, layout, img, regs, before, run = run_round_trip(False, False, code_extra=(code, b""))
    assert run.error is None and not run.vectors
    out = run.regs()
    assert out["eax"] == DEST_A + reentry_off                 # image.start for the next exec
    after = run.ram()
    # Second exec, entering at the re-entry point: it marks and returns with a plain ret.
    m.ram[:] = after
    regs2 = R.prepare_call(m.ram, layout, img.head, out["eax"], img.control_page,
                           img.swap_page, False, True, False)
    before2 = m.ram.copy()
    run2 = Run(m.ram, layout, regs2, stops={layout.return_address},
               snapshots={R.jump_back_entry(img.control_page): "back"})
    assert run2.error is None and not run2.vectors
    after2 = run2.ram()
    src_a = img.source_pages()[0]
    assert after2[src_a + MARK + 1 - DEST_A] == 0x77
    assert run2.regs()["eax"] == word(run2.snap["back"], img.swap_page + PAGE_SIZE)
    for dst in img.destination_pages().tolist():
        assert np.array_equal(after2[dst:dst + PAGE_SIZE], before2[dst:dst + PAGE_SIZE])


@pytest.mark.parametrize("pae", [False, True])
def test_plain_kexec_path(pae):
    """SPEC §7.7: zeroed registers, stack at the top of the control page, paging off."""
    code, extra = sampling_payload(SAMPLED)
    m, layout = make_machine(pae, pae, code, extra)
    img = m.kexec_image
    regs = R.prepare_call(m.ram, layout, img.head, img.start, img.control_page, img.swap_page,
                          pae, False, False)
    before = m.ram.copy()
    run = Run(m.ram, layout, regs, stops={img.start}, snapshots={img.start: "entry"})
    assert run.error is None and not run.vectors
    entry = run.entry_regs["entry"]
    assert all(entry[r] == 0 for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"))
    assert entry["esp"] == img.control_page + PAGE_SIZE
    assert entry["eip"] == img.start
    assert entry["cr0"] & CR0_PG == 0 and entry["cr4"] == 0 and entry["cr3"] == 0
    assert entry["eflags"] & (EFLAGS_IF | 0x400) == 0           # IF and DF clear
    expect = before.copy()
    swap_pages(expect, img.head, img.swap_page, engine="reference")
    ignore = page_mask(RAM_SIZE, [img.control_page] + list(layout.kexec_tables()))
    ignore[layout.stack_bottom:regs["esp"] - PAGE_OFFSET] = True
    diff = np.flatnonzero((run.snap["entry"] != expect) & ~ignore)
    assert diff.size == 0, [hex(d) for d in diff[:8]]


def test_nx_control_page_must_be_made_executable():
    """Without machine_kexec_prepare's attribute change the routine's first fetch faults."""
    code, extra = sampling_payload(SAMPLED)
    m, layout = make_machine(True, True, code, extra)
    img = m.kexec_image
    set_page_executable(m.ram, layout, img.control_page, False)   # machine_kexec_cleanup
    regs = R.prepare_call(m.ram, layout, img.head, img.start, img.control_page, img.swap_page,
                          True, True, True)
    run = Run(m.ram, layout, regs, stops={layout.return_address})
    assert run.vectors and run.vectors[0][0] == 14
    assert run.vectors[0][1] == regs["eip"]


def test_unicorn_until_artifact_with_nx():
    """Documents why the harness stops with a code hook: ``until`` misbehaves under NXE."""
    ram = np.zeros(RAM_SIZE, dtype=np.uint8)
    layout = build_first_kernel(ram, ram_size=RAM_SIZE, kernel_reserved=RESERVED, pae=True,
                                nx=True)
    state = initial_cpu_state(layout)
    ram[layout.text:layout.text + 4] = [0x90, 0x90, 0x90, 0xF4]   # nop; nop; nop; hlt
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, RAM_SIZE)
    uc.mem_write(0, ram.tobytes())
    uc.reg_write(X.UC_X86_REG_CR3, state["cr3"])
    uc.reg_write(X.UC_X86_REG_CR4, state["cr4"])
    uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, state["efer"]))
    uc.reg_write(X.UC_X86_REG_CR0, state["cr0"])
    uc.reg_write(X.UC_X86_REG_ESP, state["esp"])
    uc.emu_start(layout.text_va, layout.text_va + 2)            # fine when X is not the start
    assert uc.reg_read(X.UC_X86_REG_EIP) == layout.text_va + 2
    seen = []
    uc.hook_add(UC_HOOK_INTR, lambda u, v, d: (seen.append((v, u.reg_read(X.UC_X86_REG_CR2))),
                                               u.emu_stop()))
    uc.emu_start(layout.text_va, layout.text_va)
    assert seen[:1] == [(14, PAGE_OFFSET)]     # a page fault that the page tables do not justify


# ------------------------------------------------------------------ random and large layouts
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kjcore.testing.strategies import segment_layouts  # noqa: E402

PAYLOAD_AT = 12 * MiB          # a one-page image segment holding `ret`; the drawn ones lie below


def check_against_reference(segs, pae, seed=3):
    """Load ``segs`` plus a ``ret`` payload, run one round trip, compare with the oracle."""
    m = kjcore.Machine(ram_size=RAM_SIZE, pae=pae, nx=pae, kernel_reserved=RESERVED)
    m.ram[:] = np.random.default_rng(seed).integers(0, 256, RAM_SIZE, dtype=np.uint8)
    layout = build_first_kernel(m.ram, ram_size=RAM_SIZE, kernel_reserved=RESERVED, pae=pae,
                                nx=pae)
    m.kexec_load(PAYLOAD_AT, list(segs) + [Segment(b"\xc3", PAYLOAD_AT, PAGE_SIZE)],
                 KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    set_page_executable(m.ram, layout, img.control_page, True)
    regs = R.prepare_call(m.ram, layout, img.head, img.start, img.control_page, img.swap_page,
                          pae, True, pae)
    before = m.ram.copy()
    control = img.control_page
    run = Run(m.ram, layout, regs, stops={layout.return_address},
              snapshots={control + R.IDENTITY_MAPPED_OFFSET: "pre",
                         R.jump_back_entry(control): "back"})
    assert run.error is None and not run.vectors, (run.error, run.vectors)
    assert run.regs()["eip"] == layout.return_address       # not stopped by the COUNT budget
    after = run.ram()
    # Oracle: RAM when the routine reaches its identity-mapped copy (kexec tables written,
    # registers saved on the kernel stack), swapped by the reference engine, is the RAM the
    # payload sees; the payload only pushes its return address; the way back is a second
    # reference pass (invariant 10).  Only the control page (code, data area, routine stack)
    # and the return-address words on the swap page are the routine's own.
    pre, back = run.snap["pre"], run.snap["back"]
    during = pre.copy()
    swap_pages(during, img.head, img.swap_page, engine="reference")
    hole = page_mask(RAM_SIZE, [control])
    hole[img.swap_page + PAGE_SIZE - 8:img.swap_page + PAGE_SIZE] = True
    diff = np.flatnonzero((back != during) & ~hole)
    assert diff.size == 0, [hex(d) for d in diff[:8]]
    expect = back.copy()
    swap_pages(expect, img.head, img.swap_page, engine="reference")
    diff = np.flatnonzero((after != expect) & ~hole)
    assert diff.size == 0, [hex(d) for d in diff[:8]]
    # Before the routine ran, only its own pages and the stack below ESP differed.
    allowed = page_mask(RAM_SIZE, [control] + list(layout.kexec_tables()))
    allowed[layout.stack_bottom:regs["esp"] - PAGE_OFFSET] = True
    assert not np.any((pre != before) & ~allowed)
    # Invariants 8 and 9 after the return.
    allowed = page_mask(RAM_SIZE, allowed_pages(m, layout, img))
    allowed[layout.stack_bottom:regs["esp"] - PAGE_OFFSET] = True
    diff = np.flatnonzero((after != before) & ~allowed)
    assert diff.size == 0, [hex(d) for d in diff[:8]]
    for src, dst in zip(img.source_pages().tolist(), img.destination_pages().tolist()):
        assert np.array_equal(after[src:src + PAGE_SIZE], back[dst:dst + PAGE_SIZE])
    out = run.regs()
    assert out["eip"] == layout.return_address
    assert out["eax"] == word(back, img.swap_page + PAGE_SIZE)
    assert out["esp"] == regs["esp"] + 4 and out["cr3"] == regs["cr3"]
    for name, value in CALLEE_SAVED.items():
        assert out[name] == value, name
    return img


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(segment_layouts(lo=0, hi=PAYLOAD_AT, max_segments=6, max_pages=24), st.booleans())
def test_random_layouts_match_the_reference_swap(segs, pae):
    """Destinations anywhere below 12 MiB, also over the first kernel's page tables, GDT and
    stack (SPEC §4.1 allows it): everything is swapped out and back before it is used."""
    check_against_reference(segs, pae)


def test_destinations_over_the_first_kernel_and_a_long_list():
    """1100 source pages (two indirection pages) and a segment covering the kernel's own
    page tables, GDT, kexec tables and stack."""
    segs = [Segment(np.arange(0x10000, dtype=np.uint32).view(np.uint8)[:0x10000], 0, 0x10000),
            Segment(b"\x5a" * 100, 0x600000, 1084 * PAGE_SIZE)]
    img = check_against_reference(segs, pae=False)
    assert len(img.indirection_pages()) == 2
