"""``kjcore demo --bios`` tells the seed's use case and checks itself."""
import re

import pytest

import kjcore
from kjcore.commands import demo_bios
from kjcore.commands.demo import main
from kjcore.commands.grammar import UsageError


@pytest.mark.parametrize("argv", [["--bios", "--ram", "16M"],
                                  ["--bios", "--ram", "24M", "--engine", "native", "--pae"]])
def test_demo_bios_passes_its_checks(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    e820 = kjcore.Machine(int(argv[2][:-1]) << 20, bios=True).e820
    last_base, last_size, _ = e820[-1]
    last = f"e820: {last_base:016x}-{last_base + last_size - 1:016x} usable"
    assert f"  {last}\n" in out and f"|{last:<80}|" in out        # console and screen
    assert f"bios_e820: {len(e820)} entries" in out
    assert out.count(": yes\n") == 4 and "NO" not in out
    trip = re.search(r"round trip \(PM -> real mode -> INT 10h -> PM\): (\d+) guest "
                     r"instructions, (\d+) us", out)
    assert trip and 100 < int(trip.group(1)) < 2000
    assert out.rstrip().endswith("all checks passed")


def test_demo_bios_reports_a_failed_check(capsys, monkeypatch):
    """Another program (no E820 map on its console or screen) fails the demo's checks."""
    monkeypatch.setattr(demo_bios, "PROGRAM", demo_bios.PROGRAM.replace("e820", "tty"))
    assert main(["--bios", "--ram", "16M"]) == 1
    out = capsys.readouterr().out
    assert "console lists m.e820: NO" in out and "all checks FAILED" in out
    assert "first kernel's memory byte-exact (the low memory the program used included): yes" \
        in out


def test_demo_bios_needs_the_source_tree(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_bios, "PROGRAM", str(tmp_path / "bios_e820.elf"))
    with pytest.raises(UsageError, match="source tree"):
        main(["--bios"])


@pytest.mark.parametrize("option", [["--jumps", "2"], ["--image-size", "64K"]])
def test_demo_bios_refuses_options_it_would_ignore(option):
    with pytest.raises(UsageError, match="do not apply to --bios"):
        main(["--bios", *option])
