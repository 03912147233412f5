"""The README's commands as a new user types them: the ones that need neither data, GPUs nor training run here as
written (the one-process run and the smoke evaluation are in tests/e2e/test_one_process.py)."""

from __future__ import annotations

import re
import shlex

import pytest

from ..conftest import REPO, run_spinegpt


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("spinegpt "):
                commands.append(" ".join(command.split()))
    return commands


QUICK = [
    c
    for c in readme_commands()
    if c.split()[1] in ("validate", "plan") and "--audit" not in c and "--cost" not in c  # those read the data
]


def test_the_readme_shows_the_quick_commands_checked_here() -> None:
    assert len(QUICK) >= 5 and any("--memory" in c for c in QUICK) and any(" validate " in c for c in QUICK)


@pytest.mark.parametrize("command", QUICK)
def test_a_readme_command_runs_as_shown(command: str) -> None:
    result = run_spinegpt(*shlex.split(command)[1:], check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
