"""The gdb packets kjcore answers (SPEC §16), independent of sockets and of running.

:meth:`Commands.handle` takes one packet's data and returns ``(reply, action)``: the reply
bytes (not yet framed; None for no reply) and what the session does next: None (wait for the
next packet), ``"continue"``, ``"step"``, ``"detach"`` or ``"kill"``.  Any packet it cannot
parse or carry out is answered ``E01`` (bad arguments) or ``E14`` (memory not mapped); an
unknown packet gets the empty reply, as the protocol asks.  Breakpoints and watchpoints are
CPU hooks (:mod:`kjcore.cpu.hooks`) whose callback is the session's ``on_stop``.
"""
from ..cpu import state as S
from ..kimage import flag_name
from . import target
from .packets import PACKET_SIZE, escape, unescape

#: Z packet type -> (hook kind, stop-reply key)
_POINTS = {0: ("code", None), 1: ("code", None), 2: ("write", "watch"), 3: ("read", "rwatch"),
           4: ("access", "awatch")}
_MAX_MEMORY = PACKET_SIZE // 2 - 16
#: list words ``monitor kimage`` shows (a reply stays small)
_KIMAGE_LINES = 48


class BadPacket(ValueError):
    """A packet whose arguments do not parse or are out of range: answered E01."""


class Unmapped(ValueError):
    """A memory access through the page tables hit an unmapped page: answered E14."""


def _hex_int(text, top=S.M32):
    try:
        v = int(text, 16)
    except ValueError:
        raise BadPacket(f"not a hex number: {text!r}") from None
    if not 0 <= v <= top or text.startswith(("-", "+", " ")) or "_" in text:
        raise BadPacket(f"out of range: {text!r}")
    return v


def _unhex(text):
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadPacket("bad hex data") from None


def _addr_len(text, top_len=_MAX_MEMORY):
    addr, sep, length = text.partition(",")
    if not sep:
        raise BadPacket("expected ADDR,LENGTH")
    return _hex_int(addr), _hex_int(length, top_len)


