"""A gdb session on one TCP connection, driven from CPU hooks (SPEC §16).

The session never runs the CPU itself: whoever runs it (``Machine.kernel_kexec``, so the jump
keeps its own breakpoints, engines and budget) runs it with the session's hooks set, and every
stop gdb sees is a hook callback that answers packets until gdb resumes:

- the first stop and ``s`` (single step) are a code hook on every address;
- ``Z0``/``Z1`` are code hooks on one address, ``Z2``/``Z3``/``Z4`` memory hooks (reported
  after the access, ``T05watch:ADDR;``);
- Ctrl-C (``0x03``) while the guest runs: a thread watching the socket adds a code hook on
  every address, which the run picks up within one slice (about 20 ms), and stops with SIGINT.

When the run ends the session tells gdb how: ``W00`` (exit status 0) when the image returned
to the first kernel or halted, ``X0e`` (SIGALRM) when its step or time budget ran out, and for
a triple fault a ``T0b`` (SIGSEGV) stop gdb can inspect, then ``X0b`` once it resumes.
``k`` stops the run (the jump ends stopped, ``Machine.state`` ``"image"``); ``D`` and a lost
connection remove the session's hooks and let the run go on.
"""
import contextlib
import select
import socket
import sys
import threading

from ..cpu import StepLimit, Stopped, TripleFault
from ..cpu import state as S
from .commands import Commands
from .packets import INTERRUPT, PacketReader, frame


