"""Helpers shared by the loader tests: the hypothesis settings, a refusal check and a
one-segment ELF."""

import pytest
from elfbuild import Phdr, build_elf32
from hypothesis import HealthCheck, settings

from kjcore.loader import (
    LoaderError,
    load_elf32,
)

HYP = settings(max_examples=150, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])


def refused(field, data_or_call):
    """Assert the load is refused for ``field``; return the error."""
    with pytest.raises(LoaderError) as info:
        data_or_call() if callable(data_or_call) else load_elf32(data_or_call)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(field + ": ")
    return info.value


def one_segment(**overrides):
    return build_elf32([Phdr(0x100000, b"\x90" * 100, 0x1800)], entry=0x100004, **overrides)


# ---------------------------------------------------------------------------------------------
