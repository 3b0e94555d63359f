"""machine_kexec: the jump itself, on kjcore's CPU (SPEC §6-§8).

The first kernel calls the project's relocation routine (``kjcore/relocate_kernel.S``) at the
control page's kernel virtual address; the CPU then runs everything the hardware would: the
switch to the kexec page tables, paging off, the page swap, the physical-mode image, the swap
back, paging on and the return.  The run stops at the first kernel's return address.

Two engines produce byte-identical RAM and CPU state (SPEC §12 invariant 13):

``"emulated"``
    the whole routine runs on the CPU, its ``rep movsl`` page copies included;
``"native"``
    when the CPU reaches the routine's ``swap_pages`` the pass is done by ``kjcore/_swap.pyx``
    instead, and the CPU then runs ``swap_pages`` over an empty list (its head argument set to
    the word that ended the native walk for that call, then put back), so every register, flag
    and stack word ends as the emulated pass leaves it; the pass's cost on the CPU is charged
    to the step budget.  Passes the native engine cannot reproduce exactly (DF = 1, a list
    that never ends or that the copies change, a strict-bus violation, a budget too small for
    the pass: see ``_native_swap``) are left to the CPU.
"""
from dataclasses import dataclass

import numpy as np

from . import relocate
from .constants import PAGE_SIZE
from .cpu import CPUFault, Status, StepLimit, TripleFault
from .cpu.state import STATE_DTYPE
from .swap import plan_pass, swap_pass

#: instruction budget of a jump when the caller gives none
DEFAULT_MAX_STEPS = 1_000_000_000

_CR0_PG = 1 << 31
_EFLAGS_DF = 1 << 10
#: the fewest guest instructions the routine spends on a word it reads from the list
_MIN_STEPS_PER_WORD = relocate.SWAP_PAGES_READ_STEPS + min(relocate.SWAP_PAGES_WORD_STEPS.values())
#: what the CPU spends on the empty pass after a native one (its head is the DONE word)
_EMPTY_PASS_STEPS = relocate.swap_pages_steps(0, {"done": 1})
_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr")
_GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
#: what save_processor_state / restore_processor_state keep (SPEC §8)
_PRESERVED = ("gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit", "cr0", "cr2", "cr3", "cr4",
              "efer", "eflags", "ebx", "esi", "edi", "ebp", "esp", "cpl") + tuple(
    f"{seg}_{field}" for seg in _SEGMENTS for field in ("sel", "base", "limit", "attr"))
#: their slots in a CPU state record, copied in one step
_PRESERVED_SLOTS = np.array([STATE_DTYPE.names.index(n) for n in _PRESERVED])


@dataclass
class JumpResult:
    """A preserve-context jump that came back (``kernel_kexec`` with KEXEC_PRESERVE_CONTEXT).

    ``start`` is the new ``image.start`` (the re-entry point read at [ESP] on return), ``eax``
    what the routine returned (the same value), ``steps`` the guest instructions executed,
    ``pages_swapped`` the source pages swapped in and back, ``debugcon`` what the guest wrote
    to port 0xE9 during this jump.
    """
    start: int
    steps: int
    pages_swapped: int
    debugcon: bytes
    eax: int


@dataclass
class ExecResult:
    """A plain kexec: the new image runs and the first kernel is gone.

    ``status`` is why the CPU stopped (``Status.HLT`` or ``Status.STEP_LIMIT``).
    """
    status: Status
    steps: int
    pages_swapped: int
    debugcon: bytes
    eip: int


def load_registers(cpu, regs):
    """Set the CPU from a register dict in :func:`kjcore.first_kernel.initial_cpu_state` form."""
    for name in _GPRS + ("eip", "eflags", "cr0", "cr2", "cr3", "cr4", "efer"):
        if name in regs:
            setattr(cpu, name, regs[name])
    cpu.gdtr.base, cpu.gdtr.limit = regs["gdtr_base"], regs["gdtr_limit"]
    cpu.idtr.base, cpu.idtr.limit = regs["idtr_base"], regs["idtr_limit"]
    for seg in _SEGMENTS:
        if f"{seg}_selector" in regs:
            attr = regs[f"{seg}_access"] | regs[f"{seg}_flags"] << 8
            cpu.load_segment(seg, regs[f"{seg}_selector"], regs[f"{seg}_base"],
                             regs[f"{seg}_limit"], attr)
    cpu.flush_tlb()


def save_processor_state(cpu):
    """The state the first kernel saves before the jump (a CPU state record)."""
    return cpu.get_state()


def restore_processor_state(cpu, saved):
    """Put back what :func:`save_processor_state` saved, leaving EAX/ECX/EDX/EIP as they are."""
    now = cpu.get_state()
    slots = np.asarray(now).reshape(1).view(np.int64)
    slots[_PRESERVED_SLOTS] = np.asarray(saved).reshape(1).view(np.int64)[_PRESERVED_SLOTS]
    cpu.set_state(now)


