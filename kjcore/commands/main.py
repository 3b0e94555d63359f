"""The ``kjcore`` command: persistent machines, inspection, the demo, fuzzing and benchmarks.

::

    kjcore machine new PATH --ram 256M [--pae] [--nx] [--profile mainline] [--crashkernel 64M@16M]
                            [--disk FILE[:SIZE]]...
    kjcore machine attach PATH FILE [--readonly]
    kjcore inspect PATH [--json] [--plot FILE.png|svg]
    kjcore demo [ARGS...]
    kjcore fuzz [-n N] [--seed S] [--ram 64M] [--profile P] [--crashkernel SPEC]
    kjcore fuzz --jumps N [--workers W] [--seed S]
    kjcore bench [--builtin] [--size 16M]

``kjexec`` (:mod:`kjcore.commands.kjexec`) loads and runs images on a machine made here. The
size and ``crashkernel=`` grammars are :mod:`kjcore.commands.grammar`'s, the memory map
:mod:`kjcore.inspect`'s. See ``docs/cli.rst``.
"""
import argparse
import errno
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..constants import MAX_RAM_SIZE, PAGE_SIZE, PROFILES
from ..inspect import describe_machine, entry_runs
from ..progress import bar as progress_bar
from ..progress import wanted as progress_wanted
from . import gdbserver, panic, vmcore
from .grammar import (
    COUNT,
    RAM_SIZE,
    SEED,
    Parser,
    UsageError,
    format_size,
    number,
    parse_crashkernel,
    parse_size,
)


def _print_image(slot, info, out, max_lines):
    if info is None:
        print(f"{slot}: none", file=out)
        return
    swap = "none" if info["swap_page"] is None else f"{info['swap_page']:#010x}"
    mode = "preserve context" if info["preserve_context"] else "no preserve context"
    print(f"{slot}: {info['type']}, {mode}, start {info['start']:#010x}", file=out)
    print(f"  head          {info['head']:#010x}", file=out)
    print(f"  control page  {info['control_page']:#010x}", file=out)
    print(f"  swap page     {swap}", file=out)
    print(f"  segments      {len(info['segments'])}", file=out)
    for i, s in enumerate(info["segments"]):
        end = s["mem"] + s["memsz"]
        kind = " (zero buffer)" if s["zero"] else ""
        print(f"    [{i:2}] mem {s['mem']:#010x}-{end:#010x} memsz {s['memsz']:#x} "
              f"bufsz {s['bufsz']:#x}{kind}", file=out)
    if info["type"] == "crash":
        print("  entries       none (crash images are loaded in place: head = IND_DONE)", file=out)
        return
    print(f"  entries       {len(info['entries'])} words read from RAM: "
          f"{info['nr_source_pages']} source, {info['nr_indirection_pages']} indirection pages",
          file=out)
    runs = entry_runs(info["entries"])
    for name, count, first, last, dest in runs[:max_lines]:
        if name == "SOURCE" and count > 1:
            print(f"    SOURCE       x{count} {first:#010x} ... {last:#010x}  "
                  f"-> {dest:#010x}...", file=out)
        elif name == "SOURCE":
            print(f"    SOURCE       {first:#010x}  -> {dest:#010x}", file=out)
        elif name == "DONE":
            print("    DONE", file=out)
        else:
            print(f"    {name:<12} {first:#010x}", file=out)
    if len(runs) > max_lines:
        print(f"    ... {len(runs) - max_lines} more lines (--all or --json for all)", file=out)


def print_description(desc, out=None, max_lines=40):
    """Human-readable ``kjcore inspect`` output (to ``out``, default ``sys.stdout``)."""
    out = sys.stdout if out is None else out
    c = desc["config"]
    flags = [k for k in ("pae", "nx", "strict_bus", "fix_pae_return") if c[k]]
    flags += [k for k in ("kexec_jump", "cap_sys_boot") if not c[k]]
    flags += ["no_bios"] if not c["bios"] else []
    flags = [f.replace("kexec_jump", "no kexec_jump").replace("cap_sys_boot", "no CAP_SYS_BOOT")
             for f in flags]
    ck = "none" if c["crashkernel"] is None else \
        f"{format_size(c['crashkernel'][1])}@{format_size(c['crashkernel'][0])}"
    if desc["path"]:
        print(f"machine {desc['path']}", file=out)
    print(f"  RAM {format_size(c['ram_size'])}, profile {c['profile']}, engine {c['engine']}"
          f"{', ' + ', '.join(flags) if flags else ''}", file=out)
    print(f"  kernel_reserved {format_size(c['kernel_reserved'])}, crashkernel {ck}, "
          f"alloc_seed {c['alloc_seed']}, {desc['free_frames']} free frames "
          f"({format_size(desc['free_frames'] * PAGE_SIZE)})", file=out)
    for slot, info in desc["images"].items():
        _print_image(slot, info, out, max_lines)
    mmap = desc["memory_map"]
    print(f"memory map ({len(mmap)} ranges):", file=out)
    for r in mmap[:max_lines]:
        print(f"  {r['start']:#010x}-{r['end'] - 1:#010x}  {r['kind']:<12} "
              f"{format_size(r['end'] - r['start'])}", file=out)
    if len(mmap) > max_lines:
        print(f"  ... {len(mmap) - max_lines} more ranges (--all or --json for all)", file=out)