class GdbSession:
    """The gdb side of a run of ``machine``'s CPU over the connected socket ``conn``."""

    def __init__(self, machine, conn):
        self.machine = machine
        self.cpu = machine.cpu
        self.conn = conn
        self.reader = PacketReader()
        self.commands = Commands(machine, self.on_stop)
        self.attached = True
        self.killed = False
        self._step = None           # handle of the single-step hook
        self._step_from = None      # (address, tsc) the step starts from: not a stop
        self._pause = None          # handle of the Ctrl-C hook
        self._last = None           # (address, tsc) of the last stop: one stop per place
        self._sent = b""
        self._rejected = 0
        self._running = False       # gdb resumed the guest and waits for a stop reply
        self._quit = threading.Event()
        self._watcher = None

    # ------------------------------------------------------------------ running under gdb
    def run(self, body):
        """Call ``body()`` (which runs the CPU) with gdb stopping it before its first
        instruction; its result, or None when gdb killed it."""
        self._step = self.cpu.hook_code(self._on_step)
        try:
            result = body()
        except (TripleFault, StepLimit, Stopped) as e:
            self.finish(e)
            if self.killed and isinstance(e, Stopped):
                return None
            raise
        else:
            self.finish()
            return result
        finally:
            self.detach()

    def finish(self, error=None):
        """The run ended (``error``: its exception, or None): tell gdb how."""
        if not self.attached:
            return
        self._stop_watching()
        if not self._running:       # gdb detached or was never told to go on
            return
        if isinstance(error, TripleFault):
            self.commands.last_stop = b"T0b"
            self._send(b"T0b")
            self._serve(final=b"X0b")
        elif isinstance(error, StepLimit):
            self._send(b"X0e")
        elif not self.killed:
            self._send(b"W00")

    def detach(self):
        """Remove every hook of the session and close the connection (idempotent)."""
        self._stop_watching()
        self.commands.clear_points()
        for handle in (self._step, self._pause):
            if handle is not None:
                self.cpu.hook_del(handle)
        self._step = self._pause = None
        if self.attached:
            self.attached = False
            with contextlib.suppress(OSError):
                self.conn.close()

    # ------------------------------------------------------------------ stops
    def _place(self):
        return (int(self.cpu.cs.base + self.cpu.eip) & S.M32, self.cpu.tsc)

    def _on_step(self, cpu, address):
        if self._place() != self._step_from:
            self.on_stop(b"T05")

    def _on_pause(self, cpu, address):
        self.on_stop(b"T02")

    def on_stop(self, reply):
        """A stop: report ``reply`` to gdb and answer packets until it resumes."""
        place = self._place()
        if not self.attached or place == self._last:
            return
        self._last = place
        self._stop_watching()
        for handle in (self._step, self._pause):
            if handle is not None:
                self.cpu.hook_del(handle)
        self._step = self._pause = None
        self.commands.last_stop = reply
        if self._running:           # the first stop is only reported when gdb asks ('?')
            self._send(reply)
        self._running = False
        self._serve()

    def _serve(self, final=None):
        while self.attached:
            data = self._next_packet()
            if data is None:                    # gdb went away: as if it had detached
                self.detach()
                return
            reply, action = self.commands.handle(data)
            if reply is not None:
                self._send(reply)
            if action is None:
                continue
            if action == "kill":
                self.killed = True
                self.cpu.stop()
                self.detach()
            elif action == "detach":
                self.detach()
            elif final is not None:             # nothing left to run
                self._send(final)
                self.detach()
            else:
                if action == "step":
                    self._step_from = self._place()
                    self._step = self.cpu.hook_code(self._on_step)
                self._running = True
                self._start_watching()
            return

    # ------------------------------------------------------------------ the wire
    def _send(self, data):
        self._sent = frame(data)
        with contextlib.suppress(OSError):
            self.conn.sendall(self._sent)

    def _next_packet(self):
        while True:
            for kind, value in self.reader.events():
                if kind == "packet":
                    self._ack(b"+")
                    return value
                if kind == "ack" and not value and self._sent:
                    self._ack(self._sent)
            if self.reader.rejected != self._rejected:
                self._rejected = self.reader.rejected
                self._ack(b"-")
            try:
                data = self.conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                return None
            self.reader.feed(data)

    def _ack(self, data):
        with contextlib.suppress(OSError):
            self.conn.sendall(data)

    # ------------------------------------------------------------------ Ctrl-C while running
    def _start_watching(self):
        # a Ctrl-C that came in with the resuming packet (gdb sends nothing else meanwhile)
        if any(kind == "interrupt" for kind, _ in self.reader.events()):
            self._pause = self.cpu.hook_code(self._on_pause)
            return
        self._quit.clear()
        self._watcher = threading.Thread(target=self._watch, name="gdb-ctrl-c", daemon=True)
        self._watcher.start()

    def _stop_watching(self):
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._quit.set()
            self._watcher.join()
        self._watcher = None

    def _watch(self):
        while not self._quit.is_set():
            try:
                ready, _, _ = select.select([self.conn], [], [], 0.05)
                data = self.conn.recv(4096) if ready else None
            except (OSError, ValueError):
                data = b""
            if data is None:
                continue
            self.reader.feed(data)
            if not data or INTERRUPT in data:   # Ctrl-C, or gdb gone: stop and look
                self._pause = self.cpu.hook_code(self._on_pause)
                return


def listen(port, ready=None):
    """Wait for one gdb on 127.0.0.1:``port`` (0: any free port) and return the socket.

    ``ready(port)`` is called once listening (default: a line on stderr saying how to attach).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be an integer in 0..65535, not {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        bound = server.getsockname()[1]
        if ready is None:
            print(f"kjcore: waiting for gdb on 127.0.0.1:{bound} "
                  f"(gdb -ex 'target remote :{bound}')", file=sys.stderr, flush=True)
        else:
            ready(bound)
        conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def gdbserver(machine, port, *, max_steps=None, timeout=None, ready=None):
    """Run ``machine.kernel_kexec`` under a gdb attached on 127.0.0.1:``port``.

    Blocks until gdb connects, then until the jump ends, gdb detaches (the jump runs on to its
    end) or kills it (returns None; the jump is left stopped, ``machine.state`` ``"image"``).
    Returns what ``kernel_kexec`` returns and raises what it raises.
    """
    session = GdbSession(machine, listen(port, ready))
    return session.run(lambda: machine.kernel_kexec(max_steps=max_steps, timeout=timeout))
