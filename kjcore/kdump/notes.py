"""ELF notes of a crash: the per-CPU crash-notes buffer and the i386 ``NT_PRSTATUS`` note.

When the first kernel panics with a crash image loaded, ``crash_save_cpu`` writes the
panicking CPU's registers into that CPU's crash-notes buffer, a per-CPU allocation whose
physical address ``/sys/devices/system/cpu/cpu0/crash_notes`` reports and which kexec-tools
puts in the ELF core header as a ``PT_NOTE``.  kjcore's first kernel has one CPU; its
buffer lives at :data:`CRASH_NOTES` in the per-CPU area of the first kernel's GDT page
(:mod:`kjcore.first_kernel`: per-CPU area at ``0x5200``, IDT at ``0x5800``), so it is part
of the reserved low region and never handed out.  The buffer holds one note and a
terminating empty note (:data:`KEXEC_NOTE_BYTES` = 176 bytes, 2.6.27's ``note_buf_t``);
kexec-tools 2.0 describes it with :data:`MAX_NOTE_BYTES` = 1024 bytes (the kernel exported
no size then), which here ends exactly at the IDT.

``elf_prstatus`` on i386 is 144 bytes: ``pr_info`` (signo, code, errno), ``pr_cursig``,
``pr_sigpend``, ``pr_sighold``, four pids, four ``timeval``, ``pr_reg`` (17 words in
``user_regs_struct`` order, :data:`PR_REG_NAMES`) at offset 72, ``pr_fpvalid``.

>>> regs = dict.fromkeys(PR_REG_NAMES, 0) | {"eip": 0xC0001000, "esp": 0xC000FE00}
>>> note = prstatus_note(regs, pid=1)
>>> len(note), KEXEC_NOTE_BYTES
(176, 176)
>>> [(n.name, n.type, len(n.desc)) for n in parse_notes(note)]
[(b'CORE', 1, 144)]
>>> hex(parse_prstatus(parse_notes(note)[0].desc)["eip"])
'0xc0001000'
"""
import struct
from typing import NamedTuple

#: physical address of CPU 0's crash-notes buffer (``m.crash_notes``)
CRASH_NOTES = 0x5400
#: bytes of the buffer the kernel fills: one NT_PRSTATUS note plus the empty final note
KEXEC_NOTE_BYTES = 176
#: bytes kexec-tools' PT_NOTE covers for each CPU's buffer (it cannot know the real size)
MAX_NOTE_BYTES = 1024

NT_PRSTATUS = 1
#: the note name ``crash_save_cpu`` uses
CORE_NOTE_NAME = b"CORE"

#: ``struct user_regs_struct`` (i386), the order of ``pr_reg``
PR_REG_NAMES = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs",
                "orig_eax", "eip", "cs", "eflags", "esp", "ss")
PRSTATUS_SIZE = 144
PR_PID_OFFSET = 24
PR_REG_OFFSET = 72
_NHDR = struct.Struct("<3I")


class Note(NamedTuple):
    """One ELF note: its name (without the NUL), type and descriptor bytes."""
    name: bytes
    type: int
    desc: bytes


def _pad4(n):
    return (n + 3) & ~3


def elf_note(name, note_type, desc):
    """One note in the ELF layout: header, NUL-terminated name and descriptor, each
    padded to 4 bytes."""
    name = bytes(name) + b"\0"
    return (_NHDR.pack(len(name), len(desc), note_type) + name.ljust(_pad4(len(name)), b"\0")
            + bytes(desc).ljust(_pad4(len(desc)), b"\0"))


def prstatus(regs, pid):
    """The 144-byte i386 ``elf_prstatus`` with ``pr_pid`` and ``pr_reg`` set, the rest zero
    (what ``crash_save_cpu`` fills)."""
    desc = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<I", desc, PR_PID_OFFSET, pid)
    struct.pack_into("<17I", desc, PR_REG_OFFSET,
                     *(regs[name] & 0xFFFFFFFF for name in PR_REG_NAMES))
    return bytes(desc)


def prstatus_note(regs, pid):
    """The crash-notes buffer's contents: the ``CORE``/``NT_PRSTATUS`` note and the empty
    final note (:data:`KEXEC_NOTE_BYTES` bytes)."""
    return elf_note(CORE_NOTE_NAME, NT_PRSTATUS, prstatus(regs, pid)) + bytes(_NHDR.size)


def parse_prstatus(desc):
    """``pr_reg`` of an i386 ``elf_prstatus`` as a dict (plus ``pid``); ``ValueError`` if the
    descriptor is not 144 bytes."""
    if len(desc) != PRSTATUS_SIZE:
        raise ValueError(f"NT_PRSTATUS descriptor of {len(desc)} bytes, i386 has "
                         f"{PRSTATUS_SIZE}")
    regs = dict(zip(PR_REG_NAMES, struct.unpack_from("<17I", desc, PR_REG_OFFSET)))
    regs["pid"] = struct.unpack_from("<I", desc, PR_PID_OFFSET)[0]
    return regs


def _walk(data):
    """Yield ``(Note, end offset)`` for each note of ``data`` up to the empty final note."""
    at = 0
    while at + _NHDR.size <= len(data):
        namesz, descsz, note_type = _NHDR.unpack_from(data, at)
        if namesz == 0:
            return
        name_at = at + _NHDR.size
        desc_at = name_at + _pad4(namesz)
        end = desc_at + _pad4(descsz)
        if end > len(data):
            raise ValueError(f"note at offset {at:#x} runs past the end of its segment "
                             f"({namesz:#x} name bytes, {descsz:#x} descriptor bytes)")
        yield Note(data[name_at:name_at + namesz].rstrip(b"\0"), note_type,
                   data[desc_at:desc_at + descsz]), end
        at = end


def parse_notes(data):
    """The notes in ``data`` up to the first empty one (``n_namesz == 0``) or the end, the
    way the kernel's vmcore code walks a crash-notes buffer.  Hostile input: a note whose
    sizes run past ``data`` is a ``ValueError``."""
    return [note for note, _ in _walk(bytes(data))]


def notes_size(data):
    """Bytes the notes of ``data`` take, up to (not including) the empty final note."""
    end = 0
    for _, end in _walk(bytes(data)):
        pass
    return end
