"""docs/tutorial-bios.rst is executable: its ``$`` commands (``kjcore``, ``kjexec``) and its
``>>>`` examples run in document order in one scratch directory, and each command's output
must match the block below it (``...`` matches anything, as in doctest)."""
import doctest
import os
import re
import shlex

from kjcore.commands import kjexec
from kjcore.commands.main import main as kjcore_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "docs", "tutorial-bios.rst")
COMMANDS = {"kjcore": kjcore_main, "kjexec": kjexec.main}
_CONSOLE = re.compile(r"^\.\. code-block:: console\n\n((?:   .*\n|\n)+)", re.M)
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _commands(block):
    """(command line, expected output) pairs of a console block (indented 3)."""
    pairs = []
    for line in block.rstrip("\n").split("\n"):
        line = line[3:]
        if line.startswith("$ "):
            pairs.append([line[2:], ""])
        else:
            pairs[-1][1] += line + "\n"
    return pairs


def _run_command(capsys, line, expected):
    name, *argv = shlex.split(line)
    status = COMMANDS[name](argv)
    out = capsys.readouterr().out
    assert status == 0, f"{line!r} exited with {status}:\n{out}"
    checker = doctest.OutputChecker()
    assert checker.check_output(expected, out, _FLAGS), \
        f"{line!r}:\n" + checker.output_difference(doctest.Example(line, expected), out, _FLAGS)


def test_tutorial_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    with open(TUTORIAL) as f:
        text = f.read()
    globs, parser = {}, doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    position, commands, examples = 0, 0, 0
    for block in [*_CONSOLE.finditer(text), None]:
        prose = text[position:block.start() if block else len(text)]
        test = parser.get_doctest(prose, globs, "tutorial-bios", TUTORIAL,
                                  text.count("\n", 0, position))
        with capsys.disabled():
            result = runner.run(test, clear_globs=False)
        assert result.failed == 0, f"{result.failed} tutorial examples failed (see the output)"
        examples += result.attempted
        globs = test.globs                      # DocTest copies them: carry them on
        if block is None:
            break
        for line, expected in _commands(block.group(1)):
            _run_command(capsys, line, expected)
            commands += 1
        position = block.end()
    assert commands >= 8 and examples >= 25
