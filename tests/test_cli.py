"""The ``kjcore`` command (kjcore.commands.main): machine new, inspect, fuzz, bench, demo."""
import errno
import json
import subprocess
import sys

import numpy as np
import pytest

import kjcore
from kjcore.commands import main as cli
from kjcore.commands.grammar import UsageError, parse_crashkernel, parse_size
from kjcore.inspect import KINDS, memory_map, memory_strip, page_kinds
from kjcore.store import open_machine, save_machine

MiB = 1 << 20


# ------------------------------------------------------------------ size syntax
@pytest.mark.parametrize("text, value", [("4096", 4096), ("0x1000", 4096), ("010", 8),
                                         ("64M", 64 * MiB), ("64m", 64 * MiB),
                                         ("1G", 1 << 30), ("512k", 512 << 10), ("0", 0),
                                         ("0x10M", 16 * MiB)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "12Q", "0xg", "1.5M", "64MB"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_parse_crashkernel():
    assert parse_crashkernel("64M@16M", 256 * MiB) == (16 * MiB, 64 * MiB)
    # range syntax: the first range containing the RAM size decides
    spec = "0-128M:8M,128M-1G:32M,1G-:64M@48M"
    assert parse_crashkernel(spec, 64 * MiB) == (48 * MiB, 8 * MiB)
    assert parse_crashkernel(spec, 128 * MiB) == (48 * MiB, 32 * MiB)
    with pytest.raises(UsageError, match="no range matches"):
        parse_crashkernel("1G-:64M@16M", 256 * MiB)
    with pytest.raises(UsageError, match="needs a base address"):
        parse_crashkernel("64M", 256 * MiB, "2.6.27")
    # mainline picks a 16 MiB-aligned base as high as possible below 512 MiB
    assert parse_crashkernel("64M", 256 * MiB, "mainline") == (192 * MiB, 64 * MiB)
    assert parse_crashkernel("64M", 1 << 30, "mainline") == (448 * MiB, 64 * MiB)


# ------------------------------------------------------------------ machine new
def test_machine_new_and_inspect(tmp_path, capsys):
    path = str(tmp_path / "m")
    assert cli.main(["machine", "new", path, "--ram", "64M", "--pae", "--nx", "--profile",
                     "mainline", "--crashkernel", "16M@32M", "--alloc-seed", "5"]) == 0
    assert "created machine" in capsys.readouterr().out
    m = open_machine(path)
    assert (m.ram_size, m.pae, m.nx, m.profile) == (64 * MiB, True, True, "mainline")
    assert m.crashkernel == (32 * MiB, 16 * MiB) and m.allocator.seed == 5
    assert cli.main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "kexec_image: none" in out and "crashkernel 16M@32M" in out
    assert "0x02000000-0x02ffffff  crashkernel" in out


def test_machine_new_refuses_existing(tmp_path, capsys):
    path = str(tmp_path / "m")
    assert cli.main(["machine", "new", path, "--ram", "16M"]) == 0
    assert cli.main(["machine", "new", path, "--ram", "32M"]) == 1
    assert "already exists (--force" in capsys.readouterr().err
    assert cli.main(["machine", "new", path, "--ram", "32M", "--force"]) == 0
    assert open_machine(path).ram_size == 32 * MiB
    (tmp_path / "f").write_text("x")
    assert cli.main(["machine", "new", str(tmp_path / "f"), "--force"]) == 1


@pytest.mark.parametrize("args, status, message", [
    (["--ram", "3000"], 2, "'3000' is not a size from 4K to 1G in multiples of 4K"),
    (["--ram", "lots"], 2, "'lots' is not a size"),
    (["--ram", "16M", "--kernel-reserved", "16M"], 1, "below ram_size"),
    (["--ram", "16M", "--nx"], 1, "nx=True needs pae=True"),
    (["--ram", "64M", "--crashkernel", "16M"], 1, "needs a base address"),
    (["--ram", "64M", "--crashkernel", "16M@60M"], 1, "inside RAM"),
    (["--profile", "2.4"], 2, "invalid choice: '2.4'"),
])
def test_machine_new_errors(tmp_path, capsys, args, status, message):
    assert cli.main(["machine", "new", str(tmp_path / "m")] + args) == status
    err = capsys.readouterr().err
    assert err.startswith("kjcore: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ every command's options
@pytest.mark.parametrize("argv, message", [
    (["machine", "new", "M", "--ram", "100G"], "argument --ram: '100G' is not a size from 4K "
                                               "to 1G in multiples of 4K"),
    (["fuzz", "--ram", "100G"], "argument --ram: '100G' is not a size from 4K to 1G in "
                                "multiples of 4K"),
    (["demo", "--ram", "3G"], "argument --ram: '3G' is not a size from 4K to 1G in multiples "
                              "of 4K"),
    (["fuzz", "-n", "-5"], "argument -n: '-5' is not a whole number of at least 1"),
    (["fuzz", "--batch", "0"], "argument --batch: '0' is not a whole number from 1 to 2000000"),
    (["fuzz", "--jumps", "-5"], "argument --jumps: '-5' is not a whole number of at least 1"),
    (["fuzz", "--jumps", "5", "--workers", "0"], "argument --workers: '0' is not a whole "
                                                 "number from 1 to 256"),
    (["fuzz", "--seed", "1.5"], "argument --seed: '1.5' is not a whole number from 0 to "
                                "4294967295"),
    (["demo", "--jumps", "0"], "argument --jumps: '0' is not a whole number of at least 1"),
    (["demo", "--image-size", "0"], "argument --image-size: '0' is not a size from 4K to 1G"),
    (["machine", "new", "M", "--alloc-seed", "-1"], "argument --alloc-seed: '-1' is not a "
                                                    "whole number from 0 to 4294967295"),
    (["machine", "new", "M", "--kernel-reserved", "1K"], "argument --kernel-reserved: '1K' is "
                                                         "not a size from 64K to 1G"),
    (["bench", "--builtin", "--size", "0"], "argument --size: '0' is not a size from 4K to 256M"),
    (["bench", "--builtin", "--repeat", "0"], "argument --repeat: '0' is not a whole number "
                                              "from 1 to 1000"),
])
def test_numeric_options_are_validated(tmp_path, monkeypatch, capsys, argv, message):
    """One rule per option, one line of error, exit status 2, nothing run."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"kjcore: error: {message}")
    assert not (tmp_path / "M").exists()


@pytest.mark.parametrize("argv, message", [
    (["fuzz", "--workers", "2"], "--workers applies to --jumps only"),
    (["fuzz", "--jumps", "5", "-n", "100"], "-n applies to the layout fuzzer, not to --jumps"),
    (["fuzz", "--jumps", "5", "--ram", "16M"], "--ram applies to the layout fuzzer"),
    (["fuzz", "--jumps", "5", "--json"], "--json applies to the layout fuzzer"),
    (["inspect", "M", "--json", "--all"], "--all has no effect with --json"),
    (["bench", "--builtin", "--", "-k", "swap"], "pytest arguments need the benchmark suite"),
    (["bench", "--size", "1M"], "--size applies to the built-in timing (--builtin)"),
])
def test_options_a_mode_ignores_are_refused(capsys, argv, message):
    assert cli.main(argv) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == f"kjcore: error: {message}\n" or \
        cap.err.startswith(f"kjcore: error: {message}") and cap.err.count("\n") == 1


def _options_without_help(text):
    """Option lines of argparse's --help output that carry no help text."""
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines):
        if line.startswith("  ") and line[2] != " ":         # an option or positional
            same_line = "  " in line.strip()
            next_line = i + 1 < len(lines) and lines[i + 1].startswith(" " * 8) \
                and lines[i + 1].strip()
            if not (same_line or next_line):
                bad.append(line.strip())
    return bad


@pytest.mark.parametrize("argv", [[], ["machine"], ["machine", "new"], ["inspect"], ["fuzz"],
                                  ["bench"], ["demo"]])
def test_help_is_plain_text_and_complete(capsys, argv):
    try:
        status = cli.main(argv + ["--help"])
    except SystemExit as e:                 # argparse's own exit, before main() returned it
        status = e.code
    assert status == 0
    out = capsys.readouterr().out
    for rst in ("``", ":mod:", ":func:", ":class:", "::", ".. "):
        assert rst not in out
    assert _options_without_help(out) == []


def test_oserror_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["machine", "new", str(tmp_path / "f" / "m"), "--ram", "16M"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kjcore: error: ") and err.count("\n") == 1
    assert "Not a directory" in err


@pytest.mark.parametrize("argv, message", [
    (["--ram", "4M"], "kernel_reserved=0x400000 must be page-aligned, at least 64 KiB and "
                      "below ram_size"),
    (["--ram", "8M", "--image-size", "8M"], "[Errno 12] Cannot allocate memory"),
])
def test_demo_errors_are_one_line(capsys, argv, message):
    assert cli.main(["demo", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kjcore: error: {message}") and err.count("\n") == 1


def test_interrupt_is_one_line_and_130(monkeypatch, capsys):
    from kjcore.commands import demo

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "main", interrupted)
    assert cli.main(["demo"]) == 130
    assert capsys.readouterr().err == "kjcore: interrupted\n"


# ------------------------------------------------------------------ inspect
@pytest.fixture
def loaded(tmp_path):
    m = kjcore.Machine(ram_size=32 * MiB, crashkernel=(16 * MiB, 8 * MiB))
    m.kexec_load(0x800000, [kjcore.Segment(b"\x90" * 5000, 0x800000, 0x2000),
                            kjcore.Segment.zero(0, 0x900000, 0x3000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    m.kexec_load(16 * MiB, [kjcore.Segment(b"crash", 16 * MiB, 0x1000)], kjcore.KEXEC_ON_CRASH)
    path = tmp_path / "m"
    save_machine(m, path)
    return m, str(path)


def test_inspect_json(loaded, capsys):
    m, path = loaded
    assert cli.main(["inspect", path, "--json", "--verify"]) == 0
    desc = json.loads(capsys.readouterr().out)
    img = desc["images"]["kexec_image"]
    assert img["start"] == 0x800000 and img["preserve_context"]
    assert img["control_page"] == m.kexec_image.control_page
    assert img["swap_page"] == m.kexec_image.swap_page
    names = {1: "DESTINATION", 2: "INDIRECTION", 4: "DONE", 8: "SOURCE"}
    assert img["entries"] == [[names[f], a] for f, a in m.kexec_image.entries()]
    assert img["nr_source_pages"] == 5 and img["nr_indirection_pages"] == 1
    assert [s["zero"] for s in img["segments"]] == [False, True]
    crash = desc["images"]["kexec_crash_image"]
    assert crash["type"] == "crash" and crash["swap_page"] is None
    # the memory map tiles RAM exactly and agrees with the allocator and the image
    mm = desc["memory_map"]
    assert mm[0]["start"] == 0 and mm[-1]["end"] == m.ram_size
    assert all(a["end"] == b["start"] and a["kind"] != b["kind"] for a, b in zip(mm, mm[1:]))
    pages = {}
    for r in mm:
        for p in range(r["start"], r["end"], 4096):
            pages[p] = r["kind"]
    assert all(pages[int(p)] == "source" for p in m.kexec_image.source_pages())
    assert pages[m.kexec_image.swap_page] == "swap"
    assert pages[m.kexec_image.control_page] == "control"
    assert pages[m.kexec_crash_image.control_page] == "control"
    assert pages[16 * MiB] == "crash-image" and pages[16 * MiB + 8192] == "crashkernel"
    assert sum(k == "free" for k in pages.values()) == m.free_frames
    assert "allocated" not in pages.values()


def test_inspect_text(loaded, capsys):
    m, path = loaded
    assert cli.main(["inspect", path]) == 0
    out = capsys.readouterr().out
    img = m.kexec_image
    assert "kexec_image: default, preserve context, start 0x00800000" in out
    assert f"control page  {img.control_page:#010x}" in out
    assert f"swap page     {img.swap_page:#010x}" in out
    assert "(zero buffer)" in out and "SOURCE       x3" in out
    assert "kexec_crash_image: crash" in out


@pytest.mark.parametrize("make", ["missing", "file", "foreign"])
def test_inspect_errors(tmp_path, capsys, make):
    path = tmp_path / "m"
    if make == "file":
        path.write_text("hello")
    elif make == "foreign":
        path.mkdir()
        (path / "x").write_text("hello")
    assert cli.main(["inspect", str(path)]) == 1
    assert capsys.readouterr().err.startswith("kjcore: error:")


# ------------------------------------------------------------------ fuzz, bench, demo
def test_fuzz_histogram_matches_check_layouts(capsys):
    from kjcore.fuzz import check_layouts, random_layouts
    assert cli.main(["fuzz", "-n", "3000", "--batch", "1000", "--seed", "7", "--ram", "16M",
                     "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = {}
    for k in range(3):
        err = check_layouts(random_layouts(1000, seed=7 + 1000 * k, ram_size=16 * MiB),
                            ram_size=16 * MiB)
        for e in err.tolist():
            name = "OK" if e == 0 else errno.errorcode[e]
            want[name] = want.get(name, 0) + 1
    assert got["errno"] == want and got["layouts"] == 3000 and got["layouts_per_second"] > 0


def test_fuzz_text_and_progress(capsys):
    assert cli.main(["fuzz", "-n", "2000", "--batch", "500", "--ram", "16M",
                     "--profile", "mainline", "--crashkernel", "4M@8M", "--progress"]) == 0
    cap = capsys.readouterr()
    assert "errno histogram of 2000 layouts (profile mainline" in cap.out
    assert "M layouts/s" in cap.out
    assert "fuzz: 100%" in cap.err and "2000/2000" in cap.err     # a tqdm bar (kjcore.progress)


def test_bench_builtin(capsys):
    assert cli.main(["bench", "--builtin", "--size", "1M", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("memcpy", "native", "numba", "reference"):
        assert f"  {name}" in out


def test_bench_collects_the_benchmarks(capfd):
    """``kjcore bench`` (``pytest benchmarks --benchmark-enable``) finds the bench_*.py files
    (the default run does not: benchmarks/ is outside testpaths)."""
    assert cli.main(["bench", "--", "--collect-only", "-q"]) == 0
    out = capfd.readouterr().out
    assert "bench_fuzz.py::test_check_layouts_throughput" in out
    assert "bench_jump.py::test_round_trip" in out


def test_demo_is_dispatched(monkeypatch):
    import kjcore.commands.demo
    seen = []
    monkeypatch.setattr(kjcore.commands.demo, "main", lambda argv: seen.append(argv) or 3)
    assert cli.main(["demo", "--ram", "32M", "-x"]) == 3
    assert seen == [["--ram", "32M", "-x"]]


def test_console_scripts(tmp_path):
    """The installed entry points run (pip install -e declares them)."""
    out = subprocess.run([sys.executable, "-c", "import sys, kjcore.commands.main as m; "
                          "sys.exit(m.main(['--version']))"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("kjcore ")


def test_memory_map_of_fresh_machine():
    m = kjcore.Machine(ram_size=16 * MiB, kernel_reserved=2 * MiB, bios=False)
    assert memory_map(m) == [(0, 2 * MiB, "kernel"), (2 * MiB, 16 * MiB, "free")]
    m = kjcore.Machine(ram_size=16 * MiB, kernel_reserved=2 * MiB)    # the BIOS's frames
    assert memory_map(m) == [(0, 0x1000, "bios"), (0x1000, 0x9F000, "kernel"),
                             (0x9F000, MiB, "bios"), (MiB, 2 * MiB, "kernel"),
                             (2 * MiB, 16 * MiB, "free")]


def test_page_kinds_account_for_every_frame_the_image_owns():
    m = kjcore.Machine(ram_size=16 * MiB)
    m.kexec_load(4 * MiB, [kjcore.Segment.zero(0, 4 * MiB, 11 * MiB)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    kinds = page_kinds(m)
    owned = np.isin(kinds, [KINDS.index(k) for k in
                            ("indirection", "source", "parked", "control", "swap")])
    assert np.array_equal(np.flatnonzero(owned), np.sort(m.kexec_image.frames_to_free()))
    assert (kinds == KINDS.index("free")).sum() == m.free_frames
    with_dest = page_kinds(m, destinations=True)
    assert set(np.flatnonzero(with_dest == KINDS.index("destination"))) <= \
        set((m.kexec_image.destination_pages() >> 12).tolist())
    strip, cell = memory_strip(m, width=16)
    assert (strip, cell) == ("K" * 4 + strip[4:], MiB) and len(strip) == 16
    assert "W" in strip and "." not in strip[4:15]
