"""docs/tutorial.rst is executable: run its ``>>>`` examples as a doctest."""
import doctest
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tutorial_examples(monkeypatch):
    monkeypatch.chdir(ROOT)             # the tutorial opens examples/... from the source tree
    result = doctest.testfile(os.path.join(ROOT, "docs", "tutorial.rst"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                              raise_on_error=False, verbose=False, report=True)
    assert result.attempted > 30
    assert result.failed == 0, f"{result.failed} tutorial examples failed (see the output)"
