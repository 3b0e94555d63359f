"""``kjcore vmcore MACHINE -o FILE``: what ``/proc/vmcore`` gives the capture kernel of a
crashed machine (:mod:`kjcore.kdump.vmcore`), written to FILE.

The machine must run its crash kernel (``kjcore panic`` with a crash image loaded); the ELF
core header's address comes from the crash image's ``elfcorehdr=`` option, or from
``--elfcorehdr ADDR`` for a capture image loaded another way.
"""
from ..errors import UsageError
from ..kdump.from_disk import core_from_disk_command
from ..kdump.notes import NT_PRSTATUS, parse_notes, parse_prstatus
from ..kdump.vmcore import elfcorehdr_from_image, write_vmcore
from .grammar import number


def add_parser(sub):
    """Add the ``vmcore`` subcommand to the ``kjcore`` subparsers ``sub``."""
    p = sub.add_parser("vmcore", help="write the crashed memory as an ELF core (/proc/vmcore)",
                       description="Write what /proc/vmcore gives the capture kernel of "
                       "machine PATH -- the crashed first kernel's memory as an ELF core "
                       "file built from the ELF core header -- to FILE.")
    p.add_argument("path", metavar="MACHINE", help="the machine directory")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the core file")
    p.add_argument("--elfcorehdr", type=number(0, 0xFFFFFFFF), metavar="ADDR",
                   help="physical address of the ELF core header (default: the crash "
                   "image's elfcorehdr= option)")
    p.add_argument("--from-disk", action="store_true", help="copy the ELF core a capture or "
                   "snapshot program wrote from LBA 0 of the machine's disk instead")
    p.add_argument("--disk", type=number(0, 1), default=0, metavar="N",
                   help="with --from-disk: the disk (default 0)")
    p.set_defaults(func=_cmd_vmcore)


def _cmd_vmcore(args):
    from ..store import open_machine
    m = open_machine(args.path)
    if args.from_disk:
        return core_from_disk_command(m, args.path, args.disk, args.output)
    if m.state != "crash-kernel":
        raise UsageError(f"{args.path}: no crash kernel runs (state {m.state}): /proc/vmcore "
                         "exists in the capture kernel only; load one with kjexec -p and run "
                         "'kjcore panic'")
    addr = args.elfcorehdr
    if addr is None:
        addr = elfcorehdr_from_image(m.kexec_crash_image)
        if addr is None:
            raise UsageError(f"{args.path}: the crash image has no elfcorehdr= option (load "
                             "it with kjexec -p --args-linux, or give --elfcorehdr ADDR)")
    try:
        core = write_vmcore(m.ram, addr, args.output)
    except ValueError as e:
        raise UsageError(f"{args.path}: elfcorehdr at {addr:#x}: {e}") from None
    print(f"wrote {args.output}: {core.size} bytes, ELF{32 if core.elf_class == 1 else 64} "
          f"core, {len(core.loads)} PT_LOAD segments, elfcorehdr at {addr:#x}")
    for note in parse_notes(core.notes):
        if note.type == NT_PRSTATUS and len(note.desc) == 144:
            regs = parse_prstatus(note.desc)
            print(f"NT_PRSTATUS: pid {regs['pid']}, EIP {regs['eip']:#010x}, ESP "
                  f"{regs['esp']:#010x}")
    return 0
