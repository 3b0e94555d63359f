"""Claims directories of a cold start killed before its cleanup are removed (issue 10 B9)."""
import os
import signal
import subprocess
import sys

from kjcore.cpu import warmup

_KILLED_COLD_START = r"""
import os, signal, subprocess, sys, tempfile
tempfile.tempdir = sys.argv[1]
from kjcore.cpu import warmup
warmup._cached = lambda disp: False                     # a cold cache
real = subprocess.Popen
subprocess.Popen = lambda *a, **k: real(["true"])       # no real helper
warmup.start()
print(os.path.basename(warmup._helper[1]), flush=True)
os.kill(os.getpid(), signal.SIG{})
"""


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_claims_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f"kjcore-compile-{_dead_pid()}-abc"
    live = tmp_path / f"kjcore-compile-{os.getpid()}-def"
    other = tmp_path / "kjcore-compile-xyz"                 # not a name start() makes
    target = tmp_path / "precious"
    for d in (stale, live, other, target):
        d.mkdir()
        (d / "claim").touch()
    link = tmp_path / f"kjcore-compile-{_dead_pid()}-lnk"
    os.symlink(target, link)
    warmup.remove_stale_claims(str(tmp_path))
    assert not stale.exists()
    assert live.exists() and other.exists() and (target / "claim").exists()


def test_a_killed_cold_start_leaves_nothing_after_the_next_start(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for sig in ("KILL", "TERM"):
        out = subprocess.run([sys.executable, "-c", _KILLED_COLD_START.replace("{}", sig),
                              str(tmp_path)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == -getattr(signal, f"SIG{sig}"), out.stderr
        name = out.stdout.strip()
        assert name.startswith("kjcore-compile-") and (tmp_path / name).is_dir()
        warmup.remove_stale_claims(str(tmp_path))           # what the next start() does
        assert not (tmp_path / name).exists()