def machine_kexec(m, image, max_steps=None):
    """Run the relocation routine for ``image`` on ``m.cpu``; a JumpResult or an ExecResult.

    Raises :class:`kjcore.cpu.TripleFault` (the first kernel is lost; ``m.state`` becomes
    ``"lost"``), :class:`kjcore.cpu.StepLimit` when a preserve-context image does not come back
    within the budget, :class:`kjcore.cpu.CPUFault` for a halted preserve-context image or a
    strict-bus violation.
    """
    cpu, layout = m.cpu, m.first_kernel
    budget = DEFAULT_MAX_STEPS if max_steps is None else int(max_steps)
    regs = relocate.prepare_call(m.ram, layout, image.head, image.start, image.control_page,
                                 image.swap_page, m.pae, image.preserve_context,
                                 m.fix_pae_return, fix_peer_df=m.fix_peer_df)
    load_registers(cpu, regs)
    cpu.clear_debugcon()
    swap_entry = image.control_page + relocate.SYMBOLS["swap_pages"]
    user_breakpoints = set(cpu.breakpoints)
    cpu.breakpoints = {layout.return_address, swap_entry}
    per_pass = image.nr_source_pages
    steps = passes = 0
    pending = None          # native engine: (head argument's address, its value, return, steps)
    try:
        while True:
            status = cpu.run(budget - steps)
            steps += cpu.steps
            if status == Status.IO:
                _empty_port(cpu)
                continue
            if status != Status.BREAK:
                break
            at = (cpu.cs.base + cpu.eip) & 0xFFFFFFFF
            paging = cpu.cr0 & _CR0_PG
            if at == layout.return_address and paging:
                break
            if at == swap_entry and not paging:
                passes += 1
                if m.engine == "native":
                    pending = _native_swap(m, cpu, budget - steps)
                    if pending is not None:
                        cpu.breakpoints.add(pending[2])
                        steps += pending[3]
                continue
            if pending is not None and at == pending[2] and not paging:
                _put_word(m.ram, pending[0], pending[1])    # the empty pass has read it
                cpu.breakpoints.discard(at)
                pending = None
    finally:
        cpu.breakpoints = user_breakpoints
        m.debugcon += cpu.debugcon
    return _finish(m, image, cpu, status, steps, passes * per_pass)


def _finish(m, image, cpu, status, steps, pages):
    if status == Status.BREAK:
        image.start = cpu.eax
        return JumpResult(start=cpu.eax, steps=steps, pages_swapped=pages, debugcon=cpu.debugcon,
                          eax=cpu.eax)
    if status == Status.TRIPLE_FAULT:
        m.state = "lost"
        vec, err, eip = cpu.fault
        state = cpu.get_state()
        raise TripleFault(vec, err, eip, state, relocate.triple_fault_message(
            image.control_page, vec, err, eip, state, pae=m.pae,
            fix_pae_return=m.fix_pae_return))
    if not image.preserve_context and status in (Status.HLT, Status.STEP_LIMIT):
        m.state = "image"
        return ExecResult(status=status, steps=steps, pages_swapped=pages,
                          debugcon=cpu.debugcon, eip=cpu.eip)
    m.state = "image" if status in (Status.HLT, Status.STEP_LIMIT) else "lost"
    if status == Status.HLT:
        raise CPUFault(f"the image halted at EIP {cpu.eip:#010x} with interrupts off: it never "
                       "returns to the first kernel", cpu.get_state())
    if status == Status.STEP_LIMIT:
        raise StepLimit(f"the image did not return within {steps} instructions "
                        f"(EIP {cpu.eip:#010x})", cpu.get_state())
    cpu.raise_for_status(status)
    raise CPUFault(f"unexpected CPU status {status!r}", cpu.get_state())


def _native_swap(m, cpu, remaining):
    """Do the pass of the ``swap_pages(head, swap_page)`` call the CPU is about to make.

    The CPU then runs ``swap_pages`` with the word that ended the walk as its head argument: an
    empty pass that leaves ECX, EDX, EFLAGS and the stack words as the full pass would.
    A pass the native engine cannot do exactly as the routine would is left to the CPU
    (:func:`kjcore.swap.plan_pass` decides, without copying): one entered with DF = 1 (a peer
    came back with it and fix_peer_df is off: the copies run downwards, SPEC 7.10) or with an
    unaligned swap page (a peer wrote the control page's data area); a list that never reaches
    IND_DONE (self-linked, cyclic, or running through all memory) -- the CPU then walks it
    until the budget ends, exactly like the emulated engine; one whose copies would change the
    list, the routine's code or its stack; on a strict bus one that touches memory past RAM
    (the CPU faults at exactly the instruction, with exactly the partial copies, of the
    emulated engine); and one the emulated routine might not finish within the ``remaining``
    instruction budget.  A signal that interrupts the native copies (Ctrl-C) propagates and
    leaves the machine ``"lost"``: its memory is half swapped.
    Returns (head argument's stack address, its value, return address, the steps the emulated
    pass costs beyond the empty one: charged to the budget), or None.
    """
    esp = cpu.esp
    head, swap = _word(m.ram, esp + 4), _word(m.ram, esp + 8)
    if cpu.eflags & _EFLAGS_DF or swap % PAGE_SIZE:
        return None
    code = (cpu.cs.base + cpu.eip) & 0xFFFFFFFF
    verdict, words, kinds = plan_pass(m.ram, head, swap, protect=(code, esp - 16, esp + 11),
                                      strict_bus=m.strict_bus,
                                      max_words=remaining // _MIN_STEPS_PER_WORD + 1)
    steps = relocate.swap_pages_steps(words, kinds)
    if verdict != "ok" or steps > remaining:
        return None
    try:
        _, stop = swap_pass(m.ram, head, swap, "native")
    except BaseException:
        m.state = "lost"
        raise
    _put_word(m.ram, esp + 4, stop)
    return esp + 4, head, _word(m.ram, esp), steps - _EMPTY_PASS_STEPS


def _word(ram, addr):
    return int(ram[addr:addr + 4].view("<u4")[0]) if addr + 4 <= len(ram) else 0xFFFFFFFF


def _put_word(ram, addr, value):
    ram[addr:addr + 4] = np.array([value], dtype="<u4").view(np.uint8)


def _empty_port(cpu):
    """An I/O port nobody answers: reads float high, writes go nowhere."""
    port, size, out, _ = cpu.io_request
    cpu.complete_io(0 if out else (1 << (8 * size)) - 1)
