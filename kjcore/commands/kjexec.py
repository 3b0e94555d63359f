"""``kjexec``: kexec-tools' ``kexec`` command line, run against a persistent kjcore machine.

::

    kjcore machine new M --ram 64M
    kjexec --machine M -l --load-preserve-context --args-none \\
           --mem-min=0x1000000 --mem-max=0x1ffffff examples/phy_mode.elf
    kjexec --machine M -e

Options are parsed like kexec-tools' ``getopt_long`` loop
(:mod:`kjcore.commands.kjexec_options`), the actions run in kexec-tools' order (unload, load,
exec, jump-back helper) and the messages and exit statuses are kexec-tools' (255 when an
action fails, 1 for usage errors and fatal checks, 130 when interrupted). The machine is
saved after any action. Differences from kexec-tools are listed in ``docs/cli.rst``; the
main one: ``-e`` tells the truth when a preserve-context image returns instead of printing
"kexec failed".
"""
import errno
import os
import sys

from ..bootparam import COMMAND_LINE_SIZE
from ..constants import (
    KEXEC_ARCH_386,
    KEXEC_ON_CRASH,
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    U32,
)
from ..cpu import CPUFault
from ..errors import KexecError
from ..gdb import GdbSession, listen
from ..linux_load import LoaderDie, finish_linux_load, plan_linux_load
from ..machine_kexec import ExecResult
from .kjexec_options import (
    ENV_MACHINE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    LINUX_ARGS,
    USAGE,
    parse,
)

#: file types: kexec-tools' i386 ELF loader name (and aliases), plus kjcore's flat loader
_TYPES = {"elf-x86": "elf", "elf32": "elf", "elf": "elf", "raw": "raw"}


class _Fatal(Exception):
    """kexec-tools' die(): print the message, exit with status 1."""


def _err(*lines):
    for line in lines:
        print(line, file=sys.stderr)


def _print_segments(entry, flags, segments):
    _err(f"entry       = {entry:#x} flags = {flags:#x}",
         f"nr_segments = {len(segments)}")
    for i, s in enumerate(segments):
        buf = "(nil)" if s.buf is None or s.bufsz == 0 else "<file>"
        _err(f"segment[{i}].buf   = {buf}", f"segment[{i}].bufsz = {s.bufsz:#x}",
             f"segment[{i}].mem   = {s.mem:#x}", f"segment[{i}].memsz = {s.memsz:#x}")


def _kexec_error(prefix, e, dump=None):
    """kexec-tools' "<call> failed: <strerror>" line (and segment dump), then the kernel
    rule that decided."""
    _err(f"{prefix}: {os.strerror(e.errno)}")
    if dump is not None:
        _print_segments(*dump)
    _err(f"kjexec: kernel rule: {e.rule}")


def _read_image(o):
    """(segments, entry) of the image file, kexec-tools' my_load() up to the backups."""
    from ..loader import load_elf32, load_flat
    if not o.files:
        _err("No kernel specified")
        print(USAGE, end="")
        return None
    name = o.files[0]
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _Fatal(f"Unable to open {name}: {e.strerror}") from None
    is_elf = data[:4] == b"\x7fELF"
    if o.type is not None:
        kind = _TYPES.get(o.type)
        if kind is None:
            _err(f"Unsupported kernel type {o.type}")
            return None
        if kind == "elf" and not is_elf:
            _err(f"Wrong file type {o.type}, file does not start with the ELF magic"
                 if data else f"Cannot determine the file type of {name}")
            return None
    elif is_elf:
        kind = "elf"
    else:
        _err(f"Cannot determine the file type of {name}",
             "kjexec: not an ELF file; use --type=raw --entry=ADDR for a flat binary")
        return None
    from ..elf32 import LoaderError
    refusal = _refusal(o, kind)
    if refusal is not None:
        _err(refusal, f"Cannot load {name}")
        return None
    try:
        if kind == "elf":
            image = load_elf32(data)
        else:
            if not o.entry:
                _err("raw: --entry=ADDR is required (the image is loaded and entered there)")
                _err(f"Cannot load {name}")
                return None
            image = load_flat(data, o.entry)
    except LoaderError as e:
        _err(f"{name}: {e}", f"Cannot load {name}")
        return None
    return list(image.segments), image.entry


