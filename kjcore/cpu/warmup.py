"""Cold start: compile the CPU's kernels callees-first, on two cores.

A warm process loads the step loop from Numba's cache in a fraction of a second.  A cold one
(empty cache) compiles the kernels ``core.run`` reaches and the instruction families every
jump uses (``lazy.EVERY_JUMP``; the other families and the 16-bit fast path are compiled
when the guest first needs them, :mod:`.lazy`).  Left to itself, Numba compiles them from
the top: typing a kernel compiles its callees inside it, and so on down; that nesting alone
made the cold start ~1.5x slower than compiling the same kernels bottom-up, where each
compile finds its callees ready.  So:

* when the first :class:`~kjcore.cpu.CPU` of a cold process is built, :func:`start` launches
  a helper process (``KJCORE_COMPILE_HELPER=0`` turns it off) on the same Numba cache.  It
  compiles those kernels, callees first, while this process goes on building the machine
  and loading the image (which compile kernels of their own);
* before the first run, :func:`finish` joins in with the same walk and waits for the
  helper; what the helper compiled, ``core.run`` included, loads from the cache.

The two processes schedule the kernels like a parallel ``make``: a kernel is ready once all
the kernels it calls are done (a done-file), and is claimed with an exclusive-create file
before it is compiled, so each kernel is compiled once.  This decides only the order and the
process; what is compiled is unchanged.  Whatever the helper does not deliver (it failed,
was turned off, or the cache is somewhere else) is compiled here: the walk treats the work
of a helper that is gone as its own.

The claims live in a temporary directory named after the process that owns it
(``kjcore-compile-<pid>-...``), removed when the walk ends or the process exits.  A process
killed by SIGKILL or SIGTERM cannot remove it, so every first :func:`start` of a process
removes the claims directories of owners that are gone (:func:`remove_stale_claims`).
"""
import atexit
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from numba.core.dispatcher import Dispatcher

from .. import progress
from . import core, lazy

#: seconds the walk waits for the helper's kernels before compiling them itself
HELPER_TIMEOUT = 600

_helper = None          # (Popen, claim directory, our pid) while a helper runs
_warm = False           # core.run is known to be compiled or cached


def kernels():
    """The kernels ``core.run`` reaches and the lazily compiled ones every jump uses
    (``lazy.EVERY_JUMP``), callees before callers (``run`` last), and for each the set of
    kernels it calls.

    Found by following each kernel's global names.  ``jit.inline_kernel`` ones are listed
    too: compiled ahead with the argument types their parameter names give
    (:func:`walk_args`), they are ready when their callers are typed, instead of being
    compiled inside them (the fast path's are compiled inside ``core.run``, last and alone).
    """
    order, calls = [], {}

    def visit(disp):
        if disp in calls:
            return
        calls[disp] = set()
        fn = disp.py_func
        for name in fn.__code__.co_names:
            obj = fn.__globals__.get(name)
            if isinstance(obj, Dispatcher) and obj is not disp and walk_args(obj) is not None:
                visit(obj)
                calls[disp].add(obj)
        order.append(disp)
    for slot in lazy.EVERY_JUMP:
        visit(lazy.KERNELS[slot])
    visit(core.run)
    return order, {k: calls[k] for k in order}


def walk_args(disp):
    """The argument types the walk compiles ``disp`` for (None: not one of ours)."""
    sig = getattr(disp, "kernel_signature", None)
    return sig.args if sig is not None else getattr(disp, "inline_args", None)


def _cached(disp):
    """True if ``disp`` is compiled in this process or the on-disk cache has it for the
    current source (Numba drops an index whose source stamp changed)."""
    if disp.overloads:
        return True
    cache_file = getattr(getattr(disp, "_cache", None), "_cache_file", None)
    try:
        return bool(cache_file._load_index())
    except Exception:                   # no on-disk cache, or one this Numba cannot read
        return False


def _name(disp):
    return f"{disp.py_func.__module__}.{disp.py_func.__qualname__}"


