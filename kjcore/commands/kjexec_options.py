"""``kjexec``'s command line: kexec-tools' options, read in ``getopt_long``'s order.

Later options override earlier ones the way kexec-tools' loop does (``-p`` and
``--load-preserve-context`` each *set* the flags). Then, unlike kexec-tools, an option that
the chosen action ignores is refused (``kjexec -e --mem-max=...``, ``-u IMAGE``): one line,
exit status 1.
"""
import argparse
import getopt
import os
import sys

from ..constants import KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT
from .grammar import MAX_STEPS, TIMEOUT, number, strtoul

#: exit status of a failed action (kexec-tools returns -1 from main)
EXIT_FAILED = 255
#: exit status of usage errors and of kexec-tools' die()
EXIT_USAGE = 1
#: exit status after SIGINT (Ctrl-C), as a shell reports a process that SIGINT ended
EXIT_INTERRUPTED = 130

ENV_MACHINE = "KJEXEC_MACHINE"

#: the options getopt accepts (kexec-tools' list, plus kjexec's own at the end)
SHORT_OPTIONS = "hvflpuet:dxyicsaS"
LONG_OPTIONS = [
    "help", "version", "force", "load", "load-panic", "unload", "exec", "type=", "debug",
    "no-ifdown", "no-sync", "no-checks", "kexec-syscall", "kexec-file-syscall",
    "kexec-syscall-auto", "status", "mem-min=", "mem-max=", "load-preserve-context",
    "load-jump-back-helper", "entry=", "reuseinitrd", "print-ckr-size",
    # elf-x86 file type options
    "args-none", "args-elf", "args-linux", "command-line=", "append=", "reuse-cmdline", "initrd=",
    "ramdisk=", "elf32-core-headers", "elf64-core-headers",
    # kjexec's own
    "machine=", "max-steps=", "timeout=", "gdb="]

#: short options by their long name (messages use the long one)
_LONG_NAME = {"-f": "--force", "-l": "--load", "-p": "--load-panic", "-u": "--unload",
              "-e": "--exec", "-t": "--type", "-S": "--status", "-d": "--debug"}

#: elf-x86 options kjexec refuses: ELF boot notes, initrds and the running kernel's command line
NEEDS_PURGATORY = ("--args-elf", "--reuse-cmdline", "--initrd", "--ramdisk", "--reuseinitrd")
#: the Linux argument style's options (kjcore.linux_load); the core-header class is i386's
LINUX_ARGS = ("--command-line", "--append", "--elf32-core-headers", "--elf64-core-headers")
#: options only a load reads
_LOAD_OPTIONS = ("--type", "--mem-min", "--mem-max", "--args-none", "--args-linux") \
    + NEEDS_PURGATORY + LINUX_ARGS
#: the limits of ``-e``: keyword arguments of ``Machine.reboot`` / ``kernel_kexec``
#: and the port of ``--gdb`` (the exec waits for gdb there: kjcore.gdb)
_LIMITS = {"--max-steps": MAX_STEPS, "--timeout": TIMEOUT,
           "--gdb": number(0, 65535)}

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
     --gdb=PORT       With -e: wait for gdb on 127.0.0.1:PORT, stopped before the first
                      instruction of the exec ('target remote :PORT').
     --max-steps=N    With -e: stop the guest after N steps (each REP element counts).
     --timeout=SECONDS With -e: stop the guest after SECONDS of wall-clock time.
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
 -c, --kexec-syscall, -x, --no-ifdown, -y, --no-sync, -i, --no-checks
                      Accepted and ignored (nothing to sync or bring down).
 -s, --kexec-file-syscall, -a, --kexec-syscall-auto
                      Refused: kexec_file_load is not simulated.

Supported image types and options:
elf-x86 (aliases elf32, elf): an i386 ELF32 file, each PT_LOAD at its p_paddr
     --args-none      Jump directly to e_entry.
     --args-linux     Pass Linux kernel style options: purgatory, the boot protocol's
                      zero page and command line (with -p: backup region and ELF core
                      header, memmap= and elfcorehdr= on the command line).
     --command-line=STRING, --append=STRING
                      Set the kernel command line to STRING (with --args-linux).
     --elf32-core-headers, --elf64-core-headers
                      Class of the ELF core header of -p (default elf32).
     --args-elf, --reuse-cmdline, --initrd=, --ramdisk=, --reuseinitrd
                      Refused: ELF boot notes, initrds and a running kernel's
                      command line are not provided.
raw: a flat binary loaded at --entry=ADDR (page aligned) and entered there
"""


class Options:
    """What the command line asked for, in kexec-tools' terms (``do_load``, ``do_exec``...)."""

    def __init__(self):
        self.do_load, self.do_exec, self.do_shutdown = True, False, True
        self.do_unload = self.do_jump_back_helper = self.do_status = False
        self.print_ckr_size = False
        self.kexec_flags = 0
        self.entry = 0
        self.type = None
        self.mem_min, self.mem_max = 0, None
        self.debug = False
        #: the argument style: "elf" (kexec-tools' default), "none" or "linux"
        self.arg_style = "elf"
        self.command_line = None
        #: ELF class of the crash load's core header (1: ELFCLASS32, 2: ELFCLASS64)
        self.elf_class = 1
        self.machine = os.environ.get(ENV_MACHINE)
        self.purgatory_opts = []
        self.file_syscall = False
        self.files = []
        #: keyword arguments for the exec: max_steps, timeout (only those given)
        self.limits = {}
        #: the action options given (the last one decides), by long name
        self.actions = []
        #: the other options given, by long name
        self.given = []


