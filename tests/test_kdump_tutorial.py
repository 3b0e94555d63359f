"""docs/kdump.rst is executable: run its console blocks in a scratch directory.

Each ``$ COMMAND`` line of a ``.. code-block:: console`` block runs -- ``kjcore`` and
``kjexec`` in this process (their ``main``), anything else in ``bash`` -- and the lines after
it, up to the next command, are its expected standard output, compared like a doctest with
``...`` as ellipsis.  Commands whose program is not installed (``gdb``, ``readelf``) are
skipped.
"""
import contextlib
import doctest
import io
import os
import re
import shlex
import shutil
import subprocess

import pytest

from kjcore.commands import kjexec
from kjcore.commands import main as kjcore_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "kdump.rst")
_TOOLS = {"kjcore": kjcore_main.main, "kjexec": kjexec.main}


def console_commands(text):
    """``(command, expected output)`` pairs of the console blocks of an rST text."""
    pairs = []
    for block in re.findall(r"\.\. code-block:: console\n\n((?:   .*\n|\n)+)", text):
        lines = [line[3:] for line in block.rstrip("\n").split("\n")]
        for line in lines:
            if line.startswith("$ "):
                pairs.append([line[2:], []])
            else:
                pairs[-1][1].append(line)
    return [(cmd, "\n".join(out) + "\n" if out else "") for cmd, out in pairs]


def _run(command):
    """(exit status, standard output, standard error) of one tutorial command, or None when
    its program is not installed."""
    argv = shlex.split(command)
    tool = _TOOLS.get(argv[0])
    if tool is not None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = tool(argv[1:])
        return status, out.getvalue(), err.getvalue()
    if shutil.which(argv[0]) is None:
        return None
    run = subprocess.run(["bash", "-c", command], text=True, capture_output=True, timeout=300)
    return run.returncode, run.stdout, run.stderr


def test_kdump_tutorial(tmp_path, monkeypatch):
    with open(DOC) as f:
        pairs = console_commands(f.read())
    assert len(pairs) >= 7
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    checker = doctest.OutputChecker()
    for command, expected in pairs:
        result = _run(command)
        if result is None:
            continue
        status, out, err = result
        assert status == 0, f"$ {command}\n{err}"
        assert checker.check_output(expected, out, doctest.ELLIPSIS), \
            f"$ {command}\nexpected:\n{expected}got:\n{out}"


def test_kdump_hello_rebuilds_byte_identical(tmp_path):
    if any(shutil.which(tool) is None for tool in ("make", "as", "ld")):
        pytest.skip("make, as or ld is not installed")
    for name in ("Makefile", "kdump_hello.S"):
        shutil.copy(os.path.join(ROOT, "examples", name), tmp_path / name)
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "kdump_hello.elf"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "examples", "kdump_hello.elf"), "rb") as f:
        assert (tmp_path / "kdump_hello.elf").read_bytes() == f.read()
