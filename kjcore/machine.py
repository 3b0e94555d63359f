"""``Machine``: one simulated i386 computer running a first kernel (SPEC §1.2, §3, §4).

This module is the syscall boundary: it validates Python arguments (``TypeError`` /
``ValueError`` for values the i386 ABI cannot carry), applies the kernel's checks in order
(``KexecError`` with the kernel's errno), and orchestrates the compiled pieces: the checks in
:mod:`kjcore.load_checks`, loading the image in :mod:`kjcore.kimage_alloc`.
"""
import contextlib
import errno
import threading
import weakref

import numpy as np

from . import machine_state
from .bios import Bios, Keyboard
from .bios.layout import HIGH_MEMORY, ROM_BASE, ROM_SIZE, bios_frames
from .constants import (
    KEXEC_ON_CRASH,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2_ALL,
    MAX_RAM_SIZE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROFILES,
)
from .cpu import CPU
from .cpu.trace import check_limit
from .devices import AtaController, vga_text
from .devices.disk import as_disk
from .errors import KexecError
from .first_kernel import (
    FirstKernelLayout,
    build_first_kernel,
    initial_cpu_state,
    set_page_executable,
)
from .gdb import gdbserver
from .kdump import crash
from .kdump.notes import CRASH_NOTES
from .kimage_alloc import load_image
from .load_checks import PROFILE_2627, PROFILE_MAINLINE, check_header, describe
from .machine_kexec import (
    check_budget,
    machine_kexec,
    restore_processor_state,
    save_processor_state,
)
from .memory import FrameAllocator
from .pm import bound_log, preserve_context_transition, shutdown_transition
from .segment import Segment, check_u32

#: disks a machine can have (the primary ATA channel's two devices)
MAX_DISKS = 2