def _bad_value(opt, val, why=None):
    print(f"Bad option value in {opt}={val}" + (f": {why}" if why else ""), file=sys.stderr)
    print(USAGE, end="")
    return EXIT_USAGE


def parse(argv):
    """Options in kexec-tools' order and semantics; returns (Options, exit status or None)."""
    o = Options()
    try:
        opts, o.files = getopt.gnu_getopt(argv, SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as e:
        print(f"kjexec: {e}", file=sys.stderr)
        print(USAGE, end="")
        return o, EXIT_USAGE
    for opt, val in opts:
        opt = _LONG_NAME.get(opt, opt)
        if opt in ("-h", "--help"):
            print(USAGE, end="")
            return o, 0
        if opt in ("-v", "--version"):
            _version()
            return o, 0
        if opt in ("--force", "--load", "--unload", "--exec", "--load-jump-back-helper",
                   "--load-preserve-context", "--load-panic", "--status", "--print-ckr-size"):
            o.actions.append(opt)
        else:
            o.given.append(opt)
        if opt == "--force":
            o.do_load, o.do_shutdown, o.do_exec = True, False, True
        elif opt == "--load":
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
        elif opt == "--unload":
            o.do_load, o.do_shutdown, o.do_unload = False, False, True
        elif opt == "--exec":
            o.do_load, o.do_shutdown, o.do_exec = False, False, True
        elif opt == "--load-jump-back-helper":
            o.do_load, o.do_shutdown, o.do_exec = False, False, False
            o.do_jump_back_helper = True
            o.kexec_flags = KEXEC_PRESERVE_CONTEXT
        elif opt == "--load-preserve-context":
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
            o.kexec_flags = KEXEC_PRESERVE_CONTEXT
        elif opt == "--load-panic":
            o.do_load, o.do_exec, o.do_shutdown = True, False, False
            o.kexec_flags = KEXEC_ON_CRASH
        elif opt in ("--entry", "--mem-min", "--mem-max"):
            value = strtoul(val)
            if value is None:
                return o, _bad_value(opt, val)
            setattr(o, opt[2:].replace("-", "_"), value)
        elif opt in _LIMITS:
            try:
                o.limits[opt[2:].replace("-", "_")] = _LIMITS[opt](val)
            except argparse.ArgumentTypeError as e:
                return o, _bad_value(opt, val, e)
        elif opt == "--type":
            o.type = val
        elif opt == "--debug":
            o.debug = True
        elif opt == "--status":
            o.do_status = True
        elif opt == "--print-ckr-size":
            o.print_ckr_size = True
        elif opt in ("--args-none", "--args-linux"):
            o.arg_style = opt[7:]
        elif opt in ("--command-line", "--append"):
            if "\0" in val:        # a C argv string cannot hold one: only the Python API can
                return o, _bad_value(opt, val.replace("\0", "\\0"),
                                     "a command line cannot hold a NUL byte")
            o.command_line = val
        elif opt in ("--elf32-core-headers", "--elf64-core-headers"):
            o.elf_class = 1 if opt == "--elf32-core-headers" else 2
        elif opt in NEEDS_PURGATORY:
            o.purgatory_opts.append(opt)
        elif opt in ("-s", "-a", "--kexec-file-syscall", "--kexec-syscall-auto"):
            o.file_syscall = True
        elif opt == "--machine":
            o.machine = val
        # -c, -x, -y, -i and their long forms: nothing to do in a simulation
    if o.do_status or o.print_ckr_size:
        if o.do_status and o.kexec_flags == 0:
            o.kexec_flags = KEXEC_ON_CRASH
        o.do_load = o.do_unload = o.do_shutdown = o.do_exec = False
        o.do_jump_back_helper = False
    ignored = _ignored(o)
    if ignored is not None:
        print(f"kjexec: {ignored[0]} has no effect with {ignored[1]}", file=sys.stderr)
        return o, EXIT_USAGE
    return o, None


#: actions -S ignores (-l, -p and --load-preserve-context choose the slot it reports on)
_NOT_STATUS = ("--force", "--unload", "--exec", "--load-jump-back-helper")


def _ignored(o):
    """``(option, mode)``: the first option given that the chosen mode would not read."""
    if o.print_ckr_size:
        mode, extra = "--print-ckr-size", [a for a in o.actions if a != "--print-ckr-size"]
    elif o.do_status:
        mode, extra = "--status", [a for a in o.actions if a in _NOT_STATUS]
    else:
        mode, extra = (o.actions or ["the default action (load, then execute)"])[-1], []
    if extra:
        return extra[0], mode
    for opt in o.given:
        used = True
        if opt in _LOAD_OPTIONS:
            used = o.do_load
        elif opt == "--entry":
            used = o.do_load or o.do_jump_back_helper
        elif opt in _LIMITS:
            used = o.do_exec or o.do_shutdown
        if not used:
            return opt, mode
    if o.files and not o.do_load:
        return f"the image {o.files[0]}", mode
    return None


def _version():
    from .. import __version__
    print(f"kjexec (kjcore {__version__}): kexec-tools' kexec for simulated i386 machines")
