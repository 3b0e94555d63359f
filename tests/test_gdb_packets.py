"""The gdb stub's packet layer and commands without gdb: framing, escaping, hostile input,
every command against the CPU, and a raw socket client (Ctrl-C, garbage, lost connection)."""
import random
import socket
import threading
import time

import pytest
from jump_world import CALL_BACK, DEST, asm, load, machine, out_e9

from kjcore.gdb import listen
from kjcore.gdb import target as T
from kjcore.gdb.commands import Commands
from kjcore.gdb.packets import PACKET_SIZE, PacketReader, checksum, escape, frame, unescape
from kjcore.machine_kexec import JumpResult


def events(*chunks):
    r = PacketReader()
    out = []
    for c in chunks:
        r.feed(c)
        out += list(r.events())
    return out, r.rejected


def test_framing_and_escaping():
    assert frame(b"OK") == b"$OK#9a" and checksum(b"") == 0
    data = bytes(range(256))
    assert unescape(escape(data)) == data and b"$" not in escape(data) and b"#" not in escape(data)
    with pytest.raises(ValueError):
        unescape(b"ab}")


def test_reader_splits_acks_interrupts_and_packets_in_any_pieces():
    stream = b"+" + frame(b"g") + b"\x03-junk" + frame(b"m0,4")
    whole, _ = events(stream)
    assert whole == [("ack", True), ("packet", b"g"), ("interrupt", None), ("ack", False),
                     ("packet", b"m0,4")]
    assert events(*[stream[i:i + 1] for i in range(len(stream))])[0] == whole


@pytest.mark.parametrize("bad", [b"$g#00", b"$g#zz", b"$" + b"a" * (PACKET_SIZE + 1) + b"#00",
                                 b"$" + b"x" * (PACKET_SIZE + 10)])
def test_reader_rejects_bad_frames_and_resynchronises(bad):
    got, rejected = events(bad + frame(b"?"))
    assert got[-1] == ("packet", b"?") and rejected >= 1


def test_reader_survives_random_bytes():
    rng = random.Random(13)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        got, rejected = events(junk, frame(b"qAttached"))
        if rejected:            # gdb sends a frame again after our '-'
            got, _ = events(junk, frame(b"qAttached"), frame(b"qAttached"))
        assert ("packet", b"qAttached") in got


@pytest.fixture
def cmds():
    m = machine()
    load(m, asm(out_e9("A"), CALL_BACK))
    stops = []
    return Commands(m, stops.append)


def test_registers_round_trip(cmds):
    regs, _ = cmds.handle(b"g")
    assert len(regs) == 2 * T.G_SIZE
    cmds.cpu.eax = 0x12345678
    assert cmds.handle(b"p0") == (b"78563412", None)
    assert cmds.handle(b"P1=efbeadde") == (b"OK", None) and cmds.cpu.ecx == 0xDEADBEEF
    assert cmds.handle(b"p10")[0] == b"00" * 10                   # st0: no FPU
    data = bytearray(bytes.fromhex(cmds.handle(b"g")[0].decode()))
    data[8 * 4:9 * 4] = (0x1234).to_bytes(4, "little")          # eip
    assert cmds.handle(b"G" + bytes(data).hex().encode()) == (b"OK", None)
    assert cmds.cpu.eip == 0x1234 and cmds.cpu.ecx == 0xDEADBEEF


def test_memory_through_the_page_tables(cmds):
    cpu = cmds.cpu
    assert cpu.cr0 & (1 << 31)                                   # the first kernel's paging
    va = 0xC0000000 + DEST
    assert cmds.handle(f"M{va:x},2:abcd".encode()) == (b"OK", None)
    assert bytes(cmds.machine.ram[DEST:DEST + 2]) == b"\xab\xcd"
    assert cmds.handle(f"m{va:x},2".encode()) == (b"abcd", None)
    assert cmds.handle(b"X" + f"{va:x},2:".encode() + escape(b"#}")) == (b"OK", None)
    assert bytes(cmds.machine.ram[DEST:DEST + 2]) == b"#}"
    assert cmds.handle(f"m{DEST:x},4".encode()) == (b"E14", None)   # not mapped at DEST
    assert cmds.handle(f"M{DEST:x},1:00".encode()) == (b"E14", None)


@pytest.mark.parametrize("packet", [
    b"m", b"mzz,4", b"m0", b"m-1,4", b"m100000000,4", b"m0,ffffffff", b"M0,2:abc", b"M0,2:ab",
    b"X0,2", b"p", b"pzz", b"p99", b"P0=12", b"P0", b"Gab", b"Z9,0,1", b"Z0,0", b"Z2,0,0",
    b"Z0,zz,1", b"vCont;x", b"vCont", b"cxyz", b"qXfer:features:read:target.xml:zz",
    b"qRcmd,zz", b"\xff\xfe",
])
def test_malformed_packets_get_an_error(cmds, packet):
    before = cmds.cpu.get_state()
    reply, action = cmds.handle(packet)
    assert reply.startswith(b"E") or reply == b"", packet
    assert action is None and (cmds.cpu.get_state() == before)