def _refusal(o, kind):
    """Why the elf-x86 / raw options given cannot be honoured, or None."""
    linux_opts = [g for g in o.given if g in LINUX_ARGS]
    if kind == "raw":
        if o.arg_style == "linux" or linux_opts:
            return "raw: --args-linux and its options need an ELF kernel (elf-x86)"
        return None
    if o.purgatory_opts:
        return (f"elf-x86: {', '.join(o.purgatory_opts)} needs purgatory features kjexec does "
                "not provide (ELF boot notes, initrds, the running kernel's command line); "
                "use --args-linux or --args-none")
    if o.arg_style == "elf":
        return ("elf-x86: a load without --args-none or --args-linux needs ELF boot notes, "
                "which kjexec does not provide; use --args-none (enter the image at e_entry) "
                "or --args-linux (purgatory and Linux boot parameters)")
    if o.arg_style == "none" and linux_opts:
        return f"elf-x86: {linux_opts[0]} has no effect without --args-linux"
    return None


def _load(machine, o):
    from ..elf32 import LoaderError
    from ..loader import (
        LoadedImage,
        check_placement,
        preserve_context_backup_segments,
        sort_segments,
    )
    read = _read_image(o)
    if read is None:
        return -1
    segments, entry = read
    ram_size = machine.ram_size
    mem_max = U32 if o.mem_max is None else o.mem_max
    linux = None
    try:
        if o.arg_style == "linux":
            linux = _plan_linux(machine, o, LoadedImage(tuple(segments), entry), mem_max)
            segments = list(linux.segments) + [linux.purgatory]
        if o.kexec_flags & KEXEC_PRESERVE_CONTEXT:
            segments += preserve_context_backup_segments(segments, o.mem_min, mem_max, ram_size)
        for s in segments:
            try:
                check_placement([s], o.mem_min, mem_max, ram_size)
            except LoaderError:
                _err(f"Invalid memory segment {s.mem:#x} - {s.mem + s.memsz:#x}")
                raise
        segments = list(sort_segments(segments))
        if linux is not None:
            segments, entry = finish_linux_load(linux, segments)
    except LoaderDie as e:
        raise _Fatal(str(e).split(": ", 1)[1]) from None
    except LoaderError as e:
        _err(f"kjexec: {e}")
        if linux is None and o.arg_style == "linux":
            _err(f"Cannot load {o.files[0]}")
        return -1
    if o.entry:
        entry = o.entry
    flags = o.kexec_flags | KEXEC_ARCH_386
    if o.debug:
        _print_segments(entry, flags, segments)
    try:
        machine.kexec_load(entry, segments, flags)
    except KexecError as e:
        _kexec_error("kexec_load failed", e, (entry, flags, segments))
        return -1
    return 0


def _plan_linux(machine, o, image, mem_max):
    """kexec-tools' ``--args-linux`` segments (:mod:`kjcore.linux_load`)."""
    cmdline = b"" if o.command_line is None else os.fsencode(o.command_line)
    if len(cmdline) >= COMMAND_LINE_SIZE and not o.kexec_flags & (KEXEC_ON_CRASH
                                                                  | KEXEC_PRESERVE_CONTEXT):
        _err(f"kjexec: warning: the command line ({len(cmdline)} bytes) is cut to "
             f"{COMMAND_LINE_SIZE - 1} bytes, as kexec-tools cuts it without a word")
    return plan_linux_load(machine, image, o.kexec_flags, cmdline, mem_min=o.mem_min,
                           mem_max=mem_max, elf_class=o.elf_class)


def _unload(machine, o):
    try:
        machine.kexec_load(0, [], o.kexec_flags | KEXEC_ARCH_386)
    except KexecError as e:
        _kexec_error("kexec unload failed", e)
        return -1
    return 0