class Commands:
    """The packet handlers of one gdb session on ``machine`` (its ``cpu`` and image)."""

    def __init__(self, machine, on_stop):
        self.machine = machine
        self.cpu = machine.cpu
        self.on_stop = on_stop          # the hook callbacks of breakpoints and watchpoints
        self.points = {}                # (type, address, length) -> hook handles
        self.last_stop = b"S05"

    # ------------------------------------------------------------------ dispatch
    def handle(self, data):
        try:
            text = data.decode("latin-1")
            return self._dispatch(text, data)
        except Unmapped:
            return b"E14", None
        except (ValueError, IndexError, OverflowError):   # BadPacket and bad sizes
            return b"E01", None

    def _dispatch(self, text, data):
        if not text:
            return b"", None
        head = text[:1]
        simple = {"?": lambda: (self.last_stop, None),
                  "g": lambda: (target.read_all(self.cpu).hex().encode(), None),
                  "k": lambda: (None, "kill"),
                  "D": lambda: (b"OK", "detach")}
        if text in simple or (head == "D" and text[1:2] == ";"):
            return simple[head]()
        if head == "G":
            target.write_all(self.cpu, _unhex(text[1:]))
            return b"OK", None
        if head == "p":
            return target.read_register(self.cpu, _hex_int(text[1:], 0xFFFF)).hex().encode(), None
        if head == "P":
            n, sep, value = text[1:].partition("=")
            if not sep:
                raise BadPacket("expected P n=value")
            target.write_register(self.cpu, _hex_int(n, 0xFFFF), _unhex(value))
            return b"OK", None
        if head == "m":
            return self.read_memory(*_addr_len(text[1:])).hex().encode(), None
        if head == "M":
            where, sep, payload = text[1:].partition(":")
            addr, length = _addr_len(where)
            body = _unhex(payload) if sep else b""
            return self._write(addr, length, body, sep), None
        if head == "X":
            cut = data.find(b":")
            addr, length = _addr_len(text[1:cut] if cut > 0 else text[1:])
            body = unescape(data[cut + 1:]) if cut > 0 else b""
            return self._write(addr, length, body, cut > 0), None
        if head in ("c", "s", "C", "S"):
            # C sig[;addr] / S sig[;addr]: the signal is dropped (the guest has no signals)
            addr = text[1:] if head in ("c", "s") else text[1:].partition(";")[2]
            if head in ("C", "S"):
                _hex_int(text[1:].partition(";")[0], 0xFF)
            if addr:
                self.cpu.eip = _hex_int(addr)
            return None, "continue" if head in ("c", "C") else "step"
        if head in "Zz":
            return self._point(text), None
        if text.startswith("vCont"):
            return self._vcont(text)
        if text.startswith("H"):
            return b"OK", None
        return self._query(text)

    def _write(self, addr, length, body, has_data):
        if not has_data or len(body) != length:
            raise BadPacket("memory write length does not match its data")
        self.write_memory(addr, body)
        return b"OK"

    def _vcont(self, text):
        if text == "vCont?":
            return b"vCont;c;C;s;S", None
        actions = text.split(";")[1:]
        if text[5:6] != ";" or not actions:
            raise BadPacket("expected vCont;ACTION")
        kind = actions[0].split(":")[0][:1]
        if kind not in ("c", "C", "s", "S"):
            raise BadPacket(f"unsupported vCont action {actions[0]!r}")
        return None, "step" if kind in "sS" else "continue"

    def _query(self, text):
        if text.startswith("qSupported"):
            return f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;vContSupported+".encode(), \
                None
        if text == "qAttached":
            return b"1", None
        if text.startswith("qXfer:features:read:"):
            annex, _, span = text[len("qXfer:features:read:"):].partition(":")
            if annex != "target.xml":
                return b"E00", None
            offset, length = _addr_len(span, PACKET_SIZE)
            chunk = target.TARGET_XML[offset:offset + length]
            more = offset + length < len(target.TARGET_XML)
            return (b"m" if more else b"l") + escape(chunk), None
        if text.startswith("qRcmd,"):
            command = _unhex(text[6:]).decode("latin-1")
            return self.monitor(command).encode().hex().encode(), None
        if text == "qC":
            return b"QC1", None
        if text == "qfThreadInfo":
            return b"m1", None
        if text == "qsThreadInfo":
            return b"l", None
        return b"", None

    # ------------------------------------------------------------------ memory
    def read_memory(self, addr, length):
        """``length`` bytes at linear ``addr`` through the current paging mode; the readable
        prefix when the range runs into an unmapped page, Unmapped if its start is."""
        out = bytearray()
        ram = self.machine.ram
        for i in range(length):
            p = self.cpu.translate((addr + i) & S.M32)
            if p is None or p >= len(ram):
                if not out:
                    raise Unmapped(f"{addr:#x} is not mapped")
                break
            out.append(int(ram[p]))
        return bytes(out)

    def write_memory(self, addr, body):
        """Write through the current page tables; nothing is written unless every byte maps."""
        ram = self.machine.ram
        phys = [self.cpu.translate((addr + i) & S.M32) for i in range(len(body))]
        if any(p is None or p >= len(ram) for p in phys):
            raise Unmapped(f"{addr:#x}+{len(body)} is not mapped")
        for p, b in zip(phys, body):
            ram[p] = b

    # ------------------------------------------------------------------ break/watchpoints
    def _point(self, text):
        kind_text, _, rest = text[1:].partition(",")
        ztype = _hex_int(kind_text, 4)
        addr_text, sep, length_text = rest.partition(",")
        if not sep:
            raise BadPacket("expected Ztype,addr,kind")
        addr = _hex_int(addr_text)
        length = _hex_int(length_text.split(";")[0], 0x1000)
        key = (ztype, addr, length)
        if text[0] == "z":
            for handle in self.points.pop(key, ()):
                self.cpu.hook_del(handle)
            return b"OK"
        if key in self.points:
            return b"OK"
        kind, report = _POINTS[ztype]
        if kind == "code":
            handles = [self.cpu.hook_code(lambda cpu, a: self.on_stop(b"T05"),
                                          addr, addr)]
        else:
            if length == 0 or addr + length - 1 > S.M32:
                raise BadPacket("watchpoint length")
            accesses = ("read", "write") if kind == "access" else (kind,)
            handles = [self.cpu.hook_mem(
                lambda cpu, access, a, n, v, report=report:
                    self.on_stop(f"T05{report}:{max(a, addr):x};".encode()),
                access, addr, addr + length - 1) for access in accesses]
        self.points[key] = handles
        return b"OK"

    def clear_points(self):
        for handles in self.points.values():
            for handle in handles:
                self.cpu.hook_del(handle)
        self.points.clear()

    # ------------------------------------------------------------------ monitor
    def monitor(self, command):
        """``monitor phys ADDR LEN`` and ``monitor kimage``: text for gdb's console."""
        words = command.split()
        if words[:1] == ["phys"] and len(words) == 3:
            try:
                addr, length = int(words[1], 0), int(words[2], 0)
            except ValueError:
                return "usage: monitor phys ADDR LEN (numbers in C syntax)\n"
            ram = self.machine.ram
            if not (0 <= addr and 0 < length <= 0x1000 and addr + length <= len(ram)):
                return f"phys: {addr:#x}+{length:#x} is not in RAM (0..{len(ram):#x}, " \
                       "at most 0x1000 bytes)\n"
            data = bytes(ram[addr:addr + length])
            return "".join(f"{addr + i:08x}: {data[i:i + 16].hex(' ')}\n"
                           for i in range(0, length, 16))
        if words == ["kimage"]:
            return self._kimage()
        return "kjcore monitor commands: phys ADDR LEN, kimage\n"

    def _kimage(self):
        image = self.machine.kexec_image
        if image is None:
            return "no kexec image loaded\n"
        entries = list(image.entries())
        lines = [repr(image)]
        lines += [f"  segment {s.mem:#010x} memsz {s.memsz:#x}" for s in image.segments]
        lines += [f"  {flag_name(flag):<12} {addr:#010x}" for flag, addr in entries[:_KIMAGE_LINES]]
        if len(entries) > _KIMAGE_LINES:
            lines.append(f"  ... {len(entries) - _KIMAGE_LINES} more of {len(entries)} list words "
                         f"({len(image.source_pages())} source pages)")
        return "\n".join(lines) + "\n"