def _is_int(value):
    """Whether ``value`` is an integer the syscall ABI can carry (``bool`` is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_segment(s, i):
    if isinstance(s, Segment):
        return s
    if isinstance(s, tuple) and len(s) == 3:
        return Segment(*s)
    raise TypeError(f"segments[{i}] must be a kjcore.Segment or a (buf, mem, memsz) tuple, "
                    f"not {type(s).__name__}")


class Machine:
    """A simulated i386 machine whose first kernel supports kexec (and kexec jump).

    Parameters follow SPEC §1.2.  ``alloc_seed`` seeds the order in which the page-frame
    allocator hands out free frames (reproducible, not simply ascending).  ``ram`` is an
    existing writable uint8 array (or memmap) of ``ram_size`` bytes used as RAM as it is: it
    already holds the first kernel (a saved machine's RAM, see :mod:`kjcore.store`), which is
    not written again.  ``bios=True`` (the default, SPEC §14.2) installs kjcore's resident BIOS
    (:mod:`kjcore.bios`): :attr:`bios`, :attr:`e820`, INT services for guest real-mode code, and
    the BIOS's frames below 1 MiB are never handed out; it needs at least 1 MiB of RAM (the ROM
    ends there), so a smaller machine says ``bios=False`` (``ValueError`` otherwise).

    >>> import kjcore
    >>> m = kjcore.Machine(ram_size=16 << 20)
    >>> m.ram.nbytes, m.free_frames
    (16777216, 3072)
    >>> m.kexec_load(0x200000, [kjcore.Segment(b"\\xf4", 0x200000, 0x1000)])
    >>> m.kexec_image.type, hex(m.kexec_image.start)
    ('default', '0x200000')
    >>> m.kexec_load(0x200000, [kjcore.Segment(b"", 0x200800, 0x1000)])
    Traceback (most recent call last):
      ...
    kjcore.errors.KexecError: [Errno 99] Cannot assign requested address (EADDRNOTAVAIL: \
mem or mem + memsz not page-aligned (rule 8): segment 0)
    """

    def __init__(self, ram_size=64 << 20, *, pae=False, nx=False, profile="2.6.27",
                 crashkernel=None, kexec_jump=True, cap_sys_boot=True, kernel_reserved=4 << 20,
                 engine="emulated", strict_bus=False, fix_pae_return=False, fix_peer_df=False,
                 bios=True, ram=None, alloc_seed=0, disks=()):
        ram_size = int(ram_size)
        if ram_size <= 0 or ram_size % PAGE_SIZE:
            raise ValueError(f"ram_size={ram_size:#x} must be a positive multiple of PAGE_SIZE")
        if ram_size > MAX_RAM_SIZE:
            raise ValueError(f"ram_size={ram_size:#x} exceeds {MAX_RAM_SIZE:#x}: the simulated "
                             "first kernel direct-maps all RAM at PAGE_OFFSET")
        kernel_reserved = int(kernel_reserved)
        if kernel_reserved % PAGE_SIZE or not 64 << 10 <= kernel_reserved < ram_size:
            raise ValueError(f"kernel_reserved={kernel_reserved:#x} must be page-aligned, at "
                             "least 64 KiB and below ram_size")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        if nx and not pae:
            raise ValueError("nx=True needs pae=True (NX lives in PAE page-table entries)")
        if bios and ram_size < HIGH_MEMORY:
            raise ValueError(f"bios=True needs ram_size={ram_size:#x} of at least 1 MiB (the "
                             "ROM ends there): pass bios=False for a smaller machine")
        if engine not in ("emulated", "native"):
            raise ValueError(f"engine must be 'emulated' or 'native', not {engine!r}")
        if crashkernel is None:
            crash_start, crash_end = 0, 0
            crash_frames = (0, 0)
        else:
            start, size = (int(v) for v in crashkernel)
            if start % PAGE_SIZE or size % PAGE_SIZE or size <= 0 or start < kernel_reserved \
                    or start + size > ram_size:
                raise ValueError(f"crashkernel=({start:#x}, {size:#x}) must be page-aligned, "
                                 "non-empty and inside RAM above kernel_reserved")
            crash_start, crash_end = start, start + size - 1
            crash_frames = (start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT)
        self.ram_size = ram_size
        self.pae, self.nx = bool(pae), bool(nx)
        self.profile = profile
        self.crashkernel = (None if crashkernel is None
                            else (crash_start, crash_end + 1 - crash_start))
        self.kexec_jump = bool(kexec_jump)
        self.cap_sys_boot = bool(cap_sys_boot)
        self.kernel_reserved = kernel_reserved
        self.engine = engine
        self.strict_bus = bool(strict_bus)
        self.fix_pae_return = bool(fix_pae_return)
        self.fix_peer_df = bool(fix_peer_df)
        self._crash_region = (crash_start, crash_end)
        self._profile_id = PROFILE_MAINLINE if profile == "mainline" else PROFILE_2627
        self.allocator = FrameAllocator(ram_size >> PAGE_SHIFT, kernel_reserved >> PAGE_SHIFT,
                                        crash_frames, seed=alloc_seed,
                                        excluded=bios_frames() if bios else ())
        if ram is None:
            self.ram = np.zeros(ram_size, dtype=np.uint8)
            # The first kernel's page tables, GDT and stack live in the reserved region (SPEC §3).
            self.first_kernel = build_first_kernel(self.ram, ram_size=ram_size,
                                                   kernel_reserved=kernel_reserved, pae=self.pae,
                                                   nx=self.nx)
        else:
            # Given RAM (a saved machine's) already holds the first kernel: it is used as is.
            if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.shape != (
                    ram_size,) or not ram.flags.c_contiguous or not ram.flags.writeable:
                raise ValueError(f"ram must be a writable contiguous 1-D uint8 array of "
                                 f"ram_size={ram_size:#x} bytes")
            self.ram = ram
            self.first_kernel = FirstKernelLayout(ram_size=ram_size,
                                                  kernel_reserved=kernel_reserved,
                                                  pae=self.pae, nx=self.nx)
        self.cpu = CPU(self.ram, strict_bus=self.strict_bus)
        self.cpu.load(initial_cpu_state(self.first_kernel))
        #: the disks (kjcore.devices.Disk), disk 0 the ATA master, disk 1 the slave; INT 13h
        #: drive 0x80 + i is disks[i] (the BIOS holds this very list)
        self.disks = []
        #: the ATA controller on the CPU's ports while the machine has disks
        self.ata = None
        #: the keys INT 16h reads (a script queues them: ``m.keyboard.feed(b"y")``)
        self.keyboard = Keyboard()
        #: the resident BIOS (kjcore.bios.Bios), None with bios=False
        self.bios = None
        if bios:
            self.bios = Bios(self.ram, disks=self.disks, keyboard=self.keyboard)
            self.cpu.rom = (ROM_BASE, ROM_BASE + ROM_SIZE)     # guest writes there are dropped
            if ram is None:
                self.bios.install()     # given RAM holds the BIOS the machine was saved with
            # No reference cycle (the CPU keeps its port handlers): machines die by refcount.
            cpu_ref, service = weakref.ref(self.cpu), self.bios.trap
            self.cpu.on_port(self.bios.port, lambda port, size, value: service(cpu_ref()))
        for spec in disks:
            self.attach_disk(spec)
        #: "kernel" (the first kernel runs), "image" (a plain kexec replaced it, or a
        #: preserve-context image never came back), "lost" (triple fault), and after
        #: panic(): "crash-kernel" (the crash image runs) or "panicked" (kjcore.kdump.crash)
        self.state = "kernel"
        #: the JumpResult / ExecResult of the last kernel_kexec
        self.last_result = None
        #: what guest code wrote to the debug console (port 0xE9), all jumps together: the last
        #: CPU.DEBUGCON_LIMIT bytes; debugcon_dropped counts the older bytes discarded
        self.debugcon = b""
        self.debugcon_dropped = 0
        self.kexec_lock = threading.Lock()
        self.kexec_image = None
        self.kexec_crash_image = None
        self.devices = []               # see kjcore.pm: suspend/resume callbacks, in order
        self.pm_log = []                # the power-management steps of kernel_kexec, in order
        self.pm_log_dropped = 0         # older steps discarded (kjcore.pm.PM_LOG_LIMIT)
        self.freeze_processes = lambda: 0   # research knob: return an error to fail the freeze
        #: the machine directory this machine was opened from or last saved to (set by
        #: kjcore.store, which refuses to save over a newer save made by someone else)
        self.store_origin = None

    # ------------------------------------------------------------------ inspection
    @property
    def e820(self):
        """The BIOS memory map, ``(base, length, type)`` entries (INT 15h E820); None without a
        BIOS."""
        return None if self.bios is None else self.bios.e820

    @property
    def free_frames(self):
        """Number of page frames the first kernel could still allocate."""
        return self.allocator.nr_free

    def __repr__(self):
        return (f"Machine(ram_size={self.ram_size:#x}, profile={self.profile!r}, pae={self.pae}, "
                f"nx={self.nx}, kexec_image={self.kexec_image!r}, "
                f"kexec_crash_image={self.kexec_crash_image!r})")

    # ------------------------------------------------------------------ devices
    def attach_disk(self, path_or_size, readonly=False):
        """Add a disk (a file path, a size in bytes for an in-memory disk, or a
        :class:`~kjcore.devices.Disk`) and return it; the first two are the ATA master
        and slave.  ``ValueError`` for a bad file or size or a third disk."""
        if len(self.disks) >= MAX_DISKS:
            raise ValueError(f"a machine has at most {MAX_DISKS} disks (the primary ATA "
                             "channel's master and slave)")
        disk = as_disk(path_or_size, readonly)
        self.disks.append(disk)
        self.ata = AtaController(self.disks)
        self.ata.attach(self.cpu)
        return disk

    def vga_text(self):
        """The VGA text screen at 0xB8000 as 25 lines (see :mod:`kjcore.devices.vga`)."""
        return vga_text(self.ram)

    # ------------------------------------------------------------------ kexec_load(2)
    def kexec_load(self, entry, segments, flags=0):
        """kexec_load(2): load (or with no segments unload) the normal or the crash image.

        Raises :class:`KexecError` with the kernel's errno; the first failing rule of SPEC §4.1
        decides.  A rejected load changes no RAM byte and leaves the slots as they were, except
        that a crash load has already unloaded the old crash image.  The work is
        :func:`kjcore.kimage_alloc.load_image`.  ``RuntimeError`` when the first kernel is not
        running (:attr:`state` is not ``"kernel"``): after a plain exec the image owns the
        machine, so there is nothing to load into.
        """
        self._check_running("kexec_load")
        entry = check_u32("entry", entry)
        flags = check_u32("flags", flags)
        if isinstance(segments, (Segment, bytes, str)):
            raise TypeError("segments must be a sequence of Segment")
        segs = [_as_segment(s, i) for i, s in enumerate(segments)]
        if not self.cap_sys_boot:
            raise KexecError(errno.EPERM, "caller lacks CAP_SYS_BOOT (rule 1)")
        code = check_header(flags, len(segs), self._profile_id, self.kexec_jump)
        if code:
            raise KexecError(code & 0xFF, describe(code))
        if not self.kexec_lock.acquire(blocking=False):
            raise KexecError(errno.EBUSY, "the kexec lock is held (rule 5)")
        try:
            self._kexec_load_locked(entry, segs, flags)
        finally:
            self.kexec_lock.release()

    def _kexec_load_locked(self, entry, segs, flags):
        slot = "kexec_crash_image" if flags & KEXEC_ON_CRASH else "kexec_image"
        if not segs or flags & KEXEC_ON_CRASH:
            # Rule 6 (unload) and rule 7 (a crash load first unloads the crash image).
            self._free_image(getattr(self, slot))
            setattr(self, slot, None)
            if not segs:
                return
        image = load_image(self.ram, self.allocator, entry, segs, flags,
                           profile=self._profile_id, crash_region=self._crash_region)
        self._set_control_page_executable(image, True)      # machine_kexec_prepare
        old = getattr(self, slot)
        setattr(self, slot, image)
        self._free_image(old)

    def _check_running(self, call):
        """``RuntimeError`` naming :attr:`state` unless the first kernel runs (SPEC §8: after a
        plain exec, or a jump that lost it, there is no kernel left to make ``call``)."""
        if self.state != "kernel":
            raise RuntimeError(f"{call}: the first kernel is not running (state={self.state!r}); "
                               "restore() a snapshot first")

    @contextlib.contextmanager
    def idle(self, what):
        """Hold the kexec lock for ``what`` (a snapshot, a save); ``RuntimeError`` while a load
        or exec holds it: the machine has no consistent state then."""
        if not self.kexec_lock.acquire(blocking=False):
            raise RuntimeError(f"the kexec lock is held (a load or exec is in progress): no "
                               f"{what} of a machine in the middle of one")
        try:
            yield
        finally:
            self.kexec_lock.release()

    def _free_image(self, image):
        """kimage_free: give the image's frames back to the allocator."""
        if image is not None:
            self._set_control_page_executable(image, False)     # machine_kexec_cleanup
            self.allocator.free_many(image.frames_to_free())

    def _set_control_page_executable(self, image, executable):
        if self.nx:
            set_page_executable(self.ram, self.first_kernel, image.control_page, executable)
            self.cpu.flush_tlb()

    # ------------------------------------------------------------------ reboot(2), the jump
    def reboot(self, magic1, magic2, cmd, *, max_steps=None, timeout=None):
        """reboot(2) with ``LINUX_REBOOT_CMD_KEXEC``: run :meth:`kernel_kexec`; returns 0.

        EPERM without CAP_SYS_BOOT; EINVAL for wrong magic numbers or another command (kjcore
        models only the kexec command), and for any of the three that is not an integer (a
        ``bool``, ``float`` or ``str`` never reaches the kernel as its ``int``).  ``RuntimeError``
        when the first kernel is not running, as in :meth:`kexec_load`.  The JumpResult or
        ExecResult is kept in :attr:`last_result`.  ``max_steps`` and ``timeout`` (keyword-only:
        the system call has no such arguments) are passed on to :meth:`kernel_kexec`.
        """
        max_steps, timeout = check_budget(max_steps, timeout)
        self._check_running("reboot")
        if not self.cap_sys_boot:
            raise KexecError(errno.EPERM, "caller lacks CAP_SYS_BOOT")
        if not (_is_int(magic1) and magic1 == LINUX_REBOOT_MAGIC1
                and _is_int(magic2) and magic2 in LINUX_REBOOT_MAGIC2_ALL):
            raise KexecError(errno.EINVAL, "wrong reboot magic")
        if not (_is_int(cmd) and cmd == LINUX_REBOOT_CMD_KEXEC):
            shown = f"{cmd:#x}" if _is_int(cmd) else repr(cmd)
            raise KexecError(errno.EINVAL, f"reboot command {shown} is not modelled "
                             "(only LINUX_REBOOT_CMD_KEXEC)")
        self.kernel_kexec(max_steps=max_steps, timeout=timeout)
        return 0

    def kernel_kexec(self, max_steps=None, timeout=None, *, trace=None):
        """Execute the loaded normal image (the crash image is never run here).

        With ``preserve_context`` the 2.6.27 power-management sequence (:mod:`kjcore.pm`) runs
        around the jump and a :class:`~kjcore.machine_kexec.JumpResult` comes back; the image
        stays loaded with ``start`` set to its re-entry point.  Without it the devices are shut
        down and the image runs until it halts or its budget ends
        (:class:`~kjcore.machine_kexec.ExecResult`; ``state`` becomes ``"image"``).
        EBUSY when the kexec lock is held, EINVAL when no image is loaded.

        The guest's budget: ``max_steps`` steps (default
        :data:`~kjcore.machine_kexec.DEFAULT_MAX_STEPS`; every element of a REP string
        instruction is a step) and ``timeout`` seconds of wall-clock time (default: none).  A
        preserve-context image that does not return within it raises
        :class:`~kjcore.cpu.StepLimit` / :class:`~kjcore.cpu.GuestTimeout`, and Ctrl-C
        (``KeyboardInterrupt``) stops the guest within a fraction of a second; either way
        ``state`` is then ``"image"`` (the first kernel is not running: :meth:`restore` a
        snapshot to get it back) and the CPU is stopped between two steps.
        ``trace=N`` puts the jump's last N instructions in the result's ``trace`` (the jump runs
        slower: :meth:`kjcore.cpu.CPU.start_trace`).
        """
        max_steps, timeout = check_budget(max_steps, timeout)
        trace = None if trace is None else check_limit(trace)
        self._check_running("kernel_kexec")
        if not self.kexec_lock.acquire(blocking=False):
            raise KexecError(errno.EBUSY, "the kexec lock is held")
        try:
            image = self.kexec_image
            if image is None:
                raise KexecError(errno.EINVAL, "no kexec image loaded")
            if image.preserve_context:
                saved = {}
                result = preserve_context_transition(
                    self, jump=lambda: machine_kexec(self, image, max_steps, timeout, trace),
                    save_state=lambda: saved.update(state=save_processor_state(self.cpu)),
                    restore_state=lambda: restore_processor_state(self.cpu, saved["state"]))
            else:
                shutdown_transition(self)
                result = machine_kexec(self, image, max_steps, timeout, trace)
        finally:
            bound_log(self)
            self.kexec_lock.release()
        self.last_result = result
        return result

    # ------------------------------------------------------------------ panic (SPEC §17)
    @property
    def crash_notes(self):
        """Physical address of CPU 0's crash-notes buffer, as
        ``/sys/devices/system/cpu/cpu0/crash_notes`` reports it (:mod:`kjcore.kdump.notes`)."""
        return CRASH_NOTES

    def panic(self, message="", *, max_steps=None, timeout=None):
        """The first kernel panics: ``crash_kexec`` runs the crash image if one is loaded.

        Returns a :class:`~kjcore.kdump.crash.PanicResult`; :attr:`state` becomes
        ``"crash-kernel"`` or ``"panicked"``.  With the kexec lock held it raises
        :class:`~kjcore.kdump.crash.KernelPanic` (2.6.27's ``crash_kexec`` gives up).  The whole
        behaviour, including a crash image loaded with the preserve flag, is documented in
        :mod:`kjcore.kdump.crash`; ``max_steps`` / ``timeout`` as in :meth:`kernel_kexec`.
        """
        return crash.panic(self, message, max_steps=max_steps, timeout=timeout)

    def gdbserver(self, port, *, max_steps=None, timeout=None, ready=None):
        """:meth:`kernel_kexec` under a gdb attached on 127.0.0.1:``port``
        (:func:`kjcore.gdb.gdbserver`; docs/debugging.rst)."""
        return gdbserver(self, port, max_steps=max_steps, timeout=timeout, ready=ready)

    # ------------------------------------------------------------------ state
    def snapshot(self):
        """The whole machine state (RAM, CPU, allocator, kexec slots) as a restorable value.

        ``RuntimeError`` while the kexec lock is held (from a hook or device callback during a
        jump), like :meth:`save`."""
        with self.idle("snapshot"):
            return machine_state.snapshot(self)

    def restore(self, snap):
        """Go back to a :meth:`snapshot` (RAM is written in place)."""
        machine_state.restore(self, snap)

    def save(self, path):
        """Save to a machine directory (atomic and locked; see :mod:`kjcore.store`)."""
        from .store import save_machine  # not at the top: store imports this module
        save_machine(self, path)

    @classmethod
    def open(cls, path, *, verify=False):
        """Open a machine saved with :meth:`save` (see :mod:`kjcore.store`)."""
        from .store import open_machine
        return open_machine(path, verify=verify)
