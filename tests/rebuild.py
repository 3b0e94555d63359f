"""Rebuilding committed binaries with the installed toolchain: the examples, the kdump capture
program, the purgatory and the gcc benchmark programs are committed as built files; their tests
copy the sources to a temporary directory, run make there and compare the bytes.  A test is
skipped (with the reason) when the tools are missing, gcc cannot build 32-bit code, or the gcc
is not the version the Makefile says the committed files were built with."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BUILD_TOOLS = ("make", "as", "ld", "gcc")


def require_toolchain(tmp_path, tools=BUILD_TOOLS):
    """Skip unless every one of ``tools`` is installed and gcc -m32 compiles freestanding C."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found")
    probe = Path(tmp_path) / "probe.c"
    probe.write_text("int f(void) { return 1; }\n")
    r = subprocess.run(["gcc", "-m32", "-ffreestanding", "-nostdlib", "-c", str(probe), "-o",
                        str(Path(tmp_path) / "probe.o")], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"gcc -m32 cannot build: {r.stderr.strip()[:200]}")


def require_recorded_gcc(makefile, what):
    """Skip unless the installed gcc is the version ``makefile`` records ("built with gcc X",
    possibly across a comment line break) for the committed ``what``."""
    text = Path(makefile).read_text()
    recorded = re.search(r"built\s+#?\s*with gcc (\S+)", text).group(1)
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True,
                             text=True).stdout.strip()
    if version != recorded:
        pytest.skip(f"{what} was built with gcc {recorded}, this is {version}")


def make_copy(tmp_path, source_dir, files, targets=()):
    """Copy ``files`` of ``source_dir`` into a new build directory under ``tmp_path``, run
    ``make -s`` with ``targets`` there (failing the test if make fails); return the directory."""
    build = Path(tmp_path) / "build"
    build.mkdir()
    for name in files:
        shutil.copy(Path(source_dir) / name, build / name)
    r = subprocess.run(["make", "-s", "-C", str(build), *targets], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return build


def assert_same_bytes(build, source_dir, names):
    """Each of ``names`` built in ``build`` equals the committed file in ``source_dir``."""
    for name in names:
        assert (Path(build) / name).read_bytes() == (Path(source_dir) / name).read_bytes(), \
            f"{name} is stale: run make in {source_dir} and commit it"