# ---------------------------------------------------------------------------------- commands
def _refuse(args, options, reason):
    """UsageError for the first of ``options`` (as spelt on the command line) that was given:
    the mode chosen ignores it, and an ignored option is a mistake worth a message."""
    for option in options:
        if getattr(args, option.lstrip("-").replace("-", "_")) not in (None, False, []):
            raise UsageError(f"{option} {reason}")


def _disk_argument(spec):
    """``FILE[:SIZE]`` to (file, size or None): with a size the file is created."""
    file, colon, size = spec.rpartition(":")
    if not colon or not size[:1].isdigit():
        return spec, None
    return file, parse_size(size)


def _cmd_machine_new(args):
    from ..devices import Disk
    from ..machine import Machine
    from ..store import is_machine_dir, save_machine
    ram = args.ram
    crash = None
    if args.crashkernel:
        crash = parse_crashkernel(args.crashkernel, ram, args.profile)
    if os.path.lexists(args.path) and not (args.force and is_machine_dir(args.path)):
        raise UsageError(f"{args.path} already exists"
                         + (" (--force replaces a kjcore machine)" if is_machine_dir(args.path)
                            else ""))
    disks = [_disk_argument(spec) for spec in args.disk]
    try:
        m = Machine(ram, pae=args.pae, nx=args.nx, profile=args.profile, crashkernel=crash,
                    kexec_jump=not args.no_kexec_jump, cap_sys_boot=not args.no_cap_sys_boot,
                    kernel_reserved=args.kernel_reserved, engine=args.engine,
                    strict_bus=args.strict_bus, fix_pae_return=args.fix_pae_return,
                    alloc_seed=args.alloc_seed, bios=not args.no_bios)
    except ValueError as e:
        raise UsageError(str(e)) from None
    created = []            # disk files made here: removed again if the machine is not made
    try:
        for file, size in disks:
            if size is not None:
                created.append(Disk.create(file, size).path)
            m.attach_disk(created[-1] if size is not None else file)
        save_machine(m, args.path)
    except BaseException as e:
        for file in created:
            os.unlink(file)
        if isinstance(e, ValueError):
            raise UsageError(str(e)) from None
        raise
    extra = f", crashkernel {format_size(crash[1])}@{format_size(crash[0])}" if crash else ""
    print(f"created machine {args.path}: {format_size(ram)} RAM, profile {args.profile}"
          f"{', PAE' if args.pae else ''}{', NX' if args.nx else ''}{extra}")
    return 0


def _cmd_machine_attach(args):
    from ..store import save_machine
    from .persistent import locked_machine
    with locked_machine(args.path) as m:
        try:
            disk = m.attach_disk(args.file, readonly=args.readonly)
            save_machine(m, args.path, locked=True)
        except ValueError as e:
            raise UsageError(str(e)) from None
    print(f"attached {disk.path} to {args.path} as disk {len(m.disks) - 1}: "
          f"{format_size(disk.sectors * 512)}{', read-only' if disk.readonly else ''}")
    return 0


def _cmd_inspect(args):
    from ..plot import check_target, save_memory_map
    from ..store import open_machine
    if args.json:
        _refuse(args, ("--all",), "has no effect with --json (it is always complete)")
    if args.plot:
        check_target(args.plot)
    m = open_machine(args.path, verify=args.verify)
    desc = describe_machine(m, args.path)
    if args.plot:
        save_memory_map(m, args.plot, title=f"physical memory of {args.path}")
    if args.json:
        json.dump(desc, sys.stdout, indent=1)
        print()
    else:
        print_description(desc, max_lines=sys.maxsize if args.all else 40)
    return 0


def _cmd_demo(argv):
    from . import demo
    return demo.main(list(argv))


