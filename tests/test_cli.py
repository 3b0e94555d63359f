"""The ``kjcore`` command (kjcore.cli): machine new, inspect, fuzz, bench, demo."""
import errno
import json
import subprocess
import sys

import pytest

import kjcore
from kjcore import cli
from kjcore.cli import UsageError, parse_crashkernel, parse_size
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


@pytest.mark.parametrize("args, message", [
    (["--ram", "3000"], "multiple of PAGE_SIZE"),
    (["--ram", "16M", "--nx"], "nx=True needs pae=True"),
    (["--ram", "64M", "--crashkernel", "16M"], "needs a base address"),
    (["--ram", "64M", "--crashkernel", "16M@60M"], "inside RAM"),
    (["--ram", "lots"], "not a number"),
])
def test_machine_new_errors(tmp_path, capsys, args, message):
    assert cli.main(["machine", "new", str(tmp_path / "m")] + args) == 1
    err = capsys.readouterr().err
    assert err.startswith("kjcore: error:") and message in err
    assert not (tmp_path / "m").exists()


def test_machine_new_usage_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["machine", "new", str(tmp_path / "m"), "--profile", "2.4"])
    assert info.value.code == 2


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
    assert "fuzz: 2000/2000 layouts (100%)" in cap.err


def test_bench_builtin(capsys):
    assert cli.main(["bench", "--builtin", "--size", "1M", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("memcpy", "native", "numba", "reference"):
        assert f"  {name}" in out


def test_demo_is_dispatched(monkeypatch):
    import kjcore.demo
    seen = []
    monkeypatch.setattr(kjcore.demo, "main", lambda argv: seen.append(argv) or 3)
    assert cli.main(["demo", "--ram", "32M", "-x"]) == 3
    assert seen == [["--ram", "32M", "-x"]]


def test_console_scripts(tmp_path):
    """The installed entry points run (pip install -e declares them)."""
    out = subprocess.run([sys.executable, "-c", "import sys, kjcore.cli; "
                          "sys.exit(kjcore.cli.main(['--version']))"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("kjcore ")


def test_memory_map_of_fresh_machine():
    m = kjcore.Machine(ram_size=16 * MiB, kernel_reserved=2 * MiB)
    assert cli.memory_map(m) == [(0, 2 * MiB, "kernel"), (2 * MiB, 16 * MiB, "free")]