def _claim(path):
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def compile_walk(claims=None, other_alive=lambda: False, deadline=None):
    """Compile every kernel of :func:`kernels`, callees first (``run`` too: in the helper it
    overlaps the families this process compiles).

    With a claim directory shared with another process, only ready kernels nobody has
    claimed are compiled here, and the walk returns when everything left is claimed by the
    other process.  ``other_alive()`` says whether the other process still works: once it
    does not (or ``deadline``, a ``time.monotonic()`` value, has passed) its unfinished
    claims are ours.
    """
    order, calls = kernels()
    if claims is None:
        for k in order:
            k.compile(walk_args(k))             # keyed like a caller's cache lookup
        return

    def path(k, suffix=""):
        return os.path.join(claims, _name(k) + suffix)

    def done(k):
        return os.path.exists(path(k, ".done"))

    while True:
        alive = other_alive() and (deadline is None or time.monotonic() < deadline)
        todo = [k for k in order if not done(k)]
        if not todo or alive and all(os.path.exists(path(k)) for k in todo):
            return
        for k in todo:
            if all(done(c) for c in calls[k]) and (_claim(path(k)) or not alive):
                k.compile(walk_args(k))
                open(path(k, ".done"), "w").close()
                break
        else:
            time.sleep(0.02)            # waiting for a callee the other process compiles


#: name of a claims directory: the owner's pid, then mkdtemp's random part
_CLAIMS_DIR = re.compile(r"^kjcore-compile-(\d+)-")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:             # another user's live process
        return True
    return True


def remove_stale_claims(tmpdir=None):
    """Remove the claims directories (ours, in ``tmpdir``) whose owner process is gone."""
    tmpdir = tempfile.gettempdir() if tmpdir is None else tmpdir
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return
    for name in names:
        m = _CLAIMS_DIR.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(tmpdir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def start():
    """On a cold start, launch the helper process (called when a CPU is built)."""
    global _helper, _warm
    if _helper is not None or _warm:
        return
    remove_stale_claims()
    if _cached(core.run):
        _warm = True
        return
    helper = os.environ.get("KJCORE_COMPILE_HELPER", "1") != "0"
    # ~21 s / ~36 s measured on a quiet machine before lazy.py, less the ~25 % of the CPU
    # seconds lazy.py saved (docs/cpu.rst, Start-up)
    progress.compile_notice(20 if helper else 30)
    if not helper:
        return
    claims = tempfile.mkdtemp(prefix=f"kjcore-compile-{os.getpid()}-")
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from kjcore.cpu import warmup; "
             "warmup.helper_main(sys.argv[1], int(sys.argv[2]))", claims, str(os.getpid())],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    except OSError:
        shutil.rmtree(claims, ignore_errors=True)
        return
    _helper = (proc, claims, os.getpid())
    atexit.register(_abandon)


def _abandon():
    """At exit without a run: stop the helper and remove the claims."""
    global _helper
    if _helper is not None and _helper[2] == os.getpid():
        proc, claims, _ = _helper
        proc.kill()
        proc.wait()
        shutil.rmtree(claims, ignore_errors=True)
    _helper = None


def finish():
    """Before the first run: compile callees first (with the helper, if one runs)."""
    global _helper, _warm
    if _warm:
        return
    if _helper is not None and _helper[2] != os.getpid():
        _helper = None                  # a forked child: the helper belongs to the parent
    if _helper is None:
        if not _cached(core.run):
            compile_walk()
        _warm = True
        return
    proc, claims, _ = _helper
    try:
        compile_walk(claims, lambda: proc.poll() is None, time.monotonic() + HELPER_TIMEOUT)
        try:
            proc.wait(HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        _helper = None
        _warm = True
        shutil.rmtree(claims, ignore_errors=True)


def helper_main(claims, parent):
    """The helper process: walk until done; exit when ``parent`` is no longer our parent."""
    def parent_alive():
        if os.getppid() != parent:
            sys.exit(0)
        return True
    compile_walk(claims, parent_alive)
