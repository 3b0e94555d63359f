"""The relocation routine of a loaded image run on Unicorn: the baseline of bench_jump (SPEC §13).

Same approach as ``tests/test_relocate_unicorn.py`` (kept separate: benchmarks do not import
tests): :func:`kjcore.relocate.prepare_call` writes the routine, ``page_list`` and the call
frame into a copy of the machine's RAM and gives the registers; Unicorn maps that copy
zero-copy (``mem_map_ptr``), loads the first kernel's selectors from its GDT, then the
machine_kexec registers, and runs from the routine's entry until EIP reaches the first
kernel's return address.  Only :meth:`UnicornJump.run` is timed.

``emu_start(until=...)`` is used to stop: the NXE artifact documented in the Unicorn test
does not arise because the benchmark machines are 2-level (no PAE, no NX).
"""
import mmap
import time

import numpy as np
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc, UcError
from unicorn import x86_const as X

from kjcore import PAGE_SIZE
from kjcore import relocate as R
from kjcore.first_kernel import MSR_EFER, initial_cpu_state

_GPRS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eflags")


def _reg(name):
    return getattr(X, f"UC_X86_REG_{name.upper()}")


class UnicornJump:
    """One machine's loaded image, ready to be run on Unicorn (RAM copied once)."""

    def __init__(self, m):
        if m.pae:
            raise ValueError("the Unicorn baseline stops with until=: 2-level machines only")
        self.m = m
        self.size = len(m.ram)
        # Page-aligned host buffer (mem_map_ptr); RAM plus one page of "empty bus".
        self._buf = mmap.mmap(-1, self.size + PAGE_SIZE)
        self.ram = np.frombuffer(self._buf, dtype=np.uint8)
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map_ptr(0, self.size + PAGE_SIZE, UC_PROT_ALL,
                            int(self.ram.ctypes.data))
        self.ram[self.size:] = 0xFF
        self.regs = None

    def prepare(self, entry):
        """Copy the machine's RAM, do machine_kexec's half of the call, set the registers."""
        m, img, layout = self.m, self.m.kexec_image, self.m.first_kernel
        np.copyto(self.ram[:self.size], m.ram)
        ram = self.ram[:self.size]
        regs = R.prepare_call(ram, layout, img.head, entry, img.control_page, img.swap_page,
                              m.pae, img.preserve_context, m.fix_pae_return,
                              fix_peer_df=m.fix_peer_df)
        uc = self.uc
        kernel = initial_cpu_state(layout)
        uc.reg_write(X.UC_X86_REG_CR3, regs["cr3"])
        uc.reg_write(X.UC_X86_REG_CR4, regs["cr4"])
        if regs["efer"]:
            uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, regs["efer"]))
        uc.reg_write(X.UC_X86_REG_CR0, regs["cr0"])
        # Selectors are loaded from the first kernel's GDT in RAM, then machine_kexec's empty
        # GDT/IDT (the descriptor caches stay valid, as on hardware).
        uc.reg_write(X.UC_X86_REG_GDTR, (0, kernel["gdtr_base"], kernel["gdtr_limit"], 0))
        for seg in ("ss", "ds", "es", "fs", "gs", "cs"):
            uc.reg_write(_reg(seg), regs[f"{seg}_selector"])
        uc.reg_write(X.UC_X86_REG_GDTR, (0, regs["gdtr_base"], regs["gdtr_limit"], 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, regs["idtr_base"], regs["idtr_limit"], 0))
        for name in _GPRS:
            uc.reg_write(_reg(name), regs[name])
        self.regs = regs

    def run(self, timeout_s=0):
        """Run the prepared call to the return address; seconds taken, or None on timeout.

        Raises RuntimeError when the routine stops anywhere else (a fault, an exception).
        """
        layout = self.m.first_kernel
        t0 = time.perf_counter()
        try:
            self.uc.emu_start(self.regs["eip"], layout.return_address,
                              timeout=int(timeout_s * 1e6))
        except UcError as e:
            raise RuntimeError(f"Unicorn stopped at {self.uc.reg_read(X.UC_X86_REG_EIP):#x}: "
                               f"{e}") from None
        dt = time.perf_counter() - t0
        eip = self.uc.reg_read(X.UC_X86_REG_EIP)
        if eip != layout.return_address:
            if timeout_s:
                return None
            raise RuntimeError(f"Unicorn stopped at {eip:#x}, not at the return address")
        return dt

    def eax(self):
        return self.uc.reg_read(X.UC_X86_REG_EAX)

    def close(self):
        self.uc.mem_unmap(0, self.size + PAGE_SIZE)
        self.ram = None
        self._buf.close()
