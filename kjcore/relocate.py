"""The relocation routine and the call into it (SPEC §6, §7): machine_kexec's half.

``relocate_kernel.S`` is i386 code written by this project; its assembled bytes are committed
next to it as ``relocate_kernel.bin`` (the test suite re-assembles and compares).  The binary
ends with a symbol table, so every code offset used here is read from the binary itself.

:func:`prepare_call` does what 2.6.27's ``machine_kexec`` does right before the jump: copy the
routine into the first half of the control page, fill ``page_list`` on the kernel stack, push
the cdecl call ``relocate_kernel(head, page_list, start, has_pae, preserve_context)`` with a
return address into the first kernel, and load flat segments and an empty GDT/IDT (base
``PAGE_OFFSET``, limit 0).  It returns the CPU registers to start from; running the CPU from
there until EIP reaches ``layout.return_address`` is the jump (and with preserve context the
round trip).  The returned EAX is the new ``image.start``.

>>> import numpy as np
>>> from kjcore.first_kernel import build_first_kernel
>>> ram = np.zeros(8 << 20, dtype=np.uint8)
>>> layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=4 << 20, pae=False,
...                             nx=False)
>>> regs = prepare_call(ram, layout, image_head=0x4, start=0x500000, control_page=0x600000,
...                     swap_page=0x601000, pae=False, preserve_context=True,
...                     fix_pae_return=False)
>>> hex(regs["eip"]), regs["gdtr_limit"], hex(regs["idtr_base"])
('0xc0600000', 0, '0xc0000000')
>>> [hex(w) for w in stack_words(ram, regs["esp"], 6)]
['0xc0001000', '0x4', '0xc000fdc0', '0x500000', '0x1', '0x1']
>>> hex(return_point_after_ret(0x601000))
'0x602000'
"""
import struct
from importlib import resources

import numpy as np

from .constants import PAGE_OFFSET, PAGE_SIZE
from .first_kernel import EFLAGS_RESERVED, flat_kernel_segments, initial_cpu_state

# page_list word indexes, 2.6.27 i386 order (SPEC §6).
PA_CONTROL_PAGE = 0
VA_CONTROL_PAGE = 1
PA_PGD = 2
VA_PGD = 3
PA_PTE_0 = 4
VA_PTE_0 = 5
PA_PTE_1 = 6
VA_PTE_1 = 7
PA_SWAP_PAGE = 8
PA_PMD_0 = 9
VA_PMD_0 = 10
PA_PMD_1 = 11
VA_PMD_1 = 12
PAGES_NR = 9
PAGES_NR_PAE = 13

# Data area of the control page (SPEC §6); DATA_FLAGS is kjcore's.
DATA_AREA = PAGE_SIZE // 2
DATA_ESP = DATA_AREA + 0x00
DATA_CR0 = DATA_AREA + 0x04
DATA_CR3 = DATA_AREA + 0x08
DATA_CR4 = DATA_AREA + 0x0C
DATA_VA_CONTROL = DATA_AREA + 0x10
DATA_PA_PGD = DATA_AREA + 0x14
DATA_PA_SWAP = DATA_AREA + 0x18
DATA_HEAD = DATA_AREA + 0x1C
DATA_FLAGS = DATA_AREA + 0x20
#: DATA_FLAGS bit: the routine restores CR4 before setting CR0.PG on the way back
FLAG_FIX_PAE = 1
#: DATA_FLAGS bit: the routine clears DF before the swap back (2.6.27 has no CLD there)
FLAG_FIX_DF = 2

#: the largest routine the first half of the control page can hold
MAX_CODE_SIZE = PAGE_SIZE // 2

#: names of the symbol table at the end of the binary, in order
SYMBOL_NAMES = ("relocate_kernel", "relocate_kernel_flags", "identity_mapped",
                "jump_back_entry", "virtual_mapped", "swap_pages", "paging_on_return",
                "symbol_table")
_MAGIC = b"KJRK"

#: bytes of the stack frame machine_kexec keeps page_list in (13 words, rounded up)
_PAGE_LIST_FRAME = 64


def load_routine():
    """The committed routine bytes and its symbol offsets ``{name: offset}``."""
    code = resources.files(__package__).joinpath("relocate_kernel.bin").read_bytes()
    return code, parse_symbols(code)


