"""Progress bars for long work (tqdm) and the cold-start notice.

A bar is drawn on stderr only when someone can see it: when stderr is a terminal, or when asked
(``enabled=True``, a command's ``--progress``, or ``KJCORE_PROGRESS=1`` in the environment);
``--no-progress`` / ``enabled=False`` / ``KJCORE_PROGRESS=0`` turn it off.  Test runs capture
stderr (not a terminal), so they see no bars unless a test asks for one.

>>> wanted(enabled=False), wanted(enabled=True)
(False, True)
>>> with bar(3, "units", enabled=False) as b:     # draws nothing
...     b.update(3)
"""
import os
import sys

from tqdm import tqdm

#: the environment variable that forces bars (and the cold-start notice) on ("1") or off ("0")
ENV = "KJCORE_PROGRESS"
#: bytes of RAM from which a save or a verifying open shows a bar
LARGE_RAM = 256 << 20


def wanted(enabled=None, stream=None):
    """Whether to show progress: ``enabled`` if given, else ``KJCORE_PROGRESS`` if set to 0 or
    1, else whether ``stream`` (default stderr) is a terminal."""
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get(ENV)
    if env in ("0", "1"):
        return env == "1"
    stream = sys.stderr if stream is None else stream
    return stream.isatty()


def bar(total, desc, *, unit="it", enabled=None, **kw):
    """A tqdm bar of ``total`` steps on stderr, or a disabled one (same interface, draws
    nothing) when :func:`wanted` says no.  A context manager; ``update(n)`` advances it."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not wanted(enabled), file=sys.stderr,
                dynamic_ncols=True, leave=True, **kw)


def ram_bar(size, desc):
    """A bar over ``size`` bytes of RAM (a save, a verifying open): only from
    :data:`LARGE_RAM` bytes on, where the work takes long enough to watch."""
    return bar(size, desc, unit="B", unit_scale=True, unit_divisor=1024,
               enabled=False if size < LARGE_RAM else None)


def compile_notice(seconds):
    """One line on stderr: the CPU is being compiled once (about ``seconds``); shown unless
    ``KJCORE_PROGRESS=0``.  Called on a cold start (empty Numba cache, :mod:`kjcore.cpu.warmup`)."""
    if os.environ.get(ENV) == "0":
        return
    sys.stderr.write(f"kjcore: compiling the CPU once (about {seconds:.0f} s on 2 cores; "
                     f"cached for later runs)\n")
    sys.stderr.flush()
