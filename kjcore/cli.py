"""The ``kjcore`` command: persistent machines, inspection, the demo, fuzzing and benchmarks.

::

    kjcore machine new PATH --ram 256M [--pae] [--nx] [--profile mainline] [--crashkernel 64M@16M]
    kjcore inspect PATH [--json]
    kjcore demo [ARGS...]
    kjcore fuzz [-n N] [--seed S] [--ram 64M] [--profile P] [--crashkernel SPEC]
    kjcore fuzz --jumps N [--workers W] [--seed S]
    kjcore bench [--builtin] [--size 16M]

``kjexec`` (:mod:`kjcore.kjexec`) loads and runs images on a machine made here. Sizes take the
kernel's ``memparse`` syntax (``256M``, ``0x1000000``, ``4G``) and ``--crashkernel`` the
``crashkernel=`` boot parameter's (``64M@16M``, ``512M-2G:64M,2G-:128M@16M``). See
``docs/cli.rst``.

>>> parse_size("64M"), parse_size("0x1000"), parse_size("1g")
(67108864, 4096, 1073741824)
>>> [hex(v) for v in parse_crashkernel("64M@16M", ram_size=256 << 20)]
['0x1000000', '0x4000000']
"""
import argparse
import errno
import json
import os
import subprocess
import sys
import time

import numpy as np

from .constants import IND_DESTINATION, IND_SOURCE, PAGE_SHIFT, PAGE_SIZE, PROFILES

_SUFFIX = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
#: 32-bit kernels reserve the crash kernel below this when crashkernel= gives no base (x86)
_CRASH_ADDR_MAX = 512 << 20
_CRASH_ALIGN = 16 << 20


class UsageError(ValueError):
    """A command-line value that cannot be used; printed as ``kjcore: error: ...``."""


# ---------------------------------------------------------------------------------- parsing
def _parse_number(text):
    """``simple_strtoull(text, base 0)``: 0x hex, leading-0 octal, else decimal; (value, rest)."""
    s = text.strip()
    low = s.lower()
    if low.startswith("0x"):
        digits, base, i = "0123456789abcdef", 16, 2
    elif low.startswith("0") and len(low) > 1 and low[1].isdigit():
        digits, base, i = "01234567", 8, 1
    else:
        digits, base, i = "0123456789", 10, 0
    j = i
    while j < len(low) and low[j] in digits:
        j += 1
    if j == i and not (base == 10 and s[:1] == "0"):
        raise UsageError(f"{text!r} is not a number")
    return int(s[i:j] or "0", base), s[j:]


def parse_size(text):
    """A size or address in the kernel's ``memparse`` syntax: a number and an optional
    K/M/G/T/P/E suffix (powers of 1024, either case)."""
    value, rest = _parse_number(text)
    if rest[:1].upper() in _SUFFIX:
        value <<= _SUFFIX[rest[0].upper()]
        rest = rest[1:]
    if rest:
        raise UsageError(f"{text!r} is not a size (trailing {rest!r})")
    return value


def parse_crashkernel(text, ram_size, profile="2.6.27"):
    """``crashkernel=`` syntax to ``(start, size)`` for a machine of ``ram_size`` bytes.

    ``size[@offset]`` or ``range1:size1[,range2:size2,...][@offset]`` where a range is
    ``start-[end]`` (end exclusive) matched against ``ram_size``. Without ``@offset``,
    2.6.27 on i386 reserves nothing and says "you have to specify a base address"; the
    mainline profile picks the highest 16 MiB-aligned base below 512 MiB, like today's x86.
    """
    spec, _, base = text.partition("@")
    if ":" in spec:
        size = None
        for part in spec.split(","):
            rng, colon, sz = part.partition(":")
            lo, dash, hi = rng.partition("-")
            if not colon or not dash:
                raise UsageError(f"crashkernel={text}: bad range {part!r} (want start-[end]:size)")
            lo = parse_size(lo)
            hi = parse_size(hi) if hi else None
            if lo <= ram_size and (hi is None or ram_size < hi):
                size = parse_size(sz)
                break
        if size is None:
            raise UsageError(f"crashkernel={text}: no range matches {ram_size >> 20} MiB of RAM")
    else:
        size = parse_size(spec)
    if size <= 0:
        raise UsageError(f"crashkernel={text}: empty reservation")
    if base:
        return parse_size(base), size
    if profile == "2.6.27":
        raise UsageError(f"crashkernel={text}: 2.6.27 on i386 needs a base address "
                         "(crashkernel=size@offset)")
    top = min(ram_size, _CRASH_ADDR_MAX)
    start = (top - size) & ~(_CRASH_ALIGN - 1)
    if start < _CRASH_ALIGN or top < size:
        raise UsageError(f"crashkernel={text}: no {_CRASH_ALIGN >> 20} MiB-aligned room for "
                         f"{size:#x} bytes below {top:#x}")
    return start, size