def parse_symbols(code):
    """Read the symbol table the .S file appends to the binary."""
    at = code.rfind(_MAGIC)
    if at < 0 or at % 4:
        raise ValueError("relocate_kernel.bin has no symbol table (magic 'KJRK')")
    (count,) = struct.unpack_from("<I", code, at + 4)
    if count != len(SYMBOL_NAMES) or at + 8 + 4 * count != len(code):
        raise ValueError(f"relocate_kernel.bin symbol table holds {count} entries, "
                         f"expected {len(SYMBOL_NAMES)}")
    offsets = struct.unpack_from(f"<{count}I", code, at + 8)
    symbols = dict(zip(SYMBOL_NAMES, offsets))
    if symbols["symbol_table"] != at or len(code) > MAX_CODE_SIZE:
        raise ValueError("relocate_kernel.bin is inconsistent or larger than 2048 bytes")
    return symbols


ROUTINE, SYMBOLS = load_routine()
#: offset of the instruction after ``call *start``: the peer's jump-back entry
JUMP_BACK_OFFSET = SYMBOLS["jump_back_entry"]
#: offset of the continuation that runs at the kernel virtual address on the way back
VIRTUAL_MAPPED_OFFSET = SYMBOLS["virtual_mapped"]
#: offset of the identity-mapped continuation (paging still on, kexec page tables)
IDENTITY_MAPPED_OFFSET = SYMBOLS["identity_mapped"]
#: offset of the first instruction after CR0.PG is set on the way back: where the faithful
#: routine under a PAE kernel page-faults (SPEC §7.10), identity-mapped address
PAGING_ON_RETURN_OFFSET = SYMBOLS["paging_on_return"]


def routine_flags(fix_pae_return, fix_peer_df):
    """The DATA_FLAGS bits for kjcore's two corrections of the 2.6.27 routine (SPEC 7.10)."""
    return (FLAG_FIX_PAE if fix_pae_return else 0) | (FLAG_FIX_DF if fix_peer_df else 0)


#: guest instructions ``swap_pages`` executes (relocate_kernel.S): its prologue and epilogue,
#: reading one word after the head, and decoding one word of each kind; a SOURCE word's
#: count includes its three REP MOVSL instructions at :data:`REP_MOVSL_STEPS` each
SWAP_PAGES_FIXED_STEPS = 9 + 5
SWAP_PAGES_READ_STEPS = 2
SWAP_PAGES_WORD_STEPS = {"destination": 5, "indirection": 7, "done": 6, "source": 21,
                         "skipped": 8}
#: steps kjcore's CPU charges for one ``rep movsl`` of 1024 elements (one per element, so a
#: long string cannot run past the step budget)
REP_MOVSL_STEPS = PAGE_SIZE // 4


def swap_pages_steps(words_read, kinds):
    """Guest instructions one ``swap_pages`` call executes, from its entry to its ``ret``.

    ``words_read`` is the number of words read after the head, ``kinds`` the number of words
    decoded per kind (:data:`kjcore.swap.WORD_KINDS`, head and final DONE included), as
    :func:`kjcore.swap.plan_pass` counts them.  The native engine charges this to the
    jump's step budget, so both engines count the same instructions (SPEC 12, invariant 13).
    """
    steps = SWAP_PAGES_FIXED_STEPS + SWAP_PAGES_READ_STEPS * words_read
    steps += sum(SWAP_PAGES_WORD_STEPS[kind] * n for kind, n in kinds.items())
    return steps + 3 * REP_MOVSL_STEPS * kinds.get("source", 0)


def entry_offset(flags):
    """Offset of the entry point in the control page for :func:`routine_flags` ``flags``.

    0 (``relocate_kernel``, the faithful routine) without flags; otherwise
    ``relocate_kernel_flags``, which takes the bits in EAX.
    """
    return SYMBOLS["relocate_kernel_flags" if flags else "relocate_kernel"]


def jump_back_entry(control_page):
    """Physical address the peer calls to come back (the return address of ``call *start``)."""
    return control_page + JUMP_BACK_OFFSET


def return_point_after_ret(swap_page):
    """Where the routine reads the re-entry point when the peer returns with a plain ``ret``.

    ESP is back at ``swap_page + 4096``, so the word read is the first word of the page
    physically after the swap page (SPEC §7.9; faithful i386 behaviour of 2.6.27).
    """
    return (swap_page + PAGE_SIZE) & 0xFFFFFFFF


