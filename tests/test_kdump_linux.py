"""kjexec --args-linux: normal, preserve-context and crash loads as kexec-tools 2.0.1 builds
them (zero page, command line, purgatory, backup, elfcorehdr), and its hostile inputs."""
import io

import numpy as np
import pytest
from bootparam_model import model_params
from elftools.elf.elffile import ELFFile
from kdump_world import CAPTURE_AT, CRASHKERNEL, PRINT_CMDLINE, capture_elf

import kjcore
from kjcore.commands import kjexec
from kjcore.first_kernel import STACK_BOTTOM, STACK_TOP
from kjcore.kdump.notes import CRASH_NOTES, KEXEC_NOTE_BYTES
from kjcore.kdump.ranges import memory_map
from kjcore.store import open_machine, save_machine

MiB = 1 << 20
CONSOLE = "console=ttyS0 root=/dev/sda1"


@pytest.fixture
def files(tmp_path):
    cap = tmp_path / "capture.elf"
    cap.write_bytes(capture_elf())
    back = tmp_path / "capture-ret.elf"          # prints, then returns: a kexec jump peer
    back.write_bytes(capture_elf(code=PRINT_CMDLINE[:-1] + b"\xc3"))
    return tmp_path, str(cap), str(back)


def machine(path, **kw):
    kw.setdefault("ram_size", 64 * MiB)
    save_machine(kjcore.Machine(**kw), path)
    return str(path)


def kjexec_run(capsys, mpath, *args):
    status = kjexec.main(["--machine", mpath, *args])
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def param_segment(image):
    seg = next(s for s in image.segments if bytes(s.read(0x202, 4)) == b"HdrS")
    return seg, bytes(seg.read(0, seg.bufsz))


def core_header(m, image):
    text = param_segment(image)[1][0x1000:].split(b"\0")[0]
    addr = int(text.rsplit(b"elfcorehdr=", 1)[1].rstrip(b"K")) * 1024
    seg = next(s for s in image.segments if s.mem == addr)
    return addr, ELFFile(io.BytesIO(bytes(seg.read(0, seg.bufsz))))


@pytest.mark.parametrize("bios", [False, True])
def test_crash_load_as_kexec_tools_builds_it(files, capsys, bios):
    tmp, cap, _ = files
    mpath = machine(tmp / "m", crashkernel=CRASHKERNEL, bios=bios)
    status, _, err = kjexec_run(capsys, mpath, "-p", "--args-linux",
                                f"--command-line={CONSOLE}", cap)
    assert status == 0, err
    m = open_machine(mpath)
    image = m.kexec_crash_image
    top = sum(CRASHKERNEL)
    mems = [(s.mem, s.memsz) for s in image.segments]
    # kernel; purgatory and the parameters at the lowest holes; backup and elfcorehdr at the
    # highest (backup first: its 640 KiB take the top of the crashkernel region)
    assert mems == [(CAPTURE_AT, 0x1000), (CAPTURE_AT + 0x1000, 0x1000),
                    (CAPTURE_AT + 0x2000, 0x4000), (top - 0xA0000 - 0x4000, 0x4000),
                    (top - 0xA0000, 0xA0000)]
    elfcorehdr = top - 0xA0000 - 0x4000
    cmdline = (f"{CONSOLE} memmap=exactmap memmap=640K@0K memmap=15728K@16384K "
               f"elfcorehdr={elfcorehdr // 1024}K").encode()
    seg, params = param_segment(image)
    assert params == model_params(seg.mem, cmdline, memory_map(m))[:len(params)]
    addr, elf = core_header(m, image)
    assert addr == elfcorehdr and elf.elfclass == 32 and elf["e_type"] == "ET_CORE"
    assert elf["e_machine"] == "EM_386"
    phdrs = [(p["p_type"], p["p_offset"], p["p_paddr"], p["p_vaddr"], p["p_memsz"],
              p["p_filesz"]) for p in elf.iter_segments()]
    first = (0xA0000 if not bios else 0x100000)
    assert phdrs == [
        ("PT_NOTE", CRASH_NOTES, CRASH_NOTES, 0, 1024, 1024),
        ("PT_LOAD", top - 0xA0000, 0, 0xC0000000, 0xA0000, 0xA0000),   # the backup copy
        ("PT_LOAD", first, first, 0xC0000000 + first, 16 * MiB - first, 16 * MiB - first),
        ("PT_LOAD", top, top, 0xC0000000 + top, 64 * MiB - top, 64 * MiB - top)]


def test_panic_enters_the_capture_kernel_through_purgatory(files, capsys):
    tmp, cap, _ = files
    mpath = machine(tmp / "m", crashkernel=CRASHKERNEL)
    assert kjexec_run(capsys, mpath, "-p", "--args-linux", f"--append={CONSOLE}", cap)[0] == 0
    m = open_machine(mpath)
    low = m.ram[:0xA0000].copy()
    r = m.panic("capture")
    assert r.state == "crash-kernel" and r.result.eip == CAPTURE_AT + len(PRINT_CMDLINE)
    # the capture kernel printed the command line ESI's zero page points at
    assert m.debugcon.startswith(f"{CONSOLE} memmap=exactmap".encode())
    # purgatory copied the first 640 KiB (as machine_kexec left it) to the backup segment
    backup = sum(CRASHKERNEL) - 0xA0000
    assert np.array_equal(m.ram[backup:backup + 0xA0000], m.ram[:0xA0000])
    changed = np.flatnonzero(m.ram[:0xA0000] != low)
    allowed = [(CRASH_NOTES, CRASH_NOTES + KEXEC_NOTE_BYTES), (STACK_BOTTOM, STACK_TOP),
               *[(t, t + 4096) for t in m.first_kernel.kexec_tables()]]
    assert all(any(a <= x < b for a, b in allowed) for x in changed)