def _cmd_jump_campaign(args):
    from ..fuzz import jump_campaign
    result = jump_campaign(args.jumps, args.seed, workers=args.workers or 1,
                           progress=progress_wanted(args.progress) or None)
    rt = result.stats["round trips"]
    print(f"jump campaign (seed {args.seed}): {rt} round trips over {result.stats['images']} "
          f"images in {result.seconds:.1f} s ({rt / max(result.seconds, 1e-9):.0f} jumps/s), "
          f"every invariant checked after every jump: "
          f"{'all held' if result.ok else f'{len(result.failures)} failing units'}")
    for seed, unit, text in result.failures:
        print(f"--- failing unit: kjcore.fuzz.run_unit({seed}, {unit}, ...)\n{text}")
    return 0 if result.ok else 1


#: ``kjcore fuzz`` options of the layout fuzzer (refused with --jumps), and their defaults
_LAYOUT_OPTIONS = ("-n", "--ram", "--profile", "--crashkernel", "--no-kexec-jump", "--batch",
                   "--json")
_LAYOUT_DEFAULTS = {"n": 1_000_000, "ram": 64 << 20, "profile": "2.6.27", "batch": 200_000}


def _cmd_fuzz(args):
    if args.jumps is not None:
        _refuse(args, _LAYOUT_OPTIONS, "applies to the layout fuzzer, not to --jumps")
        return _cmd_jump_campaign(args)
    _refuse(args, ("--workers",), "applies to --jumps only")
    from ..fuzz import check_layouts, random_layouts
    args = argparse.Namespace(**{**vars(args), **{
        k: v for k, v in _LAYOUT_DEFAULTS.items() if getattr(args, k) is None}})
    ram = args.ram
    crash = parse_crashkernel(args.crashkernel, ram, args.profile) if args.crashkernel else None
    opts = dict(profile=args.profile, ram_size=ram, crashkernel=crash,
                kexec_jump=not args.no_kexec_jump)
    # Compile (or load from cache) before the clock starts.
    try:
        check_layouts(random_layouts(8, seed=0, ram_size=ram, crashkernel=crash), **opts)
    except ValueError as e:         # a machine that cannot exist (a BIOS below 1 MiB of RAM)
        raise UsageError(str(e)) from None
    counts = {}
    done = 0
    total_time = 0.0          # check_layouts only
    gen_time = 0.0
    batch = args.batch
    bar = progress_bar(args.n, "fuzz", unit="layout", enabled=args.progress)
    while done < args.n:
        n = min(batch, args.n - done)
        t0 = time.perf_counter()
        lay = random_layouts(n, seed=(args.seed + done) & 0xFFFFFFFF, ram_size=ram,
                             crashkernel=crash)
        t1 = time.perf_counter()
        err = check_layouts(lay, **opts)
        t2 = time.perf_counter()
        gen_time += t1 - t0
        total_time += t2 - t1
        values, nums = np.unique(err, return_counts=True)
        for v, c in zip(values.tolist(), nums.tolist()):
            counts[v] = counts.get(v, 0) + c
        done += n
        bar.update(n)
    bar.close()
    rate = done / total_time if total_time else 0.0
    if args.json:
        json.dump({"layouts": done, "check_seconds": total_time, "generate_seconds": gen_time,
                   "layouts_per_second": rate,
                   "errno": {("OK" if k == 0 else errno.errorcode.get(k, str(k))): v
                             for k, v in sorted(counts.items())}}, sys.stdout, indent=1)
        print()
        return 0
    print(f"errno histogram of {done} layouts (profile {args.profile}, RAM "
          f"{format_size(ram)}, seed {args.seed}):")
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        name = "OK" if k == 0 else errno.errorcode.get(k, str(k))
        share = v / done
        print(f"  {name:<14} {v:>12}  {100 * share:6.2f}%  {'#' * round(40 * share)}")
    print(f"checked {done} layouts in {total_time:.3f} s: {rate / 1e6:.2f} M layouts/s "
          f"(generating them took {gen_time:.3f} s more)")
    return 0


def _benchmarks_dir():
    here = os.path.abspath(__file__)          # SOURCE/kjcore/commands/main.py
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    path = os.path.join(root, "benchmarks")
    if os.path.isdir(path) and any(n.endswith(".py") and (n.startswith("test_")
                                   or n.startswith("bench_")) for n in os.listdir(path)):
        return path
    return None


