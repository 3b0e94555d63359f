"""GDB Remote Serial Protocol framing: ``$data#cs`` packets, acknowledgements, escaping.

Everything here works on bytes from the network and never raises on them: a frame with a bad
checksum is answered ``-`` (gdb sends it again), junk between frames is skipped, an oversized
frame is dropped, and ``0x03`` (Ctrl-C) is reported as an interrupt wherever it falls between
frames.  Binary data (``X`` packets, ``qXfer`` replies) is escaped with ``}`` and ``x ^ 0x20``.
"""

#: the largest packet accepted (announced to gdb as PacketSize in qSupported)
PACKET_SIZE = 0x4000
INTERRUPT = b"\x03"
_SPECIAL = frozenset(b"$#}*")


def checksum(data):
    """The two-hex-digit frame checksum: the sum of the bytes modulo 256."""
    return sum(data) & 0xFF


def frame(data):
    """``data`` (bytes, already escaped where binary) as a ``$data#cs`` frame."""
    return b"$" + data + b"#" + b"%02x" % checksum(data)


def escape(data):
    """Escape ``$``, ``#``, ``}`` and ``*`` in binary reply data."""
    out = bytearray()
    for b in data:
        if b in _SPECIAL:
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out)


def unescape(data):
    """Undo :func:`escape` (binary payload of an ``X`` packet); ValueError on a trailing ``}``."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("escape character at the end of binary data")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class PacketReader:
    """Split a byte stream into events: ``("packet", data)``, ``("interrupt", None)``,
    ``("ack", True/False)``.  Bytes are fed in any pieces; a frame with a bad checksum
    yields nothing but is counted in :attr:`rejected` so the caller answers ``-``."""

    def __init__(self):
        self._buf = bytearray()
        self.rejected = 0

    def feed(self, data):
        self._buf += data

    def events(self):
        """Yield every complete event in the buffer, in order."""
        buf = self._buf
        while buf:
            c = buf[0]
            if c == 0x03:
                del buf[0]
                yield "interrupt", None
            elif c in b"+-":
                del buf[0]
                yield "ack", c == ord("+")
            elif c == ord("$"):
                end = buf.find(b"#", 1)
                restart = buf.find(b"$", 1)
                if restart > 0 and (end < 0 or restart < end):
                    del buf[:restart]                # a frame cut short by the next one
                    self.rejected += 1
                    continue
                if end < 0:
                    if len(buf) > PACKET_SIZE + 4:
                        del buf[:1]          # never terminated: drop the '$' and resync
                        self.rejected += 1
                        continue
                    return
                if len(buf) < end + 3:
                    return
                data, cs = bytes(buf[1:end]), bytes(buf[end + 1:end + 3])
                del buf[:end + 3]
                try:
                    ok = int(cs, 16) == checksum(data)
                except ValueError:
                    ok = False
                if ok and len(data) <= PACKET_SIZE:
                    yield "packet", data
                else:
                    self.rejected += 1
            else:
                del buf[0]                   # noise between frames
