"""kjcore's resident PC BIOS (SPEC §14.2): the ROM source and image, the memory layout, the
services.  See docs/bios.rst."""
from .layout import e820
from .services import Bios, Keyboard

__all__ = ["Bios", "Keyboard", "e820"]
