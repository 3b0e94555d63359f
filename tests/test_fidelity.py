"""Fidelity details of the relocation routine on the way back (SPEC §7.10, issue 10 B7).

The 2.6.27 routine leaves ECX = the IND_DONE word its swap-back pass stopped at and EDX = the
swap page; it has no CLD, so a peer that comes back with DF = 1 makes the swap-back copies run
downwards.  ``Machine(fix_peer_df=True)`` adds the CLD.  Both engines must agree (invariant 13).
"""
import numpy as np
import pytest

import kjcore
from kjcore import IND_DONE, KEXEC_PRESERVE_CONTEXT, PAGE_OFFSET, PAGE_SIZE, Segment, relocate
from kjcore.cpu import CPUFault

RAM = 1 << 20
RESERVED = 64 << 10
DEST = 0x80000
ENGINES = ("emulated", "native")
RET = b"\xc3"
STD_RET = b"\xfd\xc3"                                   # std; ret
#: mov (%esp),%eax; std; call *%eax; jmp .-8: the jump-back protocol, coming back with DF = 1
STD_CALL_BACK = b"\x8b\x04\x24\xfd\xff\xd0\xeb\xf8"
SAME_STATE = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags",
              "cr0", "cr2", "cr3", "cr4")


def machine(engine, **kw):
    return kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine, **kw)


def load(m, code, pages=2):
    m.kexec_load(DEST, [Segment(code, DEST, pages * 4096)], KEXEC_PRESERVE_CONTEXT)
    return m.kexec_image


def done_word_address(ram, head):
    """Where the word that ends the walk of ``head`` lies in RAM (the routine's walk)."""
    ptr, word = None, head
    while not word & IND_DONE or word & 3:
        ptr = word & 0xFFFFF000 if word & 2 and not word & 1 else ptr + 4
        word = int(ram[ptr:ptr + 4].view("<u4")[0])
    return ptr


def registers(m):
    s = m.cpu.get_state()
    return {name: int(s[name]) for name in SAME_STATE}


# ------------------------------------------------------------------------ ECX and EDX
@pytest.mark.parametrize("engine", ENGINES)
def test_return_leaves_the_done_word_in_ecx_and_the_swap_page_in_edx(engine):
    m = machine(engine)
    img = load(m, RET)
    r = m.kernel_kexec()
    assert r.start == m.cpu.eax
    assert m.cpu.ecx == IND_DONE and m.cpu.edx == img.swap_page


@pytest.mark.parametrize("engine", ENGINES)
def test_ecx_is_the_word_the_walk_stopped_at(engine):
    """A DONE word with other bits set (the walk only tests bit 2) comes back whole."""
    m = machine(engine)
    img = load(m, RET)
    at = done_word_address(m.ram, img.head)
    m.ram[at:at + 4] = np.array([0xABCDE004], dtype="<u4").view(np.uint8)
    m.kernel_kexec()
    assert m.cpu.ecx == 0xABCDE004 and m.cpu.edx == img.swap_page


def test_engines_agree_on_the_registers_after_a_round_trip():
    regs = []
    for engine in ENGINES:
        m = machine(engine, fix_peer_df=True)
        load(m, STD_CALL_BACK, pages=3)
        for _ in range(2):
            m.kernel_kexec()
        regs.append(registers(m))
    assert regs[0] == regs[1]


# ------------------------------------------------------------------------------ DF
def changed_outside_bookkeeping(m, img, before):
    """Addresses that changed outside what a jump may change when its peer writes nothing:
    the control and swap pages, the kexec page tables and the first kernel's stack."""
    layout = m.first_kernel
    mask = np.ones(len(m.ram), dtype=bool)
    for page in [img.control_page, img.swap_page, *layout.kexec_tables()]:
        mask[page:page + PAGE_SIZE] = False
    mask[layout.stack_bottom:layout.kernel_esp - PAGE_OFFSET] = False
    return np.flatnonzero((m.ram != before) & mask)


@pytest.mark.parametrize("code", [STD_RET, STD_CALL_BACK], ids=["ret", "call"])
def test_fix_peer_df_round_trips_a_peer_that_comes_back_with_df_set(code):
    for engine in ENGINES:
        m = machine(engine, fix_peer_df=True)
        img = load(m, code)
        before = m.ram.copy()
        m.kernel_kexec()
        assert m.state == "kernel"
        assert changed_outside_bookkeeping(m, img, before).size == 0


def _df_failure(engine):
    m = machine(engine)
    img = load(m, STD_RET)
    before = m.ram.copy()
    with pytest.raises(CPUFault) as e:
        m.kernel_kexec()
    return m, img, before, e.value


def test_without_fix_peer_df_a_df_peer_destroys_the_first_kernel():
    """No CLD (2.6.27): the first copy of the swap back (S -> swap page) runs down from S, so
    it copies the 4092 bytes below S (here the indirection page) over the 4092 bytes below the
    swap page (here the control page: the routine's own code and stack).  The routine then
    returns into garbage and the first kernel never gets control back."""
    m, img, before, fault = _df_failure("emulated")
    ctrl, ind, src = img.control_page, int(img.indirection_pages()[0]), img.source_pages()[0]
    assert img.swap_page == ctrl + 4096 and src == ind + 4096       # the layout described
    assert m.state != "kernel"
    assert np.array_equal(m.ram[ctrl + 4:ctrl + 4096], before[ind + 4:ind + 4096])


