"""The command-line grammars both commands share: numbers, sizes and ``crashkernel=``.

Sizes take the kernel's ``memparse`` syntax (``256M``, ``0x1000000``, ``4G``), ``--crashkernel``
the ``crashkernel=`` boot parameter's (``64M@16M``, ``512M-2G:64M,2G-:128M@16M``) and
kjexec's addresses kexec-tools' ``strtoul(text, &end, 0)``.

>>> parse_size("64M"), parse_size("0x1000"), parse_size("1g")
(67108864, 4096, 1073741824)
>>> [hex(v) for v in parse_crashkernel("64M@16M", ram_size=256 << 20)]
['0x1000000', '0x4000000']
>>> strtoul("0x10"), strtoul("010"), strtoul("12x")
(16, 8, None)

Every numeric option of both commands is checked by one :func:`number` type, so a bad value
gets the same one-line message whichever command and option it was given to:

>>> RAM_SIZE("100G")
Traceback (most recent call last):
  ...
argparse.ArgumentTypeError: '100G' is not a size from 4K to 1G in multiples of 4K
"""
import argparse
import sys

from ..constants import MAX_RAM_SIZE, PAGE_SIZE, U32
from ..errors import UsageError

_SUFFIX = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
#: 32-bit kernels reserve the crash kernel below this when crashkernel= gives no base (x86)
_CRASH_ADDR_MAX = 512 << 20
_CRASH_ALIGN = 16 << 20





class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``kjcore: error: MESSAGE (see 'PROG --help')`` on
    standard error and exit status 2, instead of the usage text followed by the message."""

    def error(self, message):
        print(f"{self.prog.split()[0]}: error: {message} (see '{self.prog} --help')",
              file=sys.stderr)
        sys.exit(2)


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


def strtoul(text):
    """kexec-tools' ``strtoul(text, &end, 0)`` with ``*end`` required to be the end: an
    unsigned 32-bit value, or None when the text is not one."""
    if text.strip().startswith(("+", "-")):
        return None
    try:
        value, rest = _parse_number(text)
    except UsageError:
        return None
    return value if not rest and value <= U32 else None


def number(minimum, maximum=None, *, size=False, align=1, real=False):
    """An argparse ``type=`` for a numeric option: a whole number (``size=True``: a size in the
    ``memparse`` syntax; ``real=True``: a decimal number such as ``2.5``) from ``minimum`` to
    ``maximum`` (None: no upper bound), a multiple of ``align``. Anything else is refused
    with one line naming the rule."""
    unit = format_size if size else str
    rule = "a size" if size else "a number" if real else "a whole number"
    rule += f" of at least {unit(minimum)}" if maximum is None else \
        f" from {unit(minimum)} to {unit(maximum)}"
    if align > 1:
        rule += f" in multiples of {format_size(align)}"

    def convert(text):
        try:
            value = parse_size(text) if size else _decimal(text) if real else \
                _whole_number(text)
        except UsageError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum) \
                or (align > 1 and value % align):
            raise argparse.ArgumentTypeError(f"{text!r} is not {rule}")
        return value
    return convert


def _whole_number(text):
    value, rest = _parse_number(text)
    return None if rest else value


def _decimal(text):
    """Digits with at most one decimal point (no sign, exponent, inf or nan), or None."""
    whole, _, fraction = text.strip().partition(".")
    if not (whole + fraction).isdigit() or not (whole + fraction).isascii():
        return None
    return float(f"{whole or 0}.{fraction or 0}")


#: RAM of a simulated machine: what ``Machine(ram_size=...)`` accepts
RAM_SIZE = number(PAGE_SIZE, MAX_RAM_SIZE, size=True, align=PAGE_SIZE)
#: a seed (the page allocator's, a fuzzer's): what ``numpy.random.default_rng`` takes, 32 bits
SEED = number(0, U32)
#: how many of something (layouts, jumps, repetitions)
COUNT = number(1)
#: a guest's step budget (``--max-steps`` of kjexec -e, gdbserver, panic)
MAX_STEPS = number(1, 10 ** 15)
#: a guest's wall-clock budget in seconds (``--timeout`` of the same commands)
TIMEOUT = number(0.001, 10 ** 6, real=True)
