"""``kjcore panic MACHINE [--message TEXT]``: make a persistent machine's first kernel panic.

The kdump flow from a shell (SPEC §17)::

    kjexec --machine M -p --args-linux --command-line="console=ttyS0" capture.elf
    kjcore panic M --message "oops"
    kjcore vmcore M -o vmcore

``Machine.panic`` runs (:mod:`kjcore.kdump.crash`): with a crash image loaded it saves the
registers in the crash notes and runs the crash image (``--max-steps`` / ``--timeout`` bound
it, as ``kjexec -e``'s do); the machine is saved afterwards in state ``crash-kernel`` or
``panicked``.  A crash image that loses the machine (triple fault) is reported and the
machine directory is left as it was.
"""
from ..cpu import CPUFault
from ..errors import UsageError
from .grammar import MAX_STEPS, TIMEOUT
from .persistent import locked_machine


def add_parser(sub):
    """Add the ``panic`` subcommand to the ``kjcore`` subparsers ``sub``."""
    p = sub.add_parser("panic", help="make the first kernel panic (runs the crash image)",
                       description="Make machine PATH's first kernel panic: with a crash "
                       "image loaded (kjexec -p) crash_kexec saves the registers in the crash "
                       "notes and runs it; the machine is saved afterwards.")
    p.add_argument("path", metavar="MACHINE", help="the machine directory")
    p.add_argument("--message", default="kjcore panic",
                   help="the panic message (default 'kjcore panic')")
    p.add_argument("--max-steps", type=MAX_STEPS,
                   help="stop the crash image after N steps")
    p.add_argument("--timeout", type=TIMEOUT,
                   help="stop the crash image after SECONDS of wall-clock time")
    p.set_defaults(func=_cmd_panic)


def _cmd_panic(args):
    from ..store import save_machine
    with locked_machine(args.path, verify=True) as m:
        try:
            r = m.panic(args.message, max_steps=args.max_steps, timeout=args.timeout)
        except RuntimeError as e:           # the first kernel is not running
            raise UsageError(f"{args.path}: {e}") from None
        except CPUFault as e:
            raise UsageError(f"{args.path}: the crash image lost the machine "
                             f"({type(e).__name__}: {e}); machine left as it was") from None
        save_machine(m, args.path, locked=True)
    print(r.message)
    if r.result is None:
        print(f"crash_kexec: no crash image loaded: the first kernel stopped ({r.state})")
        return 0
    print(f"crash_kexec: saved the registers in the crash notes at {m.crash_notes:#x} and "
          f"entered the crash image ({r.result.steps} steps)")
    if r.result.debugcon:
        print(r.result.debugcon.decode("utf-8", errors="replace"), end="")
        if not r.result.debugcon.endswith(b"\n"):
            print()
    if r.state == "panicked":
        print(f"crash_kexec: the crash image returned (it was loaded with the preserve flag); "
              f"the first kernel stopped ({r.state})")
    else:
        print(f"the crash kernel owns the machine ({r.state}, stopped: {r.result.status.name} "
              f"at EIP {r.result.eip:#010x})")
    return 0
