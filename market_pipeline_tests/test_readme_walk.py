"""The README, walked as a newcomer walks it: every command its code blocks show is run, in the
order they appear, in a fresh copy of the project right after `make run` (its first command), and
gives what the README shows.

How the README is read: in a `console` block, a line starting with `$ ` is a command and the lines
after it are what it prints; `...` stands for any number of lines, `…` inside a line for any text,
and every number may differ (dates and counts depend on the day). A `python` block is run as a
script; the plain block right after it is what it prints. A command in a `sh` block must be run by
a `console` block too, or be one of NOT_RUN. Blank lines are ignored; a command whose shown output
has a `market-pipeline: error:` line must fail, every other command must succeed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from market_pipeline_tests.fresh_copy import PROJECT, VENV_BIN, fresh_copy, newcomer_env
from market_pipeline_tests.waiting import scaled

pytestmark = pytest.mark.slow

NOT_RUN = {
    "make test": "it is the suite this test belongs to",
    "make dev": "long-running; test_make_dev.py starts it and stops it through make's PID",
}
GAP = object()


@dataclass
class Step:
    command: str  # a shell command, or Python source when `python` is set
    lines: list[str] = field(default_factory=list)  # the output the README shows
    python: bool = False

    @property
    def shown(self) -> list:
        return _shown(self.lines)

    @property
    def fails(self) -> bool:
        return any(line.startswith("market-pipeline: error:") for line in self.lines)


def _pattern(line: str) -> re.Pattern:
    parts = []
    for piece in re.split(r"(\d+|…)", " ".join(line.split())):
        if piece == "…":
            parts.append(".*")
        elif piece.isdigit():
            parts.append(r"\d+")
        else:
            parts.append(re.escape(piece).replace(r"\ ", r"\s+"))
    return re.compile("".join(parts))


def _shown(lines: list[str]) -> list:
    return [GAP if line.strip() == "..." else _pattern(line) for line in lines if line.strip()]


def readme_steps(text: str) -> tuple[list[Step], list[str]]:
    """The README's steps in order, and the commands of its `sh` blocks."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    steps, sh = [], []
    for i, (language, body) in enumerate(blocks):
        lines = body.rstrip("\n").split("\n")
        if language == "console":
            for line in lines:
                if line.startswith("$ "):
                    steps.append(Step(line[2:].strip()))
                elif steps:
                    steps[-1].lines.append(line)
        elif language == "sh":
            sh += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
        elif language == "python":
            following = blocks[i + 1] if i + 1 < len(blocks) and blocks[i + 1][0] == "" else None
            steps.append(Step(body, following[1].rstrip("\n").split("\n") if following else [], python=True))
    return steps, sh


def matches(shown: list, output: str) -> str | None:
    """None when `output` is what `shown` describes, else what differs."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    at, gap = 0, False
    for item in shown:
        if item is GAP:
            gap = True
            continue
        while at < len(lines) and not item.fullmatch(lines[at]):
            if not gap:
                return f"expected {item.pattern!r}, got {lines[at]!r}"
            at += 1
        if at == len(lines):
            return f"expected {item.pattern!r}, the output ended"
        at, gap = at + 1, False
    if at < len(lines) and not gap:
        return f"unexpected line {lines[at]!r}"
    return None


def test_every_readme_command_runs_in_order_and_prints_what_the_readme_shows(tmp_path):
    copy = fresh_copy(tmp_path / "market_pipeline")
    venv = VENV_BIN.parent
    env = newcomer_env(copy, PYTHONUNBUFFERED="1")  # the order a terminal shows stdout and stderr in
    steps, sh = readme_steps((PROJECT / "README.md").read_text())
    commands = [step.command for step in steps if not step.python]
    assert commands[0] == "make run"  # a newcomer's first command
    assert [c for c in sh if c not in commands and c not in NOT_RUN] == []  # nothing shown goes untried
    for step in steps:
        if step.python:
            done = subprocess.run([sys.executable, "-c", step.command], cwd=copy, env=env, capture_output=True,
                                  text=True, timeout=scaled(300))
            output, what = done.stdout + done.stderr, "the Python example"
        else:
            command = step.command.replace(".venv/bin/", f"{VENV_BIN}/")
            if command.startswith("make "):  # with this suite's virtualenv, never installing again
                command += f" -o {shlex.quote(str(venv / '.installed-market-pipeline'))} VENV={shlex.quote(str(venv))}"
            done = subprocess.run(["bash", "-c", command + " 2>&1"], cwd=copy, env=env, capture_output=True,
                                  text=True, timeout=scaled(600))
            output, what = done.stdout, f"`{step.command}`"
        assert (done.returncode != 0) == step.fails, f"{what} exited {done.returncode}:\n{output}"
        assert "Traceback" not in output, f"{what}:\n{output}"
        difference = matches(step.shown, output)
        assert difference is None, f"{what}: {difference}\n--- output:\n{output}"


def test_the_walk_tells_a_different_output_apart():
    """The comparison itself: numbers and `…` are free, words and order are not."""
    shown = _shown(["...", "AAPL stock 499 rows 2024-12-09..2026-12-04 completed", "1 of 1 symbol(s) … run(s)."])
    assert matches(shown, "make line\nAAPL  stock  500 rows  2024-12-10..2026-12-07 completed\n1 of 1 symbol(s) completed in 1 run(s).") is None
    assert matches(shown, "AAPL stock 500 rows 2024-12-10..2026-12-07 failed\n1 of 1 symbol(s) in 1 run(s).") is not None
    assert matches(shown, "AAPL stock 5 rows 2024-12-10..2026-12-07 completed") is not None  # the summary is missing
    assert matches(_shown(["a", "b"]), "a\nc\nb") is not None  # no `...`: nothing in between
