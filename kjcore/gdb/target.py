"""The i386 target gdb sees: its description (``qXfer:features:read:target.xml``) and the
mapping between gdb's register numbers and the CPU.

gdb's i386 architecture wants the feature ``org.gnu.gdb.i386.core`` with the 16 integer
registers in its order (eax ecx edx ebx esp ebp esi edi eip eflags cs ss ds es fs gs) and the
x87 registers after them.  kjcore's CPU has no FPU (SPEC §9): those read as zero and writes to
them are ignored.  Segment registers read their selector; writing one only changes the
selector (the hidden descriptor cache stays, as after a debugger's poke on real hardware
nothing reloads it either).
"""
GENERAL = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags")
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
#: (name, size in bytes) of every register, in gdb's numbering
REGISTERS = tuple((n, 4) for n in GENERAL + SEGMENTS) + tuple(
    (f"st{i}", 10) for i in range(8)) + tuple((n, 4) for n in X87_CONTROL)
G_SIZE = sum(size for _, size in REGISTERS)

_TYPES = {"esp": "data_ptr", "ebp": "data_ptr", "eip": "code_ptr"}


def _reg_xml(n, name, size):
    if name.startswith("st"):
        return f'<reg name="{name}" bitsize="80" type="i387_ext" regnum="{n}" group="float"/>'
    group = ' group="float"' if name in X87_CONTROL else ""
    return (f'<reg name="{name}" bitsize="{8 * size}" type="{_TYPES.get(name, "int32")}" '
            f'regnum="{n}"{group}/>')


TARGET_XML = ("<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n"
              "<target version=\"1.0\">\n<architecture>i386</architecture>\n"
              "<feature name=\"org.gnu.gdb.i386.core\">\n"
              + "\n".join(_reg_xml(n, name, size) for n, (name, size) in enumerate(REGISTERS))
              + "\n</feature>\n</target>\n").encode()


def read_register(cpu, n):
    """Register ``n`` as little-endian bytes; IndexError for a number gdb does not have."""
    name, size = REGISTERS[n]
    if name in GENERAL:
        value = getattr(cpu, name)
    elif name in SEGMENTS:
        value = getattr(cpu, name).selector
    else:
        value = 0
    return int(value).to_bytes(size, "little")


def write_register(cpu, n, data):
    """Set register ``n`` from little-endian ``data`` of its exact size (ValueError else)."""
    if not 0 <= n < len(REGISTERS):
        raise IndexError(f"no register {n}")
    name, size = REGISTERS[n]
    if len(data) != size:
        raise ValueError(f"register {name} has {size} bytes, not {len(data)}")
    value = int.from_bytes(data, "little")
    if name in GENERAL:
        setattr(cpu, name, value)
    elif name in SEGMENTS:
        getattr(cpu, name).selector = value & 0xFFFF


def read_all(cpu):
    return b"".join(read_register(cpu, n) for n in range(len(REGISTERS)))


def write_all(cpu, data):
    if len(data) != G_SIZE:
        raise ValueError(f"a G packet has {G_SIZE} bytes of registers, not {len(data)}")
    at = 0
    for n, (_, size) in enumerate(REGISTERS):
        write_register(cpu, n, data[at:at + size])
        at += size