def test_queries_and_target_description(cmds):
    assert b"qXfer:features:read+" in cmds.handle(b"qSupported:multiprocess+")[0]
    assert cmds.handle(b"qAttached") == (b"1", None)
    assert cmds.handle(b"qSomethingNew") == (b"", None)
    xml, offset = b"", 0
    while True:
        reply, _ = cmds.handle(f"qXfer:features:read:target.xml:{offset:x},40".encode())
        xml += unescape(reply[1:])
        offset += 0x40
        if reply[:1] == b"l":
            break
    assert xml == T.TARGET_XML and b"org.gnu.gdb.i386.core" in xml
    names = [n for n, _ in T.REGISTERS[:16]]
    assert names == "eax ecx edx ebx esp ebp esi edi eip eflags cs ss ds es fs gs".split()


def test_points_are_hooks(cmds):
    assert cmds.handle(b"Z0,80000,1") == (b"OK", None)
    assert cmds.handle(b"Z4,1000,4") == (b"OK", None)
    assert len(cmds.cpu._hooks) == 3                         # one code, a read and a write
    assert cmds.handle(b"z4,1000,4") == (b"OK", None) and cmds.handle(b"z0,80000,1")[0] == b"OK"
    assert cmds.cpu._hooks == {}


def serve_in_thread(m):
    """m.gdbserver in a thread; returns (thread, results list, connected client socket)."""
    ports, results = [], []
    ready = threading.Event()

    def server():
        try:
            results.append(m.gdbserver(0, ready=lambda p: (ports.append(p), ready.set()),
                                       max_steps=10 ** 9))
        except Exception as e:   # the test looks at what the thread raised
            results.append(e)
    t = threading.Thread(target=server)
    t.start()
    ready.wait(10)
    client = socket.create_connection(("127.0.0.1", ports[0]), timeout=20)
    return t, results, client


def exchange(client, reader, data):
    """Send packet ``data`` (or raw bytes when not a packet) and return the next reply."""
    client.sendall(data)
    while True:
        for kind, value in reader.events():
            if kind == "packet":
                client.sendall(b"+")
                return value
        chunk = client.recv(4096)
        if not chunk:
            return None
        reader.feed(chunk)


def test_raw_client_garbage_ctrl_c_and_kill():
    m = machine()
    load(m, asm(0xEB, 0xFE))                 # jmp $: runs until interrupted
    t, results, client = serve_in_thread(m)
    r = PacketReader()
    assert exchange(client, r, frame(b"?")) == b"T05"          # before the first instruction
    assert exchange(client, r, b"\x00garbage$#$g#00" + frame(b"qAttached")) == b"1"
    client.sendall(frame(b"c"))
    time.sleep(0.3)                                            # into the payload's loop
    assert exchange(client, r, b"\x03") == b"T02"             # Ctrl-C stops the loop
    assert exchange(client, r, frame(b"p8")) == (DEST).to_bytes(4, "little").hex().encode()
    client.sendall(frame(b"k"))
    t.join(20)
    client.close()
    assert results == [None] and m.state == "image"


def test_lost_connection_lets_the_jump_finish():
    m = machine()
    load(m, asm(out_e9("A"), CALL_BACK))
    t, results, client = serve_in_thread(m)
    r = PacketReader()
    assert exchange(client, r, frame(b"qAttached")) == b"1"
    client.close()
    t.join(20)
    assert isinstance(results[0], JumpResult) and m.state == "kernel"
    assert m.cpu._hooks == {}


def test_listen_binds_to_loopback_only_and_checks_the_port():
    for bad in (-1, 65536, "80", True):
        with pytest.raises(ValueError):
            listen(bad)
    ports, conns = [], []
    t = threading.Thread(target=lambda: conns.append(listen(0, ready=ports.append)))
    t.start()
    while not ports:
        t.join(0.01)
    with socket.create_connection(("127.0.0.1", ports[0])):
        t.join(10)
    assert conns[0].getsockname()[0] == "127.0.0.1"
    conns[0].close()


def test_continue_and_step_with_a_signal(cmds):
    assert cmds.handle(b"C05") == (None, "continue")
    assert cmds.handle(b"S05;1234") == (None, "step") and cmds.cpu.eip == 0x1234
    assert cmds.handle(b"Czz")[0] == b"E01"
