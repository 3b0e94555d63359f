"""The snapshot section of docs/purgatory.rst is executable: run its ``>>>`` examples."""
import doctest
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_snapshot_tutorial(monkeypatch):
    pytest.importorskip("elftools")
    monkeypatch.chdir(ROOT)             # it loads examples/kdump/capture.elf from the tree
    result = doctest.testfile(os.path.join(ROOT, "docs", "purgatory.rst"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                              raise_on_error=False, verbose=False, report=True)
    assert result.attempted >= 10
    assert result.failed == 0, f"{result.failed} examples failed (see the output)"