def format_size(n):
    """``67108864`` -> ``'64M'``; exact values only, else hex."""
    for suffix, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return f"{n:#x}"


# ---------------------------------------------------------------------------------- inspect
#: labels of the compact memory map, by priority (later labels overwrite earlier ones)
_KINDS = ("free", "kernel", "crashkernel", "crash-image", "control", "swap", "indirection",
          "source", "parked", "allocated")


def _image_info(image):
    entries = []
    dest = 0
    runs = []          # (flag name, count, first addr, last addr, first dest)
    from .kimage import flag_name
    for flag, addr in image.entries():
        name = flag_name(flag)
        entries.append([name, addr])
        if flag == IND_DESTINATION:
            dest = addr
        d = dest if flag == IND_SOURCE else None
        if runs and runs[-1][0] == name == "SOURCE":
            r = runs[-1]
            runs[-1] = (name, r[1] + 1, r[2], addr, r[4])
        else:
            runs.append((name, 1, addr, addr, d))
        if flag == IND_SOURCE:
            dest = (dest + PAGE_SIZE) & 0xFFFFFFFF
    return {
        "type": image.type, "start": image.start, "head": image.head,
        "preserve_context": image.preserve_context, "control_page": image.control_page,
        "swap_page": image.swap_page,
        "segments": [{"mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz,
                      "zero": s.buf is None} for s in image.segments],
        "nr_source_pages": int(len(image.source_pages())) if image.type != "crash" else 0,
        "nr_indirection_pages": int(len(image.indirection_pages()))
        if image.type != "crash" else 0,
        "entries": entries,
        "_runs": runs,
    }


def memory_map(machine):
    """The compact memory map: a list of ``(start, end, kind)`` (end exclusive) covering RAM.

    Kinds: ``free`` (the allocator may hand it out), ``kernel`` (below ``kernel_reserved``),
    ``crashkernel`` (the reserved region), ``crash-image`` (a loaded crash segment),
    ``control``/``swap``/``indirection``/``source``/``parked`` (frames of a loaded image) and
    ``allocated`` (not free and not accounted for by any image).
    """
    nr = machine.ram_size >> PAGE_SHIFT
    code = {k: i for i, k in enumerate(_KINDS)}
    label = np.full(nr, code["allocated"], dtype=np.uint8)
    label[machine.allocator.state()] = code["free"]
    label[:machine.kernel_reserved >> PAGE_SHIFT] = code["kernel"]
    if machine.crashkernel is not None:
        start, size = machine.crashkernel
        label[start >> PAGE_SHIFT:(start + size) >> PAGE_SHIFT] = code["crashkernel"]
    crash = machine.kexec_crash_image
    if crash is not None:
        for s in crash.segments:
            label[s.mem >> PAGE_SHIFT:(s.mem + s.memsz) >> PAGE_SHIFT] = code["crash-image"]
        label[crash.control_page >> PAGE_SHIFT] = code["control"]
    image = machine.kexec_image
    if image is not None:
        label[image.indirection_pages() >> PAGE_SHIFT] = code["indirection"]
        label[image.source_pages() >> PAGE_SHIFT] = code["source"]
        label[np.asarray(image.parked_frames, dtype=np.int64)] = code["parked"]
        label[image.control_page >> PAGE_SHIFT] = code["control"]
        label[image.swap_page >> PAGE_SHIFT] = code["swap"]
    cuts = np.flatnonzero(np.diff(label)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [nr]))
    return [(int(s) << PAGE_SHIFT, int(e) << PAGE_SHIFT, _KINDS[label[s]])
            for s, e in zip(starts, ends)]


