"""The gcc benchmark programs (benchmarks/programs) give the same registers and memory on
kjcore as on Unicorn, and the committed binaries are what their sources build to."""
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from gcc_programs import (
    HERE,
    PROGRAMS,
    RAM_SIZE,
    kjcore_registers,
    memory_outside_tables,
    on_kjcore,
    on_unicorn,
    unicorn_registers,
)

unicorn = pytest.importorskip("unicorn")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_same_result_as_unicorn(name):
    """Two repetitions of each program (small counts: the default run stays fast)."""
    cpu, _ = on_kjcore(name, 2)
    uc, _ = on_unicorn(name, 2)
    assert kjcore_registers(cpu) == unicorn_registers(uc)
    theirs = np.frombuffer(bytes(uc.mem_read(0, RAM_SIZE)), np.uint8)
    assert np.array_equal(memory_outside_tables(cpu.ram), memory_outside_tables(theirs))


def _gcc_m32():
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        return False
    probe = subprocess.run(["gcc", "-m32", "-ffreestanding", "-nostdlib", "-x", "c", "-c",
                            "-o", "/dev/null", "-"], input=b"int x;", capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("make") is None or not _gcc_m32(),
                    reason="needs make, objcopy and gcc with -m32")
def test_binaries_rebuild_byte_for_byte(tmp_path):
    subprocess.run(["make", "-s", "-C", str(HERE), f"OUT={tmp_path}"], check=True,
                   capture_output=True)
    for name in PROGRAMS:
        built = pathlib.Path(tmp_path, f"{name}.bin").read_bytes()
        assert built == (HERE / f"{name}.bin").read_bytes(), name
