"""``kjexec``: kexec-tools' ``kexec`` command line, run against a persistent kjcore machine.

::

    kjcore machine new M --ram 64M
    kjexec --machine M -l --load-preserve-context --args-none \\
           --mem-min=0x1000000 --mem-max=0x1ffffff examples/phy_mode.elf
    kjexec --machine M -e

Options are parsed in order like kexec-tools' ``getopt_long`` loop (later options override
earlier ones the same way: ``-p`` and ``--load-preserve-context`` each *set* the flags), the
actions run in kexec-tools' order (unload, load, exec, jump-back helper) and the messages and
exit statuses are kexec-tools' (255 when an action fails, 1 for usage errors and fatal
checks). The machine is saved after any action. Differences from kexec-tools are listed in
``docs/cli.rst``; the main one: ``-e`` tells the truth when a preserve-context image returns
instead of printing "kexec failed".
"""
import contextlib
import errno
import getopt
import os
import sys

from .constants import (KEXEC_ARCH_386, KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT,
                        LINUX_REBOOT_CMD_KEXEC, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, U32)
from .cpu import CPUFault
from .errors import KexecError
from .machine_kexec import ExecResult

#: exit status of a failed action (kexec-tools returns -1 from main)
EXIT_FAILED = 255
#: exit status of usage errors and of kexec-tools' die()
EXIT_USAGE = 1

ENV_MACHINE = "KJEXEC_MACHINE"

_SHORT = "hvflpuet:dxyicsaS"
_LONG = ["help", "version", "force", "load", "load-panic", "unload", "exec", "type=",
         "debug", "no-ifdown", "no-sync", "no-checks", "kexec-syscall", "kexec-file-syscall",
         "kexec-syscall-auto", "status", "mem-min=", "mem-max=", "load-preserve-context",
         "load-jump-back-helper", "entry=", "reuseinitrd", "print-ckr-size",
         # elf-x86 file type options
         "args-none", "args-elf", "args-linux", "command-line=", "append=", "reuse-cmdline",
         "initrd=", "ramdisk=",
         # kjexec's own
         "machine="]

#: file types: kexec-tools' i386 ELF loader name (and aliases), plus kjcore's flat loader
_TYPES = {"elf-x86": "elf", "elf32": "elf", "elf": "elf", "raw": "raw"}

_NEEDS_PURGATORY = ("--args-elf", "--args-linux", "--command-line", "--append",
                    "--reuse-cmdline", "--initrd", "--ramdisk", "--reuseinitrd")

USAGE = """\
Usage: kjexec --machine PATH [OPTION]... [image]
Run kexec-tools' kexec against a kjcore persistent machine (see 'kjcore machine new').

     --machine=PATH   The machine to act on (default: ${KJEXEC_MACHINE}).
 -h, --help           Print this help.
 -v, --version        Print the version of kjexec.
 -f, --force          Load the image and execute it at once.
 -l, --load           Load the new image into the current kernel.
 -p, --load-panic     Load the new image for use on panic.
 -u, --unload         Unload the current kexec target image.
                      If the crash image is being unloaded specify -p with -u.
 -e, --exec           Execute the currently loaded image.
 -t, --type=TYPE      Specify the image is of this type (elf-x86, raw).
     --mem-min=<addr> Specify the lowest memory address to load code into.
     --mem-max=<addr> Specify the highest memory address to load code into.
     --print-ckr-size Print crash kernel region size.
     --load-preserve-context Load the new image and preserve the
                      context of the current kernel during kexec.
     --load-jump-back-helper Load a helper image to jump back
                      to the original kernel.
     --entry=<addr>   Specify the entry (with --load-jump-back-helper: the
                      jump back address; 0 means not given).
 -d, --debug          Print the segments passed to kexec_load.
 -S, --status         Return 0 if the image (by default the crash image) is loaded.
 -c, -x, -y, -i       Accepted and ignored (nothing to sync or bring down).

Supported image types and options:
elf-x86 (aliases elf32, elf): an i386 ELF32 file, each PT_LOAD at its p_paddr
     --args-none      Jump directly to e_entry (required: kjexec has no purgatory).
raw: a flat binary loaded at --entry=ADDR (page aligned) and entered there
"""


class _Fatal(Exception):
    """kexec-tools' die(): print the message, exit with status 1."""


def _err(*lines):
    for line in lines:
        print(line, file=sys.stderr)


def _strtoul(text):
    """``strtoul(text, &end, 0)`` with ``*end`` required to be the end; None if not."""
    s = text.strip()
    try:
        if s.lower().startswith("0x"):
            value = int(s[2:], 16)
        elif len(s) > 1 and s.startswith("0"):
            value = int(s[1:], 8)
        else:
            value = int(s, 10)
    except ValueError:
        return None
    return value if 0 <= value <= U32 and not s.startswith(("+", "-")) else None


