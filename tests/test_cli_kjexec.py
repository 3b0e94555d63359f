"""``kjexec``: kexec-tools' command line on a persistent machine (kjcore.commands.kjexec)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from kjexec_world import (
    PHY_MODE,
    PHY_MODE_C,
    SEED_EXAMPLE,
    MiB,
    fake_reboot,
    run,
)

import kjcore
from kjcore import store
from kjcore.commands import kjexec
from kjcore.commands.kjexec_options import LONG_OPTIONS, SHORT_OPTIONS
from kjcore.loader import load_elf32
from kjcore.store import open_machine


# ------------------------------------------------------------------ the seed's usage example
@pytest.mark.parametrize("elf", [PHY_MODE, PHY_MODE_C])
def test_seed_usage_example_load(capsys, mpath, elf):
    """kexec --load-preserve-context --args-none phy_mode, on a persistent machine."""
    status, out, err = run(capsys, mpath, *SEED_EXAMPLE, elf)
    assert (status, out, err) == (0, "", "")
    m = open_machine(mpath)
    img = m.kexec_image
    with open(elf, "rb") as f:
        data = f.read()
    image = load_elf32(data)
    assert img.type == "default" and img.preserve_context
    assert img.start == image.entry == 0x1000000
    # the image's segment plus backups covering the rest of [mem-min, mem-max]
    assert img.segments[0] == image.segments[0]
    assert all(s.buf is None for s in img.segments[1:])
    assert img.segments[0].mem == 0x1000000
    assert img.segments[-1].mem + img.segments[-1].memsz == 0x2000000
    assert sum(s.memsz for s in img.segments) == 16 * MiB
    # the list decodes from the reopened RAM; the first source holds the program's bytes
    dests = img.destination_pages()
    assert len(dests) == 4096 and dests[0] == 0x1000000
    src = int(img.source_pages()[0])
    n = image.segments[0].bufsz
    assert bytes(m.ram[src:src + n]) == data[0x1000:0x1000 + n]
    assert not np.any(m.ram[src + n:src + 4096])
    assert m.ram[0x1000000:0x2000000].max() == 0        # destinations untouched at load
    assert m.kexec_crash_image is None


def test_load_replaces_and_unload(capsys, mpath):
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    free_loaded = open_machine(mpath).free_frames
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE_C)[0] == 0
    m = open_machine(mpath)
    assert m.free_frames == free_loaded and m.kexec_image.segments[0].bufsz == \
        load_elf32(open(PHY_MODE_C, "rb").read()).segments[0].bufsz
    assert run(capsys, mpath, "-u")[0] == 0
    m = open_machine(mpath)
    assert m.kexec_image is None
    assert m.free_frames == kjcore.Machine(ram_size=64 * MiB,
                                           crashkernel=(40 * MiB, 8 * MiB)).free_frames


def test_plain_load_sets_no_preserve_flag(capsys, mpath):
    assert run(capsys, mpath, "-l", "--args-none", PHY_MODE)[0] == 0
    img = open_machine(mpath).kexec_image
    assert not img.preserve_context and len(img.segments) == 1


def test_entry_override_and_debug(capsys, mpath):
    status, out, err = run(capsys, mpath, "-d", "-l", "--args-none", "--entry=0x1000010",
                           PHY_MODE)
    assert status == 0
    assert "entry       = 0x1000010 flags = 0x30000" in err and "nr_segments = 1" in err
    assert open_machine(mpath).kexec_image.start == 0x1000010


def test_load_panic_and_unload_panic(capsys, tmp_path, mpath):
    # a crash image must lie in the crashkernel region: build one there from the raw type
    raw = tmp_path / "crash.bin"
    raw.write_bytes(b"\xf4" * 100)
    status, out, err = run(capsys, mpath, "-p", "--type=raw", "--entry=0x2800000", str(raw))
    assert status == 0, err
    m = open_machine(mpath)
    crash = m.kexec_crash_image
    assert crash.type == "crash" and crash.start == 0x2800000
    assert bytes(m.ram[0x2800000:0x2800064]) == b"\xf4" * 100      # loaded in place
    assert m.kexec_image is None
    assert run(capsys, mpath, "-p", "-u")[0] == 0
    assert open_machine(mpath).kexec_crash_image is None


def test_status_and_print_ckr_size(capsys, mpath):
    assert run(capsys, mpath, "--print-ckr-size")[1] == f"{8 * MiB}\n"
    assert run(capsys, mpath, "-S")[0] == 1                         # no crash image
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    assert run(capsys, mpath, "--load-preserve-context", "-S")[0] == 0


# ------------------------------------------------------------------ jump-back helper
def test_jump_back_helper(capsys, mpath):
    status, out, err = run(capsys, mpath, "--load-jump-back-helper", "--entry=0x1234000")
    assert status == 0, err
    img = open_machine(mpath).kexec_image
    assert img.preserve_context and img.start == 0x1234000
    assert [(s.mem, s.memsz, s.bufsz) for s in img.segments] == [(0, 0, 0)]
    # refused while an image is loaded, and without an entry
    status, out, err = run(capsys, mpath, "--load-jump-back-helper", "--entry=0x1234000")
    assert status == 255 and "There is kexec kernel loaded" in err
    assert run(capsys, mpath, "-u")[0] == 0
    status, out, err = run(capsys, mpath, "--load-jump-back-helper")
    assert status == 255 and "Please specify jump back entry in command line" in err


# ------------------------------------------------------------------ errors
def test_kexec_load_failure_prints_like_kexec_tools(capsys, mpath):
    # the crash entry is outside the crashkernel region: rule 7, EADDRNOTAVAIL
    status, out, err = run(capsys, mpath, "-p", "--args-none", PHY_MODE)
    assert status == 255
    lines = err.splitlines()
    assert lines[0] == "kexec_load failed: Cannot assign requested address"
    assert lines[1] == "entry       = 0x1000000 flags = 0x30001"
    assert "segment[0].mem   = 0x1000000" in lines
    assert lines[-1].startswith("kjexec: kernel rule: ") and "rule 7" in lines[-1]


def test_kexec_load_eperm(capsys, tmp_path):
    path = str(tmp_path / "m")
    store.save_machine(kjcore.Machine(ram_size=64 * MiB, cap_sys_boot=False), path)
    status, out, err = run(capsys, path, "-l", "--args-none", PHY_MODE)
    assert status == 255 and err.startswith("kexec_load failed: Operation not permitted\n")
    status, out, err = run(capsys, path, "-u")
    assert status == 255 and err.startswith("kexec unload failed: Operation not permitted\n")


def test_preserve_context_needs_mem_max(capsys, mpath):
    status, out, err = run(capsys, mpath, "-l", "--load-preserve-context", "--args-none",
                           PHY_MODE)
    assert status == 1 and "\"--mem-max\" parameter" in err
    assert open_machine(mpath).kexec_image is None


def test_placement_outside_mem_max(capsys, mpath):
    status, out, err = run(capsys, mpath, "-l", "--args-none", "--mem-max=0xffffff", PHY_MODE)
    assert status == 255
    assert "Invalid memory segment 0x1000000 - 0x1001000" in err
    assert "kjexec: mem: segment [0x1000000, 0x1000fff] is outside" in err


def test_loader_error_names_the_field(capsys, tmp_path, mpath):
    bad = bytearray(open(PHY_MODE, "rb").read())
    bad[18] = 62                                     # e_machine = EM_X86_64
    path = tmp_path / "bad.elf"
    path.write_bytes(bytes(bad))
    status, out, err = run(capsys, mpath, "-l", "--args-none", str(path))
    assert status == 255
    assert f"{path}: e_machine: " in err and f"Cannot load {path}" in err


@pytest.mark.parametrize("args, status, message", [
    (["-l", PHY_MODE], 255, "use --args-none"),
    (["-l", "--args-none", "--initrd=x", PHY_MODE], 255, "--initrd needs purgatory"),
    (["-l", "--args-none", "--type=bzImage", PHY_MODE], 255, "Unsupported kernel type bzImage"),
    (["-l", "--args-none", "--type=raw", PHY_MODE], 255, "--entry=ADDR is required"),
    (["-l", "--args-none"], 255, "No kernel specified"),
    (["-l", "--args-none", "/nonexistent/file"], 1, "Unable to open /nonexistent/file"),
    (["-l", "--args-none", "--mem-min=12x", PHY_MODE], 1, "Bad option value in --mem-min=12x"),
    (["-l", "--args-none", "--entry=-1", PHY_MODE], 1, "Bad option value in --entry=-1"),
    (["--bogus"], 1, "option --bogus not recognized"),
    (["-e"], 1, "Nothing has been loaded!"),
    (["-p", "--args-none", PHY_MODE], 1, None),       # machine without crashkernel
    (["-s", "-l", PHY_MODE], 1, "kexec_file_load"),
])
def test_errors(capsys, tmp_path, args, status, message):
    path = str(tmp_path / "m")
    store.save_machine(kjcore.Machine(ram_size=64 * MiB), path)
    got, out, err = run(capsys, path, *args)
    assert got == status
    assert (message or "Memory for crashkernel is not reserved") in err
    assert open_machine(path).kexec_image is None


def test_not_elf_needs_type(capsys, tmp_path, mpath):
    raw = tmp_path / "x.bin"
    raw.write_bytes(b"\x90\xc3")
    status, out, err = run(capsys, mpath, "-l", str(raw))
    assert status == 255 and f"Cannot determine the file type of {raw}" in err
    status, out, err = run(capsys, mpath, "-l", "--type=raw", "--entry=0x1000000", str(raw))
    assert status == 0, err
    assert open_machine(mpath).kexec_image.segments[0].bufsz == 2


def test_machine_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(kjexec.ENV_MACHINE, raising=False)
    assert kjexec.main(["-u"]) == 1
    assert "give --machine=PATH" in capsys.readouterr().err
    assert kjexec.main(["--machine", str(tmp_path / "nope"), "-u"]) == 1
    assert "cannot open machine" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert kjexec.main(["--machine", str(tmp_path / "f"), "-u"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_concurrent_kjexec_gets_ebusy(capsys, mpath):
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(os.path.join(mpath, store.LOCK_NAME), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)             # another kjexec is mid-run
        status, out, err = run(capsys, mpath, "-l", "--args-none", PHY_MODE)
        assert status == 255 and "Device or resource busy" in err
    finally:
        os.close(fd)
    assert open_machine(mpath).kexec_image is None
    assert run(capsys, mpath, "-l", "--args-none", PHY_MODE)[0] == 0


def test_machine_from_environment(capsys, mpath, monkeypatch):
    monkeypatch.setenv(kjexec.ENV_MACHINE, mpath)
    assert kjexec.main(["-l", "--args-none", PHY_MODE]) == 0
    assert open_machine(mpath).kexec_image is not None


def test_help_and_version(capsys):
    assert kjexec.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: kjexec --machine PATH") and "--load-jump-back-helper" in out
    options = ["--" + o.rstrip("=") for o in LONG_OPTIONS]
    options += [f"-{c}" for c in SHORT_OPTIONS.replace(":", "")]
    assert [o for o in options if o not in out] == []          # every option is explained
    assert kjexec.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kjexec (kjcore ")


def test_option_order_like_getopt_long(capsys, tmp_path, mpath):
    """-p and --load-preserve-context *set* the flags: the later one wins (kexec-tools)."""
    status, out, err = run(capsys, mpath, "-p", "--load-preserve-context", "--args-none",
                           "--mem-min=0x1000000", "--mem-max=0x1ffffff", PHY_MODE)
    assert status == 0, err
    m = open_machine(mpath)
    assert m.kexec_image.preserve_context and m.kexec_crash_image is None


def test_console_script_runs(tmp_path, mpath):
    """``python -m kjcore.commands.kjexec`` behaves like the installed ``kjexec``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", "/tmp/nbc-cli"))
    out = subprocess.run([sys.executable, "-m", "kjcore.commands.kjexec", "--machine", mpath,
                          *SEED_EXAMPLE, PHY_MODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert open_machine(mpath).kexec_image.preserve_context


# ------------------------------------------------------------------ -e
def test_exec_with_contract_double(capsys, mpath, monkeypatch):
    """-e output and the save, against a double of Machine.reboot (the real one runs below)."""
    monkeypatch.setattr(kjcore.Machine, "reboot", fake_reboot(b"phy_mode: hello\n"),
                        raising=False)
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    m = open_machine(mpath)
    m.ram[m.kexec_image.swap_page + 4096:][:4] = [0x78, 0x56, 0x34, 0x12]
    store.save_machine(m, mpath)
    status, out, err = run(capsys, mpath, "-e")
    assert status == 0 and err == ""
    assert "kjexec: executing the image at 0x01000000 (preserve context" in out
    assert "debug console (port 0xe9), 16 bytes:\nphy_mode: hello\n" in out
    assert "back in the first kernel" in out and "reboot() returned 0" in out
    assert "next 'kjexec -e' enters it at 0x12345678" in out
    assert "plain 'ret'" in out
    assert "kexec failed" not in out + err
    assert open_machine(mpath).kexec_image.start == 0x12345678      # saved


def test_exec_reports_a_returned_jump_result(capsys, mpath, monkeypatch):
    """If reboot hands back kernel_kexec's JumpResult, its numbers are shown."""
    from types import SimpleNamespace

    def reboot(self, *args):
        self.kexec_image.start = 0x1000123
        return SimpleNamespace(start=0x1000123, steps=4242, pages_swapped=4096,
                               debugcon=b"hi\n", eax=3)
    monkeypatch.setattr(kjcore.Machine, "reboot", reboot, raising=False)
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    status, out, err = run(capsys, mpath, "-e")
    assert status == 0, err
    assert "3 bytes:\nhi\n" in out
    assert "(4242 steps, 4096 pages swapped, EAX = 0x3 at the image's return)" in out
    assert "enters it at 0x01000123" in out and "plain 'ret'" not in out


def test_exec_without_preserve_context(capsys, mpath, monkeypatch):
    def reboot(self, *args):
        self.state = "image"
        self.debugcon = b"new kernel\n"
        return kjcore.ExecResult(status=kjcore.cpu.Status.HLT, steps=10, pages_swapped=0,
                                 debugcon=b"new kernel\n", eip=0)
    monkeypatch.setattr(kjcore.Machine, "reboot", reboot, raising=False)
    assert run(capsys, mpath, "-l", "--args-none", PHY_MODE)[0] == 0
    status, out, err = run(capsys, mpath, "-e")
    assert status == 0, err
    assert "(no preserve context: the first kernel is replaced)" in out
    assert "new kernel" in out
    assert "the first kernel is gone: the new image now owns the machine (10 steps, " \
           "stopped: HLT)" in out


def test_exec_kexec_error(capsys, mpath, monkeypatch):
    def reboot(self, *args):
        raise kjcore.KexecError(16, "the kexec lock is held")
    monkeypatch.setattr(kjcore.Machine, "reboot", reboot, raising=False)
    assert run(capsys, mpath, "-l", "--args-none", PHY_MODE)[0] == 0
    status, out, err = run(capsys, mpath, "-e")
    assert status == 255
    assert err.splitlines() == ["kexec failed: Device or resource busy",
                                "kjexec: kernel rule: the kexec lock is held"]


def test_exec_lost_first_kernel_keeps_the_file(capsys, mpath, monkeypatch):
    def reboot(self, *args):
        self.kexec_image.start = 0xDEAD
        raise kjcore.cpu.TripleFault(13, 0, 0x1000004, None)
    monkeypatch.setattr(kjcore.Machine, "reboot", reboot, raising=False)
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    status, out, err = run(capsys, mpath, "-e")
    assert status == 255 and "the first kernel is lost: TripleFault" in err
    assert open_machine(mpath).kexec_image.start == 0x1000000        # not saved


@pytest.mark.parametrize("elf, message", [
    (PHY_MODE, b"phy_mode: hello from physical mode\n"),
    (PHY_MODE_C, b"phy_mode_c: hello from physical mode (C)\n")])
def test_seed_usage_example_exec(capsys, mpath, elf, message):
    """The seed's usage example end to end: load, then ``kexec -e`` runs phy_mode and returns."""
    assert run(capsys, mpath, *SEED_EXAMPLE, elf)[0] == 0
    status, out, err = run(capsys, mpath, "-e")
    assert status == 0, err
    assert message.decode() in out
    assert "back in the first kernel" in out and "kexec failed" not in out + err
    m = open_machine(mpath)
    img = m.kexec_image
    assert img is not None and img.preserve_context                  # not consumed
    # plain ret: the re-entry point is the word just above the swap page (SPEC 7.9); it
    # still reads the same after the swap back unless that page was swapped itself
    esp = img.swap_page + 4096
    swapped = set(img.source_pages().tolist()) | set(img.destination_pages().tolist()) \
        | set(img.indirection_pages().tolist())
    if esp not in swapped:
        assert img.start == int.from_bytes(bytes(m.ram[esp:esp + 4]), "little")
    # the destinations hold the first kernel's bytes again, the image is back in its sources
    assert m.ram[0x1000000:0x2000000].max() == 0
    code = load_elf32(open(elf, "rb").read()).segments[0]
    src = int(img.source_pages()[0])
    assert bytes(m.ram[src:src + code.bufsz]) == bytes(code.buf)
