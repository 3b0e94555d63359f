"""Fixtures for the CPU tests (helpers live in cpu_world.py, a uniquely named module)."""
import pytest
from cpu_world import World


@pytest.fixture
def world():
    return World()
