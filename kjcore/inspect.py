"""What a machine's RAM holds, page by page: the model behind ``kjcore inspect`` and the demo.

Every page frame gets one *kind* (:data:`KINDS`), decided from the allocator, the machine's
configuration and the loaded images' lists as they are in simulated RAM. :func:`memory_map`
turns the labels into ranges (``kjcore inspect``), :func:`memory_strip` into one character
per cell (the demo), and :func:`describe_machine` collects everything ``kjcore inspect``
shows as JSON-ready values.

>>> import kjcore
>>> m = kjcore.Machine(ram_size=16 << 20, kernel_reserved=2 << 20)
>>> for start, end, kind in memory_map(m):   # the BIOS: the IVT/BDA page, EBDA to 1 MiB
...     print(f"{start:#09x}-{end:#09x} {kind}")
0x0000000-0x0001000 bios
0x0001000-0x009f000 kernel
0x009f000-0x0100000 bios
0x0100000-0x0200000 kernel
0x0200000-0x1000000 free
>>> memory_strip(m, width=8)
('K.......', 2097152)
"""
import numpy as np

from .bios.layout import bios_frames
from .constants import IND_DESTINATION, IND_SOURCE, PAGE_SHIFT, PAGE_SIZE
from .kimage import flag_name

#: the kinds of page, lowest priority first (a page that is several things gets the last one):
#: ``allocated`` (not free and not accounted for by any image), ``free`` (the allocator may
#: hand it out), ``kernel`` (below ``kernel_reserved``), ``bios`` (a machine with a BIOS: the
#: frames below 1 MiB it owns, :func:`kjcore.bios.layout.bios_frames`), ``crashkernel`` (the
#: reserved region), ``crash-image`` (a loaded crash segment), ``destination`` (where the normal
#: image's segments go; only when asked for), then the frames a loaded image owns:
#: ``indirection``, ``source``, ``parked``, ``control`` and ``swap``
KINDS = ("allocated", "free", "kernel", "bios", "crashkernel", "crash-image", "destination",
         "indirection", "source", "parked", "control", "swap")
_CODE = {k: i for i, k in enumerate(KINDS)}

#: :func:`memory_strip`'s characters, by priority: a cell shows the first kind it holds
STRIP_CHARS = {"swap": "W", "control": "C", "indirection": "i", "destination": "D",
               "source": "s", "parked": "p", "crash-image": "c", "kernel": "K"}


def page_kinds(machine, *, destinations=False):
    """One code per page frame: an index into :data:`KINDS` (numpy uint8 array).

    ``destinations=True`` also marks the normal image's destination pages (they belong to
    the first kernel until a jump swaps them); :func:`memory_map` leaves them as they are.
    """
    label = np.full(machine.ram_size >> PAGE_SHIFT, _CODE["allocated"], dtype=np.uint8)
    label[machine.allocator.state()] = _CODE["free"]
    label[:machine.kernel_reserved >> PAGE_SHIFT] = _CODE["kernel"]
    if machine.bios is not None:
        frames = np.array(bios_frames())
        label[frames[frames < len(label)]] = _CODE["bios"]
    if machine.crashkernel is not None:
        start, size = machine.crashkernel
        label[start >> PAGE_SHIFT:(start + size) >> PAGE_SHIFT] = _CODE["crashkernel"]
    crash = machine.kexec_crash_image
    if crash is not None:
        for s in crash.segments:
            label[s.mem >> PAGE_SHIFT:(s.mem + s.memsz) >> PAGE_SHIFT] = _CODE["crash-image"]
        label[crash.control_page >> PAGE_SHIFT] = _CODE["control"]
    image = machine.kexec_image
    if image is not None:
        if destinations:
            label[image.destination_pages() >> PAGE_SHIFT] = _CODE["destination"]
        ind = image.indirection_pages() >> PAGE_SHIFT
        src = image.source_pages() >> PAGE_SHIFT
        own = [(p >> PAGE_SHIFT, _CODE[kind]) for p, kind in
               ((image.control_page, "control"), (image.swap_page, "swap")) if p is not None]
        label[ind] = _CODE["indirection"]
        label[src] = _CODE["source"]
        # what the image owns beyond its list, control and swap pages: the parked frames
        listed = np.concatenate((ind, src, [frame for frame, _ in own]))
        label[np.setdiff1d(image.frames_to_free(), listed)] = _CODE["parked"]
        for frame, code in own:
            label[frame] = code
    return label


