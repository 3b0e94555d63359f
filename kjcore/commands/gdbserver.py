"""``kjcore gdbserver MACHINE --port N``: the next jump of a persistent machine under gdb.

Waits for ``gdb -ex 'target remote :N'`` on 127.0.0.1, stops before the relocation routine's
first instruction and runs ``kernel_kexec`` as gdb says (:mod:`kjcore.gdb`).  The machine is
saved afterwards when the jump ended as a jump can (it returned, or a plain kexec image ran),
and left as it was saved when it did not (a triple fault, gdb's ``kill``, a budget), as
``kjexec -e`` does; it holds the machine's lock throughout.
"""
import errno
import os
import sys

from ..cpu import CPUFault
from ..errors import KexecError
from .grammar import MAX_STEPS, TIMEOUT, number

EXIT_FAILED = 255


def add_parser(sub):
    p = sub.add_parser("gdbserver", help="run a machine's next jump under gdb",
                       description="Wait for gdb on 127.0.0.1:PORT, then run the loaded "
                       "image's jump (kernel_kexec) under it; saves the machine afterwards.")
    p.add_argument("machine", metavar="MACHINE", help="a directory made by 'kjcore machine new'")
    p.add_argument("--port", type=number(0, 65535), required=True,
                   help="TCP port on 127.0.0.1 (0: any free port, printed)")
    p.add_argument("--max-steps", type=MAX_STEPS, help="the guest's step budget")
    p.add_argument("--timeout", type=TIMEOUT,
                   help="the guest's wall-clock budget in seconds (gdb's pauses count)")
    p.set_defaults(func=run)


def run(args):
    from ..store import machine_lock, open_machine, save_machine
    with machine_lock(args.machine) as free:
        if not free:
            print(f"kjcore: {args.machine}: {os.strerror(errno.EBUSY)}: the machine is in use",
                  file=sys.stderr)
            return EXIT_FAILED
        m = open_machine(args.machine, verify=True, locked=True)
        try:
            result = m.gdbserver(args.port, max_steps=args.max_steps, timeout=args.timeout)
        except (CPUFault, KexecError, RuntimeError) as e:
            print(f"kjcore: gdbserver: {e}; machine {args.machine} left as it was saved",
                  file=sys.stderr)
            return EXIT_FAILED
        if result is None:
            print(f"kjcore: gdbserver: gdb killed the jump; machine {args.machine} left as it "
                  "was saved", file=sys.stderr)
            return EXIT_FAILED
        save_machine(m, args.machine, locked=True)
        print(f"kjcore: gdbserver: {type(result).__name__}: {result.steps} steps; "
              f"machine {args.machine} saved")
        return 0
