"""The README's quick start, run as written there: ``make setup``, ``make run``, ``make test``.

The setup and test commands are what CI (``.ci/run``) runs on a fresh machine; this test checks
that they are the README's, then really runs ``make run`` the non-interactive way the README
gives (``ARGS=--exit-after-demo``) with a fresh HOME, and reads what a newcomer would see.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port

QUICK_START = ["make setup", "make run", "make test"]
# Variables that would send caches, downloads or the Ray cluster somewhere other than HOME, and
# those of an enclosing make (`make test` runs this): a newcomer's `make run` is not nested,
# so it prints no "make[1]: Entering directory" lines.
NOT_INHERITED = ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "HF_HOME", "TORCH_HOME",
                 "RAY_ADDRESS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
WARNING_TEXT = ("Warning", "WARNING", "DeprecationWarning", "Traceback")
# A row of a recommendation table: rank, item id, score, title (irec.serve_commands).
TABLE_ROW = re.compile(r"^ ?[1-9]  +\d+  +-?\d+\.\d{3}  \S")


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _commands(script: str) -> list[str]:
    """The command of each line of a shell script, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in script.splitlines())
    return [line for line in lines if line]


def _quick_start() -> list[str]:
    section = _readme().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```$", section, flags=re.M | re.S)
    assert block, "no ```bash block under ## Quick start"
    return _commands(block.group(1))


def test_the_quick_start_is_three_make_commands_and_ci_runs_its_setup_and_test():
    assert _quick_start() == QUICK_START
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert "make setup" in ci and "make test" in ci, ci
    assert ci.index("make setup") < ci.index("make test"), ci


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> list[str]:
    """The output lines of ``make run ARGS=--exit-after-demo`` run once, private HOME."""
    tmp_path = tmp_path_factory.mktemp("home")
    readme = _readme()
    assert "make run ARGS=--exit-after-demo" in readme
    stated = re.search(r"`make run` \(about ([\d.]+) minutes", readme)
    assert stated, "the README no longer says how long `make run` takes"
    assert "BENTOML_HOME" in os.environ  # the session's private store (tests/conftest.py)
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["HOME"] = str(tmp_path)
    args = f"--exit-after-demo --http-port {free_port()} --grpc-port {free_port()}"
    started = time.perf_counter()
    done = subprocess.run(["make", "run", f"ARGS={args}"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)
    seconds = time.perf_counter() - started
    out = done.stdout
    lines = out.splitlines()
    print(out)  # pytest shows it when the test fails
    print(f"make run: {seconds:.0f} s (README: about {stated.group(1)} minutes), "
          f"{len(lines)} lines of output")
    assert done.returncode == 0, out[-4000:]

    # the demo: three users and one query, five recommendations each, and the closing line
    assert "[7/7] recommend" in out and "done in" in out, out[-4000:]
    for header in ("user 1:", "user 2:", "user 3:", "user 1 asking for 'a funny comedy':"):
        assert header in lines, header
    assert sum(bool(TABLE_ROW.match(line)) for line in lines) == 20, out[-4000:]
    after_query = lines[lines.index("user 1 asking for 'a funny comedy':"):]
    intent = next(line for line in after_query if line.startswith("intent:"))
    assert "Comedy" in intent, intent
    data = ROOT / "feature_repo" / "data"  # where the tiny preset keeps its workspace
    assert json.loads((data / "manifest.json").read_text())["counts"]["events"] == 100_000
    assert (data / "online_store.db").stat().st_size > 0
    assert (tmp_path / "irec-runs").is_dir()  # checkpoints went under the private HOME
    return lines


@pytest.mark.timeout(1000)  # beyond the run's own 900 s, so that one reports the overrun
def test_make_run_as_the_readme_says_prints_recommendations(demo):
    """``make run ARGS=--exit-after-demo`` from the repository root: the demo's tables."""
    assert demo


def test_make_run_prints_one_screen_without_warnings(demo):
    """What a newcomer reads: under 80 lines, no warning text."""
    lines = demo
    noise = [line for line in lines if any(text in line for text in WARNING_TEXT)]
    problems = [f"{len(noise)} warning lines, the first: {noise[:3]}"] if noise else []
    if len(lines) >= 80:
        problems.append(f"{len(lines)} lines of output, not under 80")
    assert not problems, "; ".join(problems)


def test_the_libraries_output_went_to_the_log_file_the_demo_named(demo):
    """The quiet console moved Ray's and the libraries' lines, it did not lose them."""
    named = [line.split("logs: ", 1)[1].split(" (", 1)[0] for line in demo
             if line.startswith("logs: ")]
    assert len(named) == 1, demo[:3]
    log = Path(named[0]).read_text()
    assert "[7/7] recommend" in log  # our own lines are in it too, in order
    assert "Started Serve" in log, log[-2000:]  # Serve's INFO line from the driver
    assert "Materializing" in log, log[-2000:]  # Feast's own progress output