def describe_machine(machine, path=None):
    """Everything ``kjcore inspect`` shows, as JSON-ready values."""
    from .machine_state import machine_config
    images = {}
    for slot in ("kexec_image", "kexec_crash_image"):
        img = getattr(machine, slot)
        images[slot] = None if img is None else _image_info(img)
    return {"path": path, "config": machine_config(machine),
            "free_frames": machine.free_frames, "images": images,
            "memory_map": [{"start": s, "end": e, "kind": k} for s, e, k in memory_map(machine)]}


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
    runs = info["_runs"]
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
def _cmd_machine_new(args):
    from .machine import Machine
    from .store import is_machine_dir, save_machine
    ram = parse_size(args.ram)
    crash = None
    if args.crashkernel:
        crash = parse_crashkernel(args.crashkernel, ram, args.profile)
    if os.path.lexists(args.path) and not (args.force and is_machine_dir(args.path)):
        raise UsageError(f"{args.path} already exists"
                         + (" (--force replaces a kjcore machine)" if is_machine_dir(args.path)
                            else ""))
    try:
        m = Machine(ram, pae=args.pae, nx=args.nx, profile=args.profile, crashkernel=crash,
                    kexec_jump=not args.no_kexec_jump, cap_sys_boot=not args.no_cap_sys_boot,
                    kernel_reserved=parse_size(args.kernel_reserved), engine=args.engine,
                    strict_bus=args.strict_bus, fix_pae_return=args.fix_pae_return,
                    alloc_seed=args.alloc_seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    save_machine(m, args.path)
    extra = f", crashkernel {format_size(crash[1])}@{format_size(crash[0])}" if crash else ""
    print(f"created machine {args.path}: {format_size(ram)} RAM, profile {args.profile}"
          f"{', PAE' if args.pae else ''}{', NX' if args.nx else ''}{extra}")
    return 0


def _cmd_inspect(args):
    from .store import open_machine
    m = open_machine(args.path, verify=args.verify)
    desc = describe_machine(m, args.path)
    if args.json:
        for info in desc["images"].values():
            if info is not None:
                del info["_runs"]
        json.dump(desc, sys.stdout, indent=1)
        print()
    else:
        print_description(desc, max_lines=sys.maxsize if args.all else 40)
    return 0


def _cmd_demo(argv):
    try:
        from . import demo
    except ImportError as e:
        raise UsageError(f"the demo is not available in this build ({e})") from None
    return demo.main(list(argv))


def _cmd_jump_campaign(args):
    from concurrent.futures import ProcessPoolExecutor

    from .fuzz import jump_campaign
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.workers > 1:
        # Compile the CPU here first (on two cores, kjcore.cpu.warmup): from a cold cache every
        # worker would otherwise compile it for itself.
        from .cpu import CPU
        CPU(np.zeros(4096, np.uint8)).run(1)
        with ProcessPoolExecutor(args.workers) as ex:
            result = jump_campaign(args.jumps, args.seed, executor=ex, progress=progress or None)
    else:
        result = jump_campaign(args.jumps, args.seed, progress=progress or None)
    rt = result.stats["round trips"]
    print(f"jump campaign (seed {args.seed}): {rt} round trips over {result.stats['images']} "
          f"images in {result.seconds:.1f} s ({rt / max(result.seconds, 1e-9):.0f} jumps/s), "
          f"every invariant checked after every jump: "
          f"{'all held' if result.ok else f'{len(result.failures)} failing units'}")
    for seed, unit, text in result.failures:
        print(f"--- failing unit: kjcore.fuzz.run_unit({seed}, {unit}, ...)\n{text}")
    return 0 if result.ok else 1


def _cmd_fuzz(args):
    if args.jumps:
        return _cmd_jump_campaign(args)
    from .fuzz import check_layouts, random_layouts
    ram = parse_size(args.ram)
    crash = parse_crashkernel(args.crashkernel, ram, args.profile) if args.crashkernel else None
    opts = dict(profile=args.profile, ram_size=ram, crashkernel=crash,
                kexec_jump=not args.no_kexec_jump)
    # Compile (or load from cache) before the clock starts.
    check_layouts(random_layouts(8, seed=0, ram_size=ram, crashkernel=crash), **opts)
    counts = {}
    done = 0
    total_time = 0.0          # check_layouts only
    gen_time = 0.0
    batch = max(1, args.batch)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
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
        if progress:
            rate = done / total_time if total_time else 0.0
            print(f"\rfuzz: {done}/{args.n} layouts ({100 * done // args.n}%), "
                  f"{rate / 1e6:.2f} M layouts/s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks")
    if os.path.isdir(path) and any(n.endswith(".py") and (n.startswith("test_")
                                   or n.startswith("bench_")) for n in os.listdir(path)):
        return path
    return None


def _builtin_bench(size, repeat):
    from . import KEXEC_PRESERVE_CONTEXT, Segment
    from .machine import Machine
    from .swap import ENGINES, swap_pages
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


def _cmd_bench(args):
    path = None if args.builtin else _benchmarks_dir()
    if path is None:
        return _builtin_bench(parse_size(args.size), args.repeat)
    cmd = [sys.executable, "-m", "pytest", path, "--benchmark-enable", "-p", "no:cacheprovider"]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd + list(args.pytest_args))


