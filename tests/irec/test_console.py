"""The quiet console on real file descriptors: a small CLI run as its own process.

What the command says reaches the terminal; what libraries print, log and warn, and what C
code writes to fd 2, goes to the log file the command names first. Expected failures end in
one ``error:`` line and their exit status; a bug in one line that points at its traceback.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT

PROGRAM = textwrap.dedent('''
    import ctypes, logging, os, sys, warnings
    import typer
    from irec.console import Commands, fail, session

    app = typer.Typer(cls=Commands)

    @app.command()
    def go(mode: str = "ok", verbose: bool = False) -> None:
        if mode == "bad-input":
            fail("--thing 3 is not a thing")
        if mode == "bug-outside":
            {}["missing key"]
        with session("go", verbose) as console:
            console.echo("step one")
            print("a library print")
            logging.getLogger("ray.serve").warning("a library WARNING log line")
            warnings.warn("a DeprecationWarning from a library", DeprecationWarning)
            libc = ctypes.CDLL(None)
            libc.write(2, b"C code on fd 2\\n", 15)
            if mode == "refused":
                fail("the app refused the request (408)", exit_code=1)
            if mode == "bug":
                raise ZeroDivisionError("a bug")
            console.echo("step two")

    @app.command()
    def other() -> None:
        pass

    app()
''')
LIBRARY = ("a library print", "a library WARNING log line", "DeprecationWarning from a library",
           "C code on fd 2")


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(script), "go", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _log(done: subprocess.CompletedProcess) -> str:
    first = done.stdout.splitlines()[0]
    assert first.startswith("logs: "), done.stdout
    return Path(first.split("logs: ", 1)[1].split(" (", 1)[0]).read_text()


def test_the_terminal_shows_our_lines_and_the_log_has_everything(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["step one", "step two"], done.stdout
    assert done.stderr == ""
    log = _log(done)
    for text in (*LIBRARY, "step one", "step two"):
        assert text in log, (text, log)


def test_verbose_leaves_everything_on_the_terminal(tmp_path):
    done = _run(tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert "logs: " not in both
    for text in (*LIBRARY, "step one", "step two"):
        assert text in both, (text, both)


@pytest.mark.parametrize(("mode", "status", "message"), [
    ("bad-input", 2, "error: --thing 3 is not a thing"),
    ("refused", 1, "error: the app refused the request (408)"),
])
def test_an_expected_failure_is_one_line_and_its_exit_status(tmp_path, mode, status, message):
    done = _run(tmp_path, "--mode", mode)
    assert done.returncode == status
    assert done.stderr.strip() == message, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_bug_is_one_line_on_the_terminal_and_its_traceback_in_the_log(tmp_path):
    done = _run(tmp_path, "--mode", "bug")
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.startswith("error: ZeroDivisionError: a bug (traceback in "), done.stderr
    assert "\n" not in line and "Traceback" not in done.stdout
    log = _log(done)
    assert "Traceback (most recent call last)" in log and "ZeroDivisionError" in log


def test_a_bug_outside_a_quiet_console_also_ends_in_one_line_and_a_log(tmp_path):
    done = _run(tmp_path, "--mode", "bug-outside")
    assert done.returncode == 1 and done.stdout == ""
    line = done.stderr.strip()
    assert line.startswith("error: KeyError: 'missing key' (traceback in "), done.stderr
    assert "\n" not in line
    log = Path(line.split("(traceback in ", 1)[1].rstrip(")")).read_text()
    assert "Traceback (most recent call last)" in log and '{}["missing key"]' in log


def test_usage_errors_stay_clicks_own(tmp_path):
    done = _run(tmp_path, "--no-such-option")
    assert done.returncode == 2 and "No such option" in done.stderr, done.stderr
