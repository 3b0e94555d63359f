"""The gcc benchmark programs (benchmarks/programs) give the same registers and memory on
kjcore as on Unicorn, and the committed binaries are what their sources build to."""
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
from rebuild import assert_same_bytes, make_copy, require_toolchain

unicorn = pytest.importorskip("unicorn")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_same_result_as_unicorn(name):
    """Two repetitions of each program (small counts: the default run stays fast)."""
    cpu, _ = on_kjcore(name, 2)
    uc, _ = on_unicorn(name, 2)
    assert kjcore_registers(cpu) == unicorn_registers(uc)
    theirs = np.frombuffer(bytes(uc.mem_read(0, RAM_SIZE)), np.uint8)
    assert np.array_equal(memory_outside_tables(cpu.ram), memory_outside_tables(theirs))


def test_binaries_rebuild_byte_for_byte(tmp_path):
    require_toolchain(tmp_path, ("make", "gcc", "objcopy"))
    sources = ["Makefile", "common.h", "crt0.S", "program.ld", *(f"{n}.c" for n in PROGRAMS)]
    build = make_copy(tmp_path, HERE, sources)
    assert_same_bytes(build, HERE, [f"{name}.bin" for name in PROGRAMS])