class _Options:
    def __init__(self):
        self.do_load, self.do_exec, self.do_shutdown = True, False, True
        self.do_unload = self.do_jump_back_helper = self.do_status = False
        self.print_ckr_size = False
        self.kexec_flags = 0
        self.entry = 0
        self.type = None
        self.mem_min, self.mem_max = 0, None
        self.debug = False
        self.args_none = False
        self.machine = os.environ.get(ENV_MACHINE)
        self.purgatory_opts = []
        self.file_syscall = False
        self.files = []


def _parse(argv):
    """Options in kexec-tools' order and semantics; returns (_Options, exit status or None)."""
    o = _Options()
    try:
        opts, o.files = getopt.gnu_getopt(argv, _SHORT, _LONG)
    except getopt.GetoptError as e:
        _err(f"kjexec: {e}")
        print(USAGE, end="")
        return o, EXIT_USAGE
    for opt, val in opts:
        if opt in ("-h", "--help"):
            print(USAGE, end="")
            return o, 0
        if opt in ("-v", "--version"):
            _version()
            return o, 0
        if opt in ("-f", "--force"):
            o.do_load, o.do_shutdown, o.do_exec = True, False, True
        elif opt in ("-l", "--load"):
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
        elif opt in ("-u", "--unload"):
            o.do_load, o.do_shutdown, o.do_unload = False, False, True
        elif opt in ("-e", "--exec"):
            o.do_load, o.do_shutdown, o.do_exec = False, False, True
        elif opt == "--load-jump-back-helper":
            o.do_load, o.do_shutdown, o.do_exec = False, False, False
            o.do_jump_back_helper = True
            o.kexec_flags = KEXEC_PRESERVE_CONTEXT
        elif opt == "--load-preserve-context":
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
            o.kexec_flags = KEXEC_PRESERVE_CONTEXT
        elif opt in ("-p", "--load-panic"):
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
            o.kexec_flags = KEXEC_ON_CRASH
        elif opt in ("--entry", "--mem-min", "--mem-max"):
            value = _strtoul(val)
            if value is None:
                _err(f"Bad option value in {opt}={val}")
                print(USAGE, end="")
                return o, EXIT_USAGE
            setattr(o, opt[2:].replace("-", "_"), value)
        elif opt in ("-t", "--type"):
            o.type = val
        elif opt in ("-d", "--debug"):
            o.debug = True
        elif opt in ("-S", "--status"):
            o.do_status = True
        elif opt == "--print-ckr-size":
            o.print_ckr_size = True
        elif opt == "--args-none":
            o.args_none = True
        elif opt in _NEEDS_PURGATORY:
            o.purgatory_opts.append(opt)
        elif opt in ("-s", "-a", "--kexec-file-syscall", "--kexec-syscall-auto"):
            o.file_syscall = True
        elif opt == "--machine":
            o.machine = val
        # -c, -x, -y, -i and their long forms: nothing to do in a simulation
    if o.do_status:
        if o.kexec_flags == 0:
            o.kexec_flags = KEXEC_ON_CRASH
        o.do_load = o.do_unload = o.do_shutdown = o.do_exec = False
        o.do_jump_back_helper = False
    return o, None


def _version():
    from . import __version__
    print(f"kjexec (kjcore {__version__}): kexec-tools' kexec for simulated i386 machines")


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
    from .loader import load_elf32, load_flat
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
    from .elf32 import LoaderError
    try:
        if kind == "elf":
            if o.purgatory_opts or not o.args_none:
                what = ", ".join(o.purgatory_opts) or "a load without --args-none"
                _err(f"elf-x86: {what} needs purgatory and Linux boot parameters, which kjexec "
                     "does not provide; use --args-none (enter the image at e_entry)")
                _err(f"Cannot load {name}")
                return None
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


def _load(machine, o):
    from .elf32 import LoaderError
    from .loader import check_placement, preserve_context_backup_segments, sort_segments
    read = _read_image(o)
    if read is None:
        return -1
    segments, entry = read
    ram_size = machine.ram_size
    mem_max = U32 if o.mem_max is None else o.mem_max
    try:
        if o.kexec_flags & KEXEC_PRESERVE_CONTEXT:
            segments += preserve_context_backup_segments(segments, o.mem_min, mem_max, ram_size)
        for s in segments:
            try:
                check_placement([s], o.mem_min, mem_max, ram_size)
            except LoaderError:
                _err(f"Invalid memory segment {s.mem:#x} - {s.mem + s.memsz:#x}")
                raise
        segments = list(sort_segments(segments))
    except LoaderError as e:
        _err(f"kjexec: {e}")
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


