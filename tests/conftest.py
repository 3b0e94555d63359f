import pathlib
import sys

import pytest

import kjcore
from kjcore import store


@pytest.fixture
def machine():
    """A small fresh machine (16 MiB, 4 MiB reserved for the first kernel)."""
    return kjcore.Machine(ram_size=16 << 20)


@pytest.fixture(params=["2.6.27", "mainline"])
def profile(request):
    return request.param


@pytest.fixture
def mpath(tmp_path):
    """A saved 64 MiB machine with a crashkernel region (40M@8M): the kjexec tests' machine."""
    path = str(tmp_path / "m")
    store.save_machine(kjcore.Machine(ram_size=64 << 20, crashkernel=(40 << 20, 8 << 20)), path)
    return path


# The Unicorn harness of the BIOS-call benchmark (benchmarks/_unicorn_bioscall.py) is shared
# with tests/test_bioscall_unicorn.py; appended, so no benchmark module shadows a test module.
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