def build_page_list(layout, control_page, swap_page):
    """``page_list`` as a list of ints (9 words, 13 with PAE), SPEC §6 order."""
    words = [0] * (PAGES_NR_PAE if layout.pae else PAGES_NR)
    words[PA_CONTROL_PAGE] = control_page
    words[VA_CONTROL_PAGE] = layout.va(control_page)
    words[PA_PGD] = layout.kexec_pgd
    words[VA_PGD] = layout.va(layout.kexec_pgd)
    words[PA_PTE_0] = layout.kexec_pte0
    words[VA_PTE_0] = layout.va(layout.kexec_pte0)
    words[PA_PTE_1] = layout.kexec_pte1
    words[VA_PTE_1] = layout.va(layout.kexec_pte1)
    words[PA_SWAP_PAGE] = swap_page
    if layout.pae:
        words[PA_PMD_0] = layout.kexec_pmd0
        words[VA_PMD_0] = layout.va(layout.kexec_pmd0)
        words[PA_PMD_1] = layout.kexec_pmd1
        words[VA_PMD_1] = layout.va(layout.kexec_pmd1)
    return words


def copy_routine(ram, control_page):
    """memcpy(control_page, relocate_kernel, PAGE_SIZE / 2): the routine's first half-page."""
    ram[control_page:control_page + len(ROUTINE)] = np.frombuffer(ROUTINE, dtype=np.uint8)


def _write_words(ram, phys, words):
    data = struct.pack(f"<{len(words)}I", *(w & 0xFFFFFFFF for w in words))
    ram[phys:phys + len(data)] = np.frombuffer(data, dtype=np.uint8)


def stack_words(ram, esp, n):
    """``n`` words of the first kernel's stack at kernel VA ``esp`` (direct map)."""
    phys = esp - PAGE_OFFSET
    return [int(w) for w in ram[phys:phys + 4 * n].view("<u4")]


def prepare_call(ram, layout, image_head, start, control_page, swap_page, pae,
                 preserve_context, fix_pae_return, *, fix_peer_df=False, has_pae=True):
    """machine_kexec up to the call: returns the CPU registers to start the routine with.

    ``swap_page`` may be None (a crash image has none; page_list then carries 0).
    ``has_pae`` is the CPU's PAE capability (``cpu_has_pae``), true for kjcore's CPU: the
    routine then clears CR4 when it turns paging off, also under a 2-level kernel.
    The dict holds every key of :func:`kjcore.first_kernel.initial_cpu_state`, with EIP at
    the entry point (kernel VA of the control page), ESP at the pushed return address,
    EFLAGS with IF clear, the flat kernel segments reloaded and GDTR/IDTR = PAGE_OFFSET/0.
    With ``fix_pae_return`` or ``fix_peer_df`` the entry is ``relocate_kernel_flags`` and
    EAX holds the :func:`routine_flags` bits.
    """
    if bool(pae) != layout.pae:
        raise ValueError(f"pae={pae} does not match the first kernel (layout.pae={layout.pae})")
    for name, value in (("control_page", control_page), ("swap_page", swap_page or 0)):
        if value % PAGE_SIZE or not 0 <= value < layout.ram_size:
            raise ValueError(f"{name}={value:#x} must be a page-aligned address in RAM")
    if control_page >= 0xC0000000 - PAGE_SIZE + 1:
        raise ValueError("the control page must lie below 0xC0000000")
    swap_page = swap_page or 0
    copy_routine(ram, control_page)
    page_list = build_page_list(layout, control_page, swap_page)
    page_list_va = layout.kernel_esp - _PAGE_LIST_FRAME
    esp = page_list_va - 6 * 4
    _write_words(ram, page_list_va - PAGE_OFFSET, page_list)
    _write_words(ram, esp - PAGE_OFFSET,
                 [layout.return_address, image_head, page_list_va, start,
                  1 if has_pae else 0, 1 if preserve_context else 0])
    flags = routine_flags(fix_pae_return, fix_peer_df)
    regs = initial_cpu_state(layout)
    regs.update(flat_kernel_segments())
    regs.update({
        "eax": flags,
        "eip": layout.va(control_page) + entry_offset(flags),
        "esp": esp,
        "eflags": regs["eflags"] & ~0x200 | EFLAGS_RESERVED,
        "gdtr_base": PAGE_OFFSET, "gdtr_limit": 0,
        "idtr_base": PAGE_OFFSET, "idtr_limit": 0,
    })
    return regs


