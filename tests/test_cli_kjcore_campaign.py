"""``kjcore fuzz --jumps``: the end-to-end campaign from the shell."""
from kjcore.commands.main import main


def test_fuzz_jumps(capsys):
    assert main(["fuzz", "--jumps", "40", "--seed", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "round trips" in out and "all held" in out
