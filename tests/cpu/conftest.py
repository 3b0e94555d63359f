"""Fixtures for the CPU tests (helpers live in cpu_world.py, a uniquely named module)."""
import pathlib
import sys

import pytest
from cpu_world import World


@pytest.fixture
def world():
    return World()

# The gcc benchmark programs' harness (benchmarks/programs/gcc_programs.py) is shared with
# benchmarks/bench_cpu.py; tests/cpu/test_gcc_programs.py imports it top-level.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "programs"))
