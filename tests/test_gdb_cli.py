"""``kjexec -e --gdb PORT`` and ``kjcore gdbserver MACHINE --port N`` with a real gdb."""
import subprocess

import pytest
from gdb_world import GDB
from kjexec_world import PHY_MODE, SEED_EXAMPLE, run

from kjcore import store
from kjcore.commands import kjexec
from kjcore.commands.main import main as kjcore_main
from kjcore.gdb import stub

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")


@pytest.fixture
def gdb_on(monkeypatch, tmp_path):
    """Start ``gdb -batch`` with the given commands as soon as the stub listens."""
    procs, commands, log = [], [], tmp_path / "gdb.log"

    def listen(port, ready=None):
        def start(bound):
            args = [GDB, "-batch", "-nx", "-ex", f"target remote 127.0.0.1:{bound}"]
            for c in commands:
                args += ["-ex", c]
            with open(log, "w") as f:
                procs.append(subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT))
        return real(port, ready=start)
    real = stub.listen
    monkeypatch.setattr(stub, "listen", listen)
    monkeypatch.setattr(kjexec, "listen", listen)

    def output(*cmds):
        commands.extend(cmds)
        return lambda: (procs[0].wait(timeout=60), log.read_text())[1]
    return output


def test_kjexec_exec_waits_for_gdb(capsys, mpath, gdb_on):
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    out = gdb_on("stepi", "info registers eip", "continue")
    status, stdout, err = run(capsys, mpath, "-e", "--gdb=0")
    text = out()
    assert status == 0, (stdout, err, text)
    assert "back in the first kernel" in stdout and "exited normally" in text, text
    assert store.open_machine(mpath).state == "kernel"


def test_kjexec_gdb_needs_exec(capsys, mpath):
    status, _, err = run(capsys, mpath, "--gdb=1234", "-u")
    assert status == 1 and "--gdb" in err
    assert run(capsys, mpath, "-e", "--gdb=70000")[0] == 1


def test_kjcore_gdbserver_kill_leaves_the_saved_machine(capsys, mpath, gdb_on):
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    before = store.open_machine(mpath).kexec_image.start
    out = gdb_on("monitor kimage", "kill")
    assert kjcore_main(["gdbserver", mpath, "--port", "0"]) == 255
    assert "KImage(" in out()
    assert "gdb killed the jump" in capsys.readouterr().err
    m = store.open_machine(mpath)
    assert m.state == "kernel" and m.kexec_image.start == before


def test_kjcore_gdbserver_saves_after_the_jump(capsys, mpath, gdb_on):
    assert run(capsys, mpath, *SEED_EXAMPLE, PHY_MODE)[0] == 0
    out = gdb_on("continue")
    assert kjcore_main(["gdbserver", mpath, "--port", "0"]) == 0
    assert "exited normally" in out()
    assert "JumpResult" in capsys.readouterr().out
