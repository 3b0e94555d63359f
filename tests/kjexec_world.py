"""Example paths and a Machine.reboot stand-in shared by the kjexec tests (the machine
fixture ``mpath`` is in conftest.py)."""
import os

import kjcore
from kjcore.commands import kjexec

MiB = 1 << 20
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
PHY_MODE = os.path.join(EXAMPLES, "phy_mode.elf")
PHY_MODE_C = os.path.join(EXAMPLES, "phy_mode_c.elf")
SEED_EXAMPLE = ["-l", "--load-preserve-context", "--args-none", "--mem-min=0x1000000",
                "--mem-max=0x1ffffff"]


def run(capsys, mpath, *args):
    status = kjexec.main(["--machine", mpath, *args])
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def fake_reboot(message, ret="plain"):
    """A stand-in for Machine.reboot honouring the SPEC 7/8 contract for a preserve-context
    image: swap in, the payload prints and returns, swap back, image.start := [ESP]."""
    from kjcore.swap import swap_pages

    def reboot(self, magic1, magic2, cmd):
        assert (magic1, magic2, cmd) == (kjcore.LINUX_REBOOT_MAGIC1, kjcore.LINUX_REBOOT_MAGIC2,
                                         kjcore.LINUX_REBOOT_CMD_KEXEC)
        img = self.kexec_image
        swap_pages(self.ram, img.head, img.swap_page)
        self.debugcon = getattr(self, "debugcon", b"") + message
        esp = img.swap_page + 4096
        img.start = int.from_bytes(bytes(self.ram[esp:esp + 4]), "little")
        swap_pages(self.ram, img.head, img.swap_page)
        return 0
    return reboot