def memory_map(machine):
    """The compact memory map: a list of ``(start, end, kind)`` (end exclusive) covering RAM,
    neighbouring ranges of different kinds (:data:`KINDS`, without ``destination``)."""
    label = page_kinds(machine)
    cuts = np.flatnonzero(np.diff(label)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(label)]))
    return [(int(s) << PAGE_SHIFT, int(e) << PAGE_SHIFT, KINDS[label[s]])
            for s, e in zip(starts, ends)]


def memory_strip(machine, width=64):
    """RAM as about ``width`` characters: ``(text, bytes per character)``.

    Each cell shows the first kind of :data:`STRIP_CHARS` it holds (destinations included),
    ``.`` when it holds none of them.
    """
    label = page_kinds(machine, destinations=True)
    pages = max(1, len(label) // width)
    cell = np.arange(len(label)) // pages
    present = np.zeros((cell[-1] + 1, len(KINDS)), dtype=bool)
    present[cell, label] = True
    text = np.full(len(present), ".", dtype="<U1")
    for kind, char in reversed(STRIP_CHARS.items()):
        text[present[:, _CODE[kind]]] = char
    return "".join(text), pages * PAGE_SIZE


def pairing(machine):
    """The normal image's destination -> source pairing: ``(destination, source)`` page
    addresses in list order (empty without an image)."""
    image = machine.kexec_image
    if image is None:
        return []
    return list(zip(image.destination_pages().tolist(), image.source_pages().tolist()))


def image_info(image):
    """A loaded image as JSON-ready values, its list decoded from simulated RAM."""
    listed = image.type != "crash"
    return {
        "type": image.type, "start": image.start, "head": image.head,
        "preserve_context": image.preserve_context, "control_page": image.control_page,
        "swap_page": image.swap_page,
        "segments": [{"mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz,
                      "zero": s.buf is None} for s in image.segments],
        "nr_source_pages": int(len(image.source_pages())) if listed else 0,
        "nr_indirection_pages": int(len(image.indirection_pages())) if listed else 0,
        "entries": [[flag_name(flag), addr] for flag, addr in image.entries()],
    }


def entry_runs(entries):
    """:func:`image_info`'s entries with runs of SOURCE words merged: a list of
    ``(name, count, first address, last address, first destination or None)``."""
    runs = []
    dest = 0
    for name, addr in entries:
        if name == flag_name(IND_DESTINATION):
            dest = addr
        if runs and runs[-1][0] == name == flag_name(IND_SOURCE):
            prev = runs[-1]
            runs[-1] = (name, prev[1] + 1, prev[2], addr, prev[4])
        else:
            runs.append((name, 1, addr, addr, dest if name == flag_name(IND_SOURCE) else None))
        if name == flag_name(IND_SOURCE):
            dest = (dest + PAGE_SIZE) & 0xFFFFFFFF
    return runs


def describe_machine(machine, path=None):
    """Everything ``kjcore inspect`` shows, as JSON-ready values."""
    from .machine_state import machine_config
    images = {}
    for slot in ("kexec_image", "kexec_crash_image"):
        img = getattr(machine, slot)
        images[slot] = None if img is None else image_info(img)
    return {"path": path, "config": machine_config(machine),
            "free_frames": machine.free_frames, "images": images,
            "memory_map": [{"start": s, "end": e, "kind": k} for s, e, k in memory_map(machine)]}