def _builtin_bench(size, repeat):
    from .. import KEXEC_PRESERVE_CONTEXT, Segment
    from ..machine import Machine
    from ..swap import ENGINES, swap_pages
    ram = max(64 << 20, 4 * size)
    m = Machine(ram)
    m.kexec_load(16 << 20, [Segment.zero(0, 16 << 20, size)], KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    pages = size // PAGE_SIZE
    a, b, c = (np.zeros(size, dtype=np.uint8) for _ in range(3))

    def memcpy_bound():
        # the same bytes as a swap pass (S -> swap, D -> S, swap -> D), as three big memcpys
        np.copyto(c, a)
        np.copyto(a, b)
        np.copyto(b, c)

    print(f"swap of a {format_size(size)} image ({pages} pages, 3 copies each), best of "
          f"{repeat}:")
    results = {}
    for name, fn in [("memcpy", memcpy_bound)] + [
            (e, lambda e=e: swap_pages(m.ram, img.head, img.swap_page, engine=e))
            for e in ENGINES]:
        fn()                                   # warm up / compile
        best = min(_timed(fn) for _ in range(repeat))
        results[name] = best
        mib = 3 * size / best / (1 << 20)
        print(f"  {name:<10} {best * 1e3:9.2f} ms  {mib:9.0f} MiB/s copied  "
              f"{results['memcpy'] / best:5.2f} x memcpy")
    return 0


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cmd_bench(args):
    path = None if args.builtin else _benchmarks_dir()
    if path is None:
        if args.pytest_args:
            raise UsageError("pytest arguments need the benchmark suite (not --builtin, and "
                             "a source tree with benchmarks/)")
        return _builtin_bench(args.size or 16 << 20, args.repeat or 3)
    _refuse(args, ("--size", "--repeat"), "applies to the built-in timing (--builtin)")
    cmd = [sys.executable, "-m", "pytest", path, "--benchmark-enable", "-p", "no:cacheprovider",
           *args.pytest_args]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


# ---------------------------------------------------------------------------------- main
_DESCRIPTION = ("kjcore: Linux kexec jump (2.6.27, i386) simulated. Create and inspect "
                "persistent machines, run the demo, fuzz kexec_load, run the benchmarks, "
                "panic a machine into its crash kernel and write its vmcore, run a jump under "
                "gdb. Loading and running images on a machine: see kjexec.")


def _parser():
    from .. import __version__
    ap = Parser(prog="kjcore", description=_DESCRIPTION)
    ap.add_argument("--version", action="version", version=f"kjcore {__version__}",
                    help="print the version and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True,
                            help="what to do (kjcore COMMAND --help for its options)")

    mach = sub.add_parser("machine", help="create persistent machines",
                          description="Create persistent machines.")
    msub = mach.add_subparsers(dest="machine_command", metavar="ACTION", required=True,
                               help="what to do with machines")
    new = msub.add_parser("new", help="create a persistent machine directory PATH",
                          description="Create a persistent machine directory PATH: one "
                          "simulated i386 computer with a first kernel and empty kexec slots.")
    new.add_argument("path", metavar="PATH", help="the machine directory to create")
    new.add_argument("--ram", type=RAM_SIZE, default=64 << 20,
                     help="RAM size, e.g. 256M (default 64M, at most 1G)")
    new.add_argument("--pae", action="store_true", help="PAE paging in the first kernel")
    new.add_argument("--nx", action="store_true", help="NX (needs --pae)")
    new.add_argument("--profile", default="2.6.27", choices=PROFILES,
                     help="kernel rules to follow (default 2.6.27)")
    new.add_argument("--crashkernel", metavar="SPEC",
                     help="reserve crash kernel memory, crashkernel= syntax (64M@16M)")
    new.add_argument("--kernel-reserved", default=4 << 20,
                     type=number(64 << 10, MAX_RAM_SIZE, size=True, align=PAGE_SIZE),
                     help="RAM owned by the first kernel at the bottom (default 4M)")
    new.add_argument("--engine", default="emulated", choices=("emulated", "native"),
                     help="who swaps the pages in a jump: the relocation routine on the "
                     "simulated CPU (emulated, default) or native code")
    new.add_argument("--alloc-seed", type=SEED, default=0,
                     help="page allocator order seed (default 0)")
    new.add_argument("--no-kexec-jump", action="store_true", help="CONFIG_KEXEC_JUMP=n")
    new.add_argument("--no-cap-sys-boot", action="store_true",
                     help="the caller lacks CAP_SYS_BOOT (every kexec call fails with EPERM)")
    new.add_argument("--strict-bus", action="store_true",
                     help="guest accesses outside RAM fault instead of reading ones")
    new.add_argument("--fix-pae-return", action="store_true",
                     help="let a PAE first kernel survive the return of a jump (2.6.27 "
                     "triple-faults there)")
    new.add_argument("--disk", action="append", default=[], metavar="FILE[:SIZE]",
                     help="attach disk FILE (with :SIZE, create it with that size); twice for "
                          "the ATA master and slave")
    new.add_argument("--no-bios", action="store_true", help="no resident BIOS (low memory is "
                     "plain RAM; needed below 1M of RAM)")
    new.add_argument("--force", action="store_true", help="replace an existing machine")
    new.set_defaults(func=_cmd_machine_new)
    att = msub.add_parser("attach", help="attach a disk file to machine PATH",
                          description="Attach the disk file FILE (a whole number of 512-byte "
                                      "sectors) to machine PATH; the machine keeps a "
                                      "reference, the file is never copied.")
    att.add_argument("path", metavar="PATH", help="the machine directory")
    att.add_argument("file", metavar="FILE", help="the disk image file")
    att.add_argument("--readonly", action="store_true", help="guests cannot write the disk")
    att.set_defaults(func=_cmd_machine_attach)

    ins = sub.add_parser("inspect", help="show a machine: images, indirection list, memory map",
                         description="Show a machine: its configuration, each loaded image "
                         "with the indirection list decoded from simulated RAM, and a memory "
                         "map of RAM by owner.")
    ins.add_argument("path", metavar="PATH", help="the machine directory")
    ins.add_argument("--json", action="store_true", help="machine-readable, complete output")
    ins.add_argument("--all", action="store_true", help="do not shorten long lists")
    ins.add_argument("--verify", action="store_true", help="check the RAM file's CRC-32")
    ins.add_argument("--plot", metavar="FILE", help="also draw the memory map (.png/.svg/.pdf)")
    ins.set_defaults(func=_cmd_inspect)

    demo = sub.add_parser("demo", help="run the kexec jump demo (arguments go to the demo)",
                          add_help=False)
    demo.add_argument("args", nargs=argparse.REMAINDER)      # main() passes them verbatim

    fz = sub.add_parser("fuzz", help="check random kexec_load layouts, errno histogram",
                        description="Check random kexec_load layouts against the kernel's "
                        "rules and print the errno histogram; or, with --jumps, run an "
                        "end-to-end campaign of checked kexec jumps.")
    fz.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    fz.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress line on stderr (default: when stderr is a terminal)")
    lay = fz.add_argument_group("layouts (the default mode)")
    lay.add_argument("-n", type=COUNT, help="layouts (default 1000000)")
    lay.add_argument("--ram", type=RAM_SIZE, help="RAM of the machine checked (default 64M)")
    lay.add_argument("--profile", choices=PROFILES, help="kernel rules (default 2.6.27)")
    lay.add_argument("--crashkernel", metavar="SPEC",
                     help="crashkernel= reservation of the machine checked (64M@16M)")
    lay.add_argument("--no-kexec-jump", action="store_true",
                     help="the machine checked has CONFIG_KEXEC_JUMP=n")
    lay.add_argument("--batch", type=number(1, 2_000_000),
                     help="layouts per step (default 200000)")
    lay.add_argument("--json", action="store_true", help="machine-readable output")
    camp = fz.add_argument_group("jump campaign")
    camp.add_argument("--jumps", type=COUNT, metavar="N",
                      help="an end-to-end jump campaign of N checked round trips instead")
    camp.add_argument("--workers", type=number(1, 256),
                      help="processes for --jumps (default 1)")
    fz.set_defaults(func=_cmd_fuzz)

    be = sub.add_parser("bench", help="run benchmarks/ with pytest-benchmark, or a built-in "
                                      "swap timing",
                        description="Run the benchmark suite (pytest benchmarks "
                        "--benchmark-enable) when the source tree has one, else (or with "
                        "--builtin) time one swap pass with each swap engine.")
    be.add_argument("--builtin", action="store_true", help="built-in swap timing only")
    be.add_argument("--size", type=number(PAGE_SIZE, 256 << 20, size=True, align=PAGE_SIZE),
                    help="built-in: image size (default 16M)")
    be.add_argument("--repeat", type=number(1, 1000), help="built-in: runs (default 3)")
    be.add_argument("pytest_args", nargs="*", metavar="PYTEST-ARGS",
                    help="extra pytest arguments (after --)")
    be.set_defaults(func=_cmd_bench)
    panic.add_parser(sub)
    vmcore.add_parser(sub)
    gdbserver.add_parser(sub)
    return ap


def main(argv=None):
    """Entry point of the ``kjcore`` command; returns the exit status."""
    from ..store import MachineFileError
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["demo"]:
            # everything after "demo" belongs to the demo's own parser, options included
            return _cmd_demo(argv[1:])
        args = _parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:          # --help, --version or a usage error, already printed
        return e.code
    except (UsageError, MachineFileError, OSError) as e:
        print(f"kjcore: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kjcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