def _jump_back_helper(machine, o):
    from ..loader import jump_back_helper
    if machine.kexec_image is not None:
        _err("There is kexec kernel loaded, make sure you are in kexeced kernel.")
        return -1
    if not o.entry:
        _err("Please specify jump back entry in command line")
        return -1
    image = jump_back_helper(o.entry)
    try:
        machine.kexec_load(image.entry, list(image.segments), o.kexec_flags)
    except KexecError as e:
        _kexec_error("load jump back kernel failed", e)
        return -1
    return 0


def _word(ram, addr):
    if addr + 4 > len(ram):
        return U32
    return int.from_bytes(bytes(ram[addr:addr + 4]), "little")


class _MachineLost(Exception):
    """The exec ended in a way that leaves no first kernel to save (triple fault...)."""


def _exec(machine, limits, after_save):
    """``kexec -e``: reboot(LINUX_REBOOT_CMD_KEXEC) within ``limits`` (``max_steps``,
    ``timeout``), then say what happened; what is only true once the machine is saved goes
    to ``after_save``."""
    image = machine.kexec_image
    preserve = image.preserve_context
    start = image.start
    console_before = len(getattr(machine, "debugcon", b"") or b"")
    mode = "preserve context: the first kernel waits" if preserve else \
        "no preserve context: the first kernel is replaced"
    print(f"kjexec: executing the image at {start:#010x} ({mode})", flush=True)
    port = limits.get("gdb")
    limits = {k: v for k, v in limits.items() if k != "gdb"}

    def reboot():
        return machine.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC,
                              **limits)
    try:
        ret = reboot() if port is None else GdbSession(machine, listen(port)).run(reboot)
        if ret is None:
            raise _MachineLost("gdb killed the image before it returned")
    except KexecError as e:
        _kexec_error("kexec failed", e)
        return -1
    except CPUFault as e:           # a guest event that lost the first kernel (SPEC 7)
        _show_console(machine, None, console_before)
        raise _MachineLost(f"{type(e).__name__}: {e}") from e
    result = getattr(machine, "last_result", None) if isinstance(ret, int) else ret
    _show_console(machine, result, console_before)
    if isinstance(result, ExecResult):
        steps = getattr(result, "steps", None)
        status = getattr(result, "status", None)
        detail = ", ".join(x for x in (f"{steps} steps" if steps is not None else "",
                                       f"stopped: {getattr(status, 'name', status)}"
                                       if status is not None else "") if x)
        print("kjexec: the first kernel is gone: the new image now owns the machine"
              + (f" ({detail})" if detail else "") + ".")
        return 0
    new_start = machine.kexec_image.start if machine.kexec_image is not None else None
    parts = []
    if result is not None:
        for attr, text in (("steps", "{} steps"), ("pages_swapped", "{} pages swapped")):
            value = getattr(result, attr, None)
            if value is not None:
                parts.append(text.format(value))
        if getattr(result, "eax", None) is not None:
            parts.append(f"EAX = {result.eax:#x} at the image's return")
    print("kjexec: back in the first kernel: the image returned (kexec jump); reboot() "
          "returned 0" + (f" ({', '.join(parts)})" if parts else "") + ".")
    if new_start is not None:
        after_save.append(f"kjexec: the image stays loaded; the next 'kjexec -e' enters it at "
                          f"{new_start:#010x}, the re-entry point it left on the stack.")
        swap = machine.kexec_image.swap_page
        if swap is not None and new_start == _word(machine.ram, swap + 4096):
            after_save.append(
                f"kjexec: note: {new_start:#010x} is the word just above the swap page: the "
                "image came back with a plain 'ret', so it left no re-entry point and the "
                "next -e would jump there (2.6.27 behaviour). Reload the image to run it "
                "from its entry again.")
    return 0