# ---------------------------------------------------------------------------------- main
def _parser():
    from . import __version__
    ap = argparse.ArgumentParser(prog="kjcore", description="kjcore: Linux kexec jump (2.6.27, "
                                 "i386) simulated. Loading and running images: see kjexec.")
    ap.add_argument("--version", action="version", version=f"kjcore {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    mach = sub.add_parser("machine", help="create persistent machines")
    msub = mach.add_subparsers(dest="machine_command", metavar="ACTION", required=True)
    new = msub.add_parser("new", help="create a persistent machine directory PATH")
    new.add_argument("path", metavar="PATH")
    new.add_argument("--ram", default="64M", help="RAM size, e.g. 256M (default 64M)")
    new.add_argument("--pae", action="store_true", help="PAE paging in the first kernel")
    new.add_argument("--nx", action="store_true", help="NX (needs --pae)")
    new.add_argument("--profile", default="2.6.27", choices=PROFILES)
    new.add_argument("--crashkernel", metavar="SPEC",
                     help="reserve crash kernel memory, crashkernel= syntax (64M@16M)")
    new.add_argument("--kernel-reserved", default="4M",
                     help="RAM owned by the first kernel at the bottom (default 4M)")
    new.add_argument("--engine", default="emulated", choices=("emulated", "native"))
    new.add_argument("--alloc-seed", type=int, default=0, help="page allocator order seed")
    new.add_argument("--no-kexec-jump", action="store_true", help="CONFIG_KEXEC_JUMP=n")
    new.add_argument("--no-cap-sys-boot", action="store_true",
                     help="the caller lacks CAP_SYS_BOOT (every kexec call fails with EPERM)")
    new.add_argument("--strict-bus", action="store_true")
    new.add_argument("--fix-pae-return", action="store_true")
    new.add_argument("--force", action="store_true", help="replace an existing machine")
    new.set_defaults(func=_cmd_machine_new)

    ins = sub.add_parser("inspect", help="show a machine: images, indirection list, memory map")
    ins.add_argument("path", metavar="PATH")
    ins.add_argument("--json", action="store_true", help="machine-readable, complete output")
    ins.add_argument("--all", action="store_true", help="do not shorten long lists")
    ins.add_argument("--verify", action="store_true", help="check the RAM file's CRC-32")
    ins.set_defaults(func=_cmd_inspect)

    demo = sub.add_parser("demo", help="run the kexec jump demo (arguments go to the demo)",
                          add_help=False)
    demo.add_argument("args", nargs=argparse.REMAINDER)      # main() passes them verbatim

    fz = sub.add_parser("fuzz", help="check random kexec_load layouts, errno histogram")
    fz.add_argument("-n", type=int, default=1_000_000, help="layouts (default 1000000)")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--ram", default="64M")
    fz.add_argument("--profile", default="2.6.27", choices=PROFILES)
    fz.add_argument("--crashkernel", metavar="SPEC")
    fz.add_argument("--no-kexec-jump", action="store_true")
    fz.add_argument("--batch", type=int, default=200_000, help="layouts per step")
    fz.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress line on stderr (default: when stderr is a terminal)")
    fz.add_argument("--json", action="store_true")
    fz.add_argument("--jumps", type=int, default=0, metavar="N",
                    help="instead: an end-to-end jump campaign of N checked round trips")
    fz.add_argument("--workers", type=int, default=1, help="processes for --jumps (default 1)")
    fz.set_defaults(func=_cmd_fuzz)

    be = sub.add_parser("bench", help="run benchmarks/ with pytest-benchmark, or a built-in "
                                      "swap timing")
    be.add_argument("--builtin", action="store_true", help="built-in swap timing only")
    be.add_argument("--size", default="16M", help="built-in: image size (default 16M)")
    be.add_argument("--repeat", type=int, default=3)
    be.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    be.set_defaults(func=_cmd_bench)
    return ap


def main(argv=None):
    """Entry point of the ``kjcore`` command; returns the exit status."""
    from .store import MachineFileError
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["demo"]:
            # everything after "demo" belongs to the demo's own parser, options included
            return _cmd_demo(argv[1:])
        args = _parser().parse_args(argv)
        return args.func(args)
    except (UsageError, MachineFileError, FileNotFoundError, FileExistsError) as e:
        print(f"kjcore: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kjcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