def _unload(machine, o):
    try:
        machine.kexec_load(0, [], o.kexec_flags | KEXEC_ARCH_386)
    except KexecError as e:
        _kexec_error("kexec unload failed", e)
        return -1
    return 0


def _jump_back_helper(machine, o):
    from .loader import jump_back_helper
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


def _exec(machine):
    """``kexec -e``: reboot(LINUX_REBOOT_CMD_KEXEC), then say what happened."""
    image = machine.kexec_image
    preserve = image.preserve_context
    start = image.start
    console_before = len(getattr(machine, "debugcon", b"") or b"")
    mode = "preserve context: the first kernel waits" if preserve else \
        "no preserve context: the first kernel is replaced"
    print(f"kjexec: executing the image at {start:#010x} ({mode})", flush=True)
    try:
        ret = machine.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)
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
        detail = ", ".join(x for x in (f"{steps} instructions" if steps is not None else "",
                                       f"stopped: {getattr(status, 'name', status)}"
                                       if status is not None else "") if x)
        print("kjexec: the first kernel is gone: the new image now owns the machine"
              + (f" ({detail})" if detail else "") + ".")
        return 0
    new_start = machine.kexec_image.start if machine.kexec_image is not None else None
    parts = []
    if result is not None:
        for attr, text in (("steps", "{} instructions"), ("pages_swapped", "{} pages swapped")):
            value = getattr(result, attr, None)
            if value is not None:
                parts.append(text.format(value))
        if getattr(result, "eax", None) is not None:
            parts.append(f"EAX = {result.eax:#x} at the image's return")
    print("kjexec: back in the first kernel: the image returned (kexec jump); reboot() "
          "returned 0" + (f" ({', '.join(parts)})" if parts else "") + ".")
    if new_start is not None:
        print(f"kjexec: the image stays loaded; the next 'kjexec -e' enters it at "
              f"{new_start:#010x}, the re-entry point it left on the stack.")
        swap = machine.kexec_image.swap_page
        if swap is not None and new_start == _word(machine.ram, swap + 4096):
            print(f"kjexec: note: {new_start:#010x} is the word just above the swap page: the "
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
    o, status = _parse(argv)
    if status is not None:
        return status
    try:
        return _run(o)
    except _Fatal as e:
        _err(str(e))
        return EXIT_USAGE


#: lock file held for a whole kjexec run, so two runs cannot interleave open and save
SESSION_LOCK = ".kjexec.lock"


@contextlib.contextmanager
def _session(path):
    """Hold PATH/.kjexec.lock for the run: another kjexec on the same machine gets EBUSY,
    like a second kexec_load while the kernel's kexec lock is held."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    try:
        fd = os.open(os.path.join(path, SESSION_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield True                 # unwritable machine: opening will say what is wrong
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _run(o):
    if o.file_syscall:
        raise _Fatal("kexec_file_load (-s, -a) is not simulated: kjexec uses kexec_load")
    if not o.machine:
        raise _Fatal(f"kjexec: no machine: give --machine=PATH or set {ENV_MACHINE} "
                     "(create one with 'kjcore machine new PATH')")
    if not os.path.isdir(o.machine):
        return _run_locked(o)      # open_machine explains what is wrong with the path
    with _session(o.machine) as free:
        if not free:
            _err(f"kjexec: {o.machine}: {os.strerror(errno.EBUSY)}: another kjexec is "
                 "using this machine (the kexec lock is held)")
            return EXIT_FAILED
        return _run_locked(o)


def _run_locked(o):
    from .persist import MachineFileError, open_machine, save_machine
    try:
        machine = open_machine(o.machine)
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
    try:
        if o.do_unload:
            acted = True
            result = _unload(machine, o)
        if o.do_load and result == 0:
            acted = True
            result = _load(machine, o)
        if result == 0 and (o.do_shutdown or o.do_exec) and machine.kexec_image is None:
            if acted:
                save_machine(machine, o.machine)
            raise _Fatal("Nothing has been loaded!")
        if result == 0 and o.do_shutdown:
            # kexec-tools runs "shutdown -r now" and the init scripts run "kexec -e": with no
            # init system to shut down, execute now (as -f does).
            print("kjexec: no shutdown to run in a simulation: executing the image now (as -f)")
            o.do_exec = True
        if result == 0 and o.do_exec:
            acted = True
            result = _exec(machine)
        if result == 0 and o.do_jump_back_helper:
            acted = True
            result = _jump_back_helper(machine, o)
    except _MachineLost as e:
        _err(f"kjexec: the first kernel is lost: {e}",
             f"kjexec: machine {o.machine} left as it was before -e")
        return EXIT_FAILED
    if acted:
        save_machine(machine, o.machine)
    return 0 if result == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