def read_data_area(ram, control_page):
    """The data area of a control page as a dict (the routine's saved state)."""
    names = ("esp", "cr0", "cr3", "cr4", "va_control", "pa_pgd", "pa_swap", "head", "flags")
    words = ram[control_page + DATA_AREA:control_page + DATA_AREA + 4 * len(names)].view("<u4")
    return dict(zip(names, (int(w) for w in words)))


#: page-fault error code bits (Intel SDM vol. 3, 4.7)
_PF_WRITE = 0x2
_PF_FETCH = 0x10
#: the longest i386 instruction: a fetch fault's CR2 lies within this many bytes of EIP
_MAX_INSN = 15
_PAGE_FAULT = 14


def page_fault_access(error_code, eip, cr2):
    """What a page fault was doing: ``"instruction fetch"``, ``"data write"`` or ``"data read"``.

    The error code says "write" (bit 1) and, only with NX in use, "fetch" (bit 4); otherwise
    a fetch is recognised by CR2 lying in the instruction's bytes at EIP (flat code segment).
    A write is never a fetch; a read of the instruction's own page cannot fault where its
    fetch did not.
    """
    error_code = error_code or 0
    if error_code & _PF_WRITE:
        return "data write"
    if error_code & _PF_FETCH or 0 <= (cr2 - eip) & 0xFFFFFFFF <= _MAX_INSN:
        return "instruction fetch"
    return "data read"


def is_pae_return_fault(control_page, vector, error_code, eip, state):
    """True when a fault is the 2.6.27 PAE return failure (SPEC §7.10).

    The faithful routine sets CR0.PG with CR4 = 0 while CR3 holds PAE-format kexec tables;
    the next instruction fetch, at ``control_page + PAGING_ON_RETURN_OFFSET``, page-faults.
    ``state`` is the CPU state at the fault (``cr0``, ``cr2``, ``cr4``).  Only that fetch
    matches: another exception, or a data access, at the same EIP does not.  Whether the
    machine runs a PAE kernel without fix_pae_return is the caller's half of the question.
    """
    return (vector == _PAGE_FAULT
            and eip == (control_page + PAGING_ON_RETURN_OFFSET) & 0xFFFFFFFF
            and bool(state["cr0"] & 0x80000000) and not state["cr4"] & 0x20
            and page_fault_access(error_code, eip, int(state["cr2"])) == "instruction fetch")


def triple_fault_message(control_page, vector, error_code, eip, state, *, pae,
                         fix_pae_return):
    """The message of the TripleFault that ends a jump: what faulted, and why when known.

    A page fault names its access and CR2.  The PAE return explanation is given only on a PAE
    first kernel without ``fix_pae_return`` and only for :func:`is_pae_return_fault`.
    """
    err = "" if error_code is None else f", error code {error_code:#x}"
    what = f"exception {vector}{err} at EIP {eip:#010x}"
    if vector == _PAGE_FAULT:
        cr2 = int(state["cr2"])
        what += f" (page fault on the {page_fault_access(error_code, eip, cr2)} of {cr2:#010x})"
    if pae and not fix_pae_return and is_pae_return_fault(control_page, vector, error_code,
                                                          eip, state):
        return f"{PAE_RETURN_MESSAGE} [{what}]"
    return f"triple fault: {what}"


#: explanation for the TripleFault raised when :func:`is_pae_return_fault` holds
PAE_RETURN_MESSAGE = (
    "triple fault on the way back from a kexec jump under a PAE kernel: the 2.6.27 relocation "
    "routine cleared CR4 (PAE included) when it turned paging off and sets CR0.PG again before "
    "restoring CR4, so the first instruction fetch walks the PAE-format kexec page tables as "
    "2-level tables and faults; with IDT limit 0 that is a triple fault.  RAM already holds the "
    "first kernel again.  Machine(fix_pae_return=True) restores CR4 first (SPEC 7.10).")
