"""VGA text rendering (kjcore.devices.vga, SPEC §15): 0xB8000 as 25 lines of 80 cells."""
import numpy as np

import kjcore
from kjcore.devices.vga import GLYPHS, vga_text


def _put(ram, row, col, text, attr=0x07):
    for i, ch in enumerate(text):
        at = 0xB8000 + 2 * (80 * row + col + i)
        ram[at:at + 2] = [ch, attr]


def test_blank_screen_is_25_empty_lines():
    m = kjcore.Machine(16 << 20)
    assert m.vga_text() == "\n" * 24


def test_cells_rows_and_attributes():
    m = kjcore.Machine(16 << 20)
    _put(m.ram, 0, 0, b"Hi \x01", attr=0x4F)
    _put(m.ram, 12, 70, b"0123456789")          # last column of row 12
    m.ram[0xB8000 + 2 * (80 * 24 + 79)] = 0xDB
    lines = m.vga_text().split("\n")
    assert len(lines) == 25 and lines[0] == "Hi ☺"
    assert lines[12] == " " * 70 + "0123456789" and lines[13] == ""
    assert lines[24] == " " * 79 + "█"


def test_code_page_437_glyphs():
    assert len(GLYPHS) == 256 and GLYPHS[0] == " " and GLYPHS[ord("A")] == "A"
    assert (GLYPHS[0x7F], GLYPHS[0xB0], GLYPHS[0xC9], GLYPHS[0xE1]) == ("⌂", "░", "╔", "ß")


def test_ram_ending_inside_the_screen_shows_blanks():
    ram = np.full(0xB8000 + 2 * 80, 0x41, np.uint8)      # one row of RAM: 'A' on 'A'
    lines = vga_text(ram).split("\n")
    assert lines[0] == "A" * 80 and lines[1:] == [""] * 24
    assert vga_text(np.zeros(4096, np.uint8)) == "\n" * 24