def test_engines_agree_on_a_df_peer():
    """Invariant 13 with DF = 1: the native engine leaves such a pass to the CPU."""
    (a, _, _, ea), (b, _, _, eb) = (_df_failure(engine) for engine in ENGINES)
    assert type(ea) is type(eb) and str(ea) == str(eb) and a.state == b.state
    assert np.array_equal(a.ram, b.ram)
    assert registers(a) == registers(b)


# -------------------------------------------------------------------- triple-fault messages
def _pgd_wiping_peer(m):
    """A peer that clears the kexec PGD's first entry (the control page's, RAM is 1 MiB),
    then returns: paging on the way back faults on the first fetch, whatever the mode."""
    entry = m.first_kernel.kexec_pgd
    return load(m, b"\xc7\x05" + entry.to_bytes(4, "little") + bytes(4) + RET)  # movl $0; ret


@pytest.mark.parametrize("engine", ENGINES)
def test_a_non_pae_machine_never_gets_the_pae_explanation(engine):
    m = machine(engine)
    img = _pgd_wiping_peer(m)
    with pytest.raises(CPUFault) as e:
        m.kernel_kexec()
    msg = str(e.value)
    assert e.value.eip == img.control_page + relocate.PAGING_ON_RETURN_OFFSET
    assert "PAE" not in msg and "fix_pae_return" not in msg
    assert msg.startswith("triple fault: exception 14")
    assert f"page fault on the instruction fetch of {e.value.eip:#010x}" in msg


def test_the_pae_explanation_names_the_fault():
    m = machine("native", pae=True)
    img = load(m, RET)
    with pytest.raises(CPUFault) as e:
        m.kernel_kexec()
    msg, eip = str(e.value), img.control_page + relocate.PAGING_ON_RETURN_OFFSET
    assert msg.startswith(relocate.PAE_RETURN_MESSAGE)
    assert f"instruction fetch of {eip:#010x}" in msg


def _fault_state(cr2):
    return {"cr0": 0x80000011, "cr2": cr2, "cr4": 0}


@pytest.mark.parametrize("error_code, cr2, access", [
    (0x0, 0x12345678, "data read"),
    (0x2, 0x00021000, "data write"),
    (0x2, "eip", "data write"),                         # a write to its own code page
    (0x0, "eip", "instruction fetch"),
    (0x0, "eip+7", "instruction fetch"),                # the instruction crosses a page
    (0x10, 0x0, "instruction fetch"),                   # the I/D bit (NX in use)
    (None, 0x12345678, "data read"),
])
def test_a_data_access_is_not_called_an_instruction_fetch(error_code, cr2, access):
    ctrl = 0x20000
    eip = ctrl + relocate.PAGING_ON_RETURN_OFFSET
    cr2 = eip + 7 if cr2 == "eip+7" else eip if cr2 == "eip" else cr2
    assert relocate.page_fault_access(error_code, eip, cr2) == access
    state = _fault_state(cr2)
    msg = relocate.triple_fault_message(ctrl, 14, error_code, eip, state, pae=True,
                                        fix_pae_return=False)
    assert f"page fault on the {access} of {cr2:#010x}" in msg
    fetch = access == "instruction fetch"
    assert relocate.is_pae_return_fault(ctrl, 14, error_code, eip, state) == fetch
    assert msg.startswith(relocate.PAE_RETURN_MESSAGE) == fetch
    # never on a 2-level kernel, never with the fix, never for another exception
    for kw in (dict(pae=False, fix_pae_return=False), dict(pae=True, fix_pae_return=True)):
        other = relocate.triple_fault_message(ctrl, 14, error_code, eip, state, **kw)
        assert other.startswith("triple fault: exception 14")
    gp = relocate.triple_fault_message(ctrl, 13, 0, eip, state, pae=True, fix_pae_return=False)
    assert gp == f"triple fault: exception 13, error code 0x0 at EIP {eip:#010x}"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_data_read_fault_on_the_way_back_is_called_a_data_read(engine):
    """A peer overwrites the saved ESP: the routine's POPF on the kernel stack faults."""
    m = machine(engine)
    img = load(m, bytes([0xE6, 0xEA]) + RET)            # out %al, $0xEA; ret
    saved_esp = img.control_page + relocate.DATA_ESP
    m.cpu.on_port(0xEA, lambda port, size, value: m.ram.__setitem__(
        slice(saved_esp, saved_esp + 4), np.frombuffer(b"\x78\x56\x34\x12", np.uint8)))
    with pytest.raises(CPUFault) as e:
        m.kernel_kexec()
    msg = str(e.value)
    assert msg.startswith("triple fault: exception 14") and "PAE" not in msg
    assert "page fault on the data read of 0x12345678" in msg
    assert "fetch" not in msg
