import pytest

import kjcore


@pytest.fixture
def machine():
    """A small fresh machine (16 MiB, 4 MiB reserved for the first kernel)."""
    return kjcore.Machine(ram_size=16 << 20)


@pytest.fixture(params=["2.6.27", "mainline"])
def profile(request):
    return request.param