def _show_console(machine, result, before):
    out = getattr(result, "debugcon", None)
    if out is None:
        out = (getattr(machine, "debugcon", b"") or b"")[before:]
    out = bytes(out)
    if not out:
        print("kjexec: the image wrote nothing to the debug console (port 0xe9).")
        return
    print(f"kjexec: debug console (port 0xe9), {len(out)} bytes:")
    text = out.decode("utf-8", errors="replace")
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def main(argv=None):
    """Entry point of the ``kjexec`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    o, status = parse(argv)
    if status is not None:
        return status
    try:
        return _run(o)
    except _Fatal as e:
        _err(str(e))
        return EXIT_USAGE
    except OSError as e:
        _err(f"kjexec: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("kjexec: interrupted")
        return EXIT_INTERRUPTED


def _run(o):
    if o.file_syscall:
        raise _Fatal("kexec_file_load (-s, -a) is not simulated: kjexec uses kexec_load")
    if not o.machine:
        raise _Fatal(f"kjexec: no machine: give --machine=PATH or set {ENV_MACHINE} "
                     "(create one with 'kjcore machine new PATH')")
    from ..store import is_machine_dir, machine_lock
    if not is_machine_dir(o.machine):
        return _run_locked(o)      # open_machine explains what is wrong (and leaves no lock)
    with machine_lock(o.machine) as free:
        if not free:
            _err(f"kjexec: {o.machine}: {os.strerror(errno.EBUSY)}: another kjexec is "
                 "using this machine (the kexec lock is held)")
            return EXIT_FAILED
        return _run_locked(o)


def _run_locked(o):
    from ..store import MachineFileError, open_machine, save_machine
    try:
        # -e runs what the RAM file holds: check it is what was saved (CRC-32) first
        machine = open_machine(o.machine, verify=o.do_exec or o.do_shutdown, locked=True)
    except (MachineFileError, OSError) as e:
        raise _Fatal(f"kjexec: cannot open machine: {e}") from None
    if o.print_ckr_size:
        print(0 if machine.crashkernel is None else machine.crashkernel[1])
        return 0
    if o.do_status:
        slot = machine.kexec_crash_image if o.kexec_flags & KEXEC_ON_CRASH \
            else machine.kexec_image
        return 0 if slot is not None else EXIT_USAGE
    if o.do_load and o.kexec_flags & KEXEC_ON_CRASH and machine.crashkernel is None:
        raise _Fatal("Memory for crashkernel is not reserved\n"
                     "Please reserve memory by passing \"crashkernel=Y@X\" parameter to kernel"
                     "\n(kjcore machine new PATH --crashkernel=Y@X)\n"
                     "Then try to loading kdump kernel")
    if o.do_load and o.kexec_flags & KEXEC_PRESERVE_CONTEXT and o.mem_max is None:
        raise _Fatal("Please specify memory range used by kexeced kernel\n"
                     "to preserve the context of original kernel with \n"
                     "\"--mem-max\" parameter")
    result = 0
    acted = False
    after_save = []
    try:
        if o.do_unload:
            acted = True
            result = _unload(machine, o)
        if o.do_load and result == 0:
            acted = True
            result = _load(machine, o)
        if result == 0 and (o.do_shutdown or o.do_exec) and machine.kexec_image is None:
            if acted:
                save_machine(machine, o.machine, locked=True)
            raise _Fatal("Nothing has been loaded!")
        if result == 0 and o.do_shutdown:
            # kexec-tools runs "shutdown -r now" and the init scripts run "kexec -e": with no
            # init system to shut down, execute now (as -f does).
            print("kjexec: no shutdown to run in a simulation: executing the image now (as -f)")
            o.do_exec = True
        if result == 0 and o.do_exec:
            acted = True
            result = _exec(machine, o.limits, after_save)
        if result == 0 and o.do_jump_back_helper:
            acted = True
            result = _jump_back_helper(machine, o)
    except _MachineLost as e:
        _err(f"kjexec: the first kernel is lost: {e}",
             f"kjexec: machine {o.machine} left as it was before -e")
        return EXIT_FAILED
    except RuntimeError as e:       # e.g. no first kernel left to load into (Machine.state)
        _err(f"kjexec: {o.machine}: {e}")
        return EXIT_FAILED
    if acted:
        try:
            save_machine(machine, o.machine, locked=True)
        except OSError as e:
            _err(f"kjexec: cannot save machine {o.machine}: {e}")
            return EXIT_FAILED
    for line in after_save:
        print(line)
    return 0 if result == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
