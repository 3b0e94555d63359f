"""Pictures: a machine's physical memory map and benchmark results (matplotlib).

matplotlib is the optional ``[plot]`` extra (``pip install 'kjcore[plot]'``); without it every
function here raises :class:`MatplotlibMissing`, one line saying so.  Figures are built with
matplotlib's object API (no pyplot, no global state), so they can be made from any thread.

The memory map is drawn from :mod:`kjcore.inspect`'s page model, the one behind ``kjcore
inspect``: a bar of RAM by owner (first kernel, BIOS, free, crashkernel, the image's source,
indirection, control and swap pages, ...), a bar of the normal image's destination pages above
it, and a line from each run of destinations to the source pages that hold them until a jump
swaps them in (the destination -> source pairing).

>>> import kjcore
>>> m = kjcore.Machine(ram_size=4 << 20, kernel_reserved=1 << 20)
>>> fig = memory_map_figure(m)
>>> [t.get_text() for t in fig.legends[0].get_texts()]
['free', 'kernel', 'bios']
"""
import os

import numpy as np

from .constants import PAGE_SIZE
from .errors import UsageError
from .inspect import KINDS, memory_map, pairing

#: file types :func:`save_figure` writes, by extension
FORMATS = (".png", ".svg", ".pdf")
#: colour of each page kind (:data:`kjcore.inspect.KINDS`)
COLOURS = {"allocated": "#9e9e9e", "free": "#e8f0e8", "kernel": "#4c72b0", "bios": "#8172b2",
           "crashkernel": "#ccb974", "crash-image": "#c44e52", "destination": "#55a868",
           "indirection": "#dd8452", "source": "#da8bc3", "parked": "#937860",
           "control": "#000000", "swap": "#17becf"}
#: at most this many pairing lines are drawn (runs beyond it are merged into the last ones)
MAX_PAIR_LINES = 64


class MatplotlibMissing(UsageError, ImportError):
    """matplotlib, needed for pictures, is not installed."""


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing("pictures need matplotlib: pip install 'kjcore[plot]'") from None
    return Figure


def check_target(path):
    """Refuse, before any work, a picture file kjcore cannot write: an extension other than
    :data:`FORMATS` (:class:`~kjcore.errors.UsageError`) or no matplotlib."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"cannot draw {os.fspath(path)!r}: the picture's name must end in "
                         f"{', '.join(FORMATS)}")
    _figure_class()
    return path


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (its type from the extension, :func:`check_target`)."""
    check_target(path)
    fig.savefig(os.fspath(path), dpi=100)
    return path


def _runs(starts, length):
    """Merge sorted page addresses into ``(start, width)`` runs."""
    runs = []
    for s in starts:
        if runs and runs[-1][0] + runs[-1][1] == s:
            runs[-1][1] += length
        else:
            runs.append([s, length])
    return runs


def _pair_runs(pairs):
    """Destination -> source pairs merged where both advance by a page: ``(dest, src, n)``."""
    runs = []
    for d, s in pairs:
        if runs and runs[-1][0] + runs[-1][2] * PAGE_SIZE == d and \
                runs[-1][1] + runs[-1][2] * PAGE_SIZE == s:
            runs[-1][2] += 1
        else:
            runs.append([d, s, 1])
    return runs


def memory_map_figure(machine, title=None):
    """The physical memory map of ``machine`` as a matplotlib Figure (10 x 3.2 inches)."""
    Figure = _figure_class()
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    mib = float(1 << 20)
    total = machine.ram_size
    least = total / 600                      # a single page stays visible on a large machine
    shown = []
    for start, end, kind in memory_map(machine):
        ax.broken_barh([(start / mib, max(end - start, least) / mib)], (0, 1),
                       facecolor=COLOURS[kind], edgecolor="none")
        if kind not in shown:
            shown.append(kind)
    pairs = pairing(machine)
    if pairs:
        dests = _runs(sorted(d for d, _ in pairs), PAGE_SIZE)
        ax.broken_barh([(s / mib, max(w, least) / mib) for s, w in dests], (1.6, 1),
                       facecolor=COLOURS["destination"], edgecolor="none")
        shown.append("destination")
        runs = _pair_runs(pairs)
        step = max(1, -(-len(runs) // MAX_PAIR_LINES))
        for d, s, n in runs[::step]:
            ax.annotate("", xy=((s + n * PAGE_SIZE / 2) / mib, 1.0),
                        xytext=((d + n * PAGE_SIZE / 2) / mib, 1.6),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=0.6))
    ax.set_xlim(0, total / mib)
    ax.set_ylim(-0.2, 2.8)
    ax.set_yticks([0.5, 2.1] if pairs else [0.5],
                  ["RAM", "destinations"] if pairs else ["RAM"])
    ax.set_xlabel("physical address (MiB)")
    ax.set_title(title or f"physical memory of a {total >> 20} MiB machine")
    handles = [_patch(COLOURS[k], k) for k in sorted(shown, key=KINDS.index)]
    if pairs:
        handles.append(_line("#555555", "destination \u2192 source"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize="small", frameon=False)
    fig.set_layout_engine("constrained")
    return fig


def _patch(colour, label):
    from matplotlib.patches import Patch
    return Patch(facecolor=colour, edgecolor="#444444", linewidth=0.3, label=label)


def _line(colour, label):
    from matplotlib.lines import Line2D
    return Line2D([], [], color=colour, lw=1, marker=">", markersize=4, label=label)


def save_memory_map(machine, path, title=None):
    """Draw :func:`memory_map_figure` to ``path`` (.png, .svg or .pdf); returns ``path``."""
    check_target(path)
    return save_figure(memory_map_figure(machine, title), path)


def benchmark_figure(results):
    """pytest-benchmark results (the parsed ``--benchmark-json`` file) as a Figure: each
    benchmark's mean time with its standard deviation, on a log scale."""
    Figure = _figure_class()
    rows = sorted(((b["name"], b["stats"]["mean"], b["stats"]["stddev"])
                   for b in results.get("benchmarks", [])), key=lambda r: r[1])
    if not rows:
        raise ValueError("no benchmarks in these results")
    names, means, devs = zip(*rows)
    fig = Figure(figsize=(9, 1 + 0.35 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, means, xerr=devs, color=COLOURS["kernel"], label="mean (\u00b1 std dev)")
    ax.set_yticks(y, names, fontsize="small")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per round")
    machine = results.get("machine_info", {})
    ax.set_title(f"kjcore benchmarks ({machine.get('cpu', {}).get('brand_raw', 'this machine')})",
                 fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    fig.set_layout_engine("constrained")
    return fig
