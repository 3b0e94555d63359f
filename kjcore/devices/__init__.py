"""PC devices of a :class:`~kjcore.Machine` (SPEC §15): disks, the ATA PIO controller on
the primary channel, VGA text rendering."""
from .ata import AtaController
from .disk import SECTOR_SIZE, Disk
from .vga import vga_text

__all__ = ["AtaController", "Disk", "SECTOR_SIZE", "vga_text"]
