"""Run a real gdb (batch mode) against ``Machine.gdbserver`` for the gdb tests."""
import shutil
import subprocess

GDB = shutil.which("gdb")


def drive(m, commands, raises=(), timeout=60, **kw):
    """Serve ``m``'s next jump to ``gdb -batch`` running ``commands`` (after ``target remote``);
    returns (gdbserver's result, or the exception of class ``raises`` it raised; gdb's
    output)."""
    procs = []

    def start(port):
        args = [GDB, "-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off",
                "-ex", f"target remote 127.0.0.1:{port}"]
        for c in commands:
            args += ["-ex", c]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        result = m.gdbserver(0, ready=start, **kw)
    except raises as e:
        result = e
    finally:
        out = procs[0].communicate(timeout=timeout)[0] if procs else ""
    return result, out