def test_normal_load_and_exec(files, capsys):
    tmp, cap, _ = files
    mpath = machine(tmp / "m")
    status, out, err = kjexec_run(capsys, mpath, "-f", "--args-linux", "--command-line=quiet",
                                  cap)
    assert status == 0, err
    assert "quiet\n" in out and "the first kernel is gone" in out


def test_preserve_context_load_and_jump(files, capsys):
    tmp, _, back = files
    mpath = machine(tmp / "m")
    status, _, err = kjexec_run(capsys, mpath, "-l", "--load-preserve-context", "--args-linux",
                                "--mem-min=0x1000000", "--mem-max=0x11fffff",
                                "--command-line=snapshot", "--elf64-core-headers", back)
    assert status == 0, err
    m = open_machine(mpath)
    addr, elf = core_header(m, m.kexec_image)
    assert elf.elfclass == 64 and elf["e_machine"] == "EM_386"
    # no hard-coded 640 KiB and no backup segment; reserved = [0xa0000, mem_max]
    assert [(p["p_type"], p["p_paddr"], p["p_memsz"]) for p in elf.iter_segments()] == [
        ("PT_NOTE", CRASH_NOTES, 1024), ("PT_LOAD", 0x1200000, 64 * MiB - 0x1200000)]
    text = param_segment(m.kexec_image)[1][0x1000:].split(b"\0")[0].decode()
    assert text.startswith("snapshot memmap=exactmap memmap=640K@0K memmap=")
    status, out, err = kjexec_run(capsys, mpath, "-e")
    assert status == 0, err
    assert "snapshot memmap=exactmap" in out and "back in the first kernel" in out


def test_command_line_characters_pass_through(files, capsys):
    tmp, cap, _ = files
    mpath = machine(tmp / "m")
    assert kjexec_run(capsys, mpath, "-l", "--args-linux", "--command-line=a\tb\né", cap)[0] == 0
    params = param_segment(open_machine(mpath).kexec_image)[1]
    assert params[0x1000:0x1008] == "a\tb\né".encode() + b"\0\0"


@pytest.mark.parametrize("args, status, message", [
    (["-p", "--args-linux", "--command-line=" + "x" * 2040], 1, "Command line overflow"),
    (["-l", "--args-linux", "--command-line=a\0b"], 1, "cannot hold a NUL byte"),
    (["-l", "--args-none", "--command-line=x"], 255, "has no effect without --args-linux"),
    (["-l", "--args-linux", "--type=raw", "--entry=0x1000000"], 255, "need an ELF kernel"),
    (["-l", "--args-linux", "--initrd=x"], 255, "--initrd needs purgatory features"),
    (["-l", "--load-preserve-context", "--args-linux", "--mem-max=0x9ffff"], 255,
     "Too small mem_max: 0x9ffff."),
])
def test_hostile_linux_loads(files, capsys, args, status, message):
    tmp, cap, _ = files
    mpath = machine(tmp / "m", crashkernel=CRASHKERNEL)
    got, _, err = kjexec_run(capsys, mpath, *args, cap)
    assert (got, message in err) == (status, True), err


def test_crash_load_needs_the_crashkernel_region(files, capsys):
    tmp, cap, _ = files
    status, _, err = kjexec_run(capsys, machine(tmp / "m"), "-p", "--args-linux", cap)
    assert status == 1 and "Memory for crashkernel is not reserved" in err
    small = machine(tmp / "small", crashkernel=(16 * MiB, 512 << 10))
    status, _, err = kjexec_run(capsys, small, "-p", "--args-linux", cap)
    assert status == 1 and "Could not find a free area of memory of 0xa0000 bytes" in err
    assert "locate_hole failed" in err


def test_a_long_command_line_is_cut_like_kexec_tools_does(files, capsys):
    tmp, cap, _ = files
    mpath = machine(tmp / "m")
    status, _, err = kjexec_run(capsys, mpath, "-l", "--args-linux",
                                "--command-line=" + "y" * 3000, cap)
    assert status == 0 and "cut to 2047 bytes" in err
    params = param_segment(open_machine(mpath).kexec_image)[1]
    assert params[0x1000:] == b"y" * 2047 + b"\0"


def test_a_crash_kernel_the_first_kernel_scribbled_on_is_not_entered(files, capsys):
    tmp, cap, _ = files
    mpath = machine(tmp / "m", crashkernel=CRASHKERNEL)
    assert kjexec_run(capsys, mpath, "-p", "--args-linux", cap)[0] == 0
    m = open_machine(mpath)
    m.ram[CAPTURE_AT + 4] ^= 0xFF             # a stray write into the loaded crash kernel
    r = m.panic("after a scribble")
    assert r.state == "crash-kernel" and b"SHA-256 mismatch in segment" in m.debugcon
    assert b"memmap=" not in m.debugcon          # the capture kernel never ran
