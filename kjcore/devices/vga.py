"""VGA text mode: the 80x25 screen at 0xB8000 rendered as text (SPEC §15).

The text buffer is ordinary RAM: 2000 cells of (character, attribute) bytes, row by row.
:func:`vga_text` turns the characters into a ``str`` of 25 lines with code page 437's
glyphs (NUL shows as a space; attributes are ignored) and trailing blanks removed.
"""
import numpy as np

__all__ = ["VGA_TEXT", "COLUMNS", "ROWS", "vga_text"]

#: physical address of the colour text buffer
VGA_TEXT = 0xB8000
COLUMNS, ROWS = 80, 25

_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
#: character byte -> glyph (code page 437, with its pictures for the control codes)
GLYPHS = tuple(_LOW) + tuple(bytes(range(32, 127)).decode("ascii")) + ("⌂",) + \
    tuple(bytes(range(128, 256)).decode("cp437"))


def vga_text(ram):
    """The screen in ``ram`` (a uint8 array) as 25 lines joined by newlines; cells past
    the end of RAM show as blanks."""
    cells = np.zeros(COLUMNS * ROWS * 2, np.uint8)
    avail = max(0, min(len(cells), ram.shape[0] - VGA_TEXT))
    cells[:avail] = ram[VGA_TEXT:VGA_TEXT + avail]
    chars = cells[0::2].reshape(ROWS, COLUMNS)
    return "\n".join("".join(GLYPHS[c] for c in row).rstrip() for row in chars.tolist())
