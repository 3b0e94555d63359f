"""No FPU: x87 escapes (D8-DF) raise #NM when CR0.EM or CR0.TS is set (so an
OS can emulate), and #UD otherwise (there is no unit to talk to).  WAIT
raises #NM with CR0.TS and CR0.MP, else does nothing.  MMX/SSE opcodes are
absent from the opcode table and decode as #UD."""
from .jit import kernel
from .memory import exc
from .state import CR0, CR0_EM, CR0_MP, CR0_TS, D_OP, NM_, UD_


@kernel("i", "sr")
def op_fpu(s, ram):
    cr0 = s[CR0]
    if s[D_OP] == 0x9B:
        if (cr0 & CR0_TS) and (cr0 & CR0_MP):
            exc(s, NM_, -1)
        return 0
    if cr0 & (CR0_EM | CR0_TS):
        exc(s, NM_, -1)
    else:
        exc(s, UD_, -1)
    return 0
