"""Every command the README gives runs as written in bash and zsh.

zsh expands an unquoted ``[`` / ``*`` / ``?`` as a glob and stops with "no matches found", so list arguments must be
quoted (``'seeds=[0,1,2]'``). Each ``fl-mdisc`` command must name a subcommand that exists, and the hydra overrides
of ``run`` / ``show`` / ``calibrate`` must compose (the same validation a run does before any work starts)."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The shell lines of README's code blocks (continuations joined, comments dropped) and the inline
    `fl-mdisc ...` commands of its tables."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        if block.lstrip().startswith("@"):  # BibTeX
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    lines += re.findall(r"`((?:\.venv/bin/)?fl-mdisc [^`]+)`", text)
    return lines


def unquoted_globs(line: str) -> list[str]:
    """Glob characters outside single or double quotes."""
    out, quote = [], None
    for ch in line:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[]*?":
            out.append(ch)
    return out


COMMANDS = readme_commands()


def test_the_readme_has_its_commands():
    assert any(c.startswith("make run") for c in COMMANDS) and any(c.startswith("make test") for c in COMMANDS)
    assert sum("fl-mdisc" in c for c in COMMANDS) >= 5


@pytest.mark.parametrize("line", COMMANDS)
def test_no_unquoted_glob(line):
    assert not unquoted_globs(line), f"quote the list arguments for zsh: {line}"


def test_the_glob_check_finds_an_unquoted_list():
    assert unquoted_globs("fl-mdisc grid seeds=[0,1]") and not unquoted_globs("fl-mdisc grid 'seeds=[0,1]'")


@pytest.mark.parametrize("line", [c for c in COMMANDS if "fl-mdisc " in c])
def test_fl_mdisc_commands_parse(line):
    from app.cli import SWEEPS
    from fl_mdisc.config import compose

    args = shlex.split(line)
    args = args[next(i for i, a in enumerate(args) if a.endswith("fl-mdisc")) + 1:]
    assert args[0] in {"run", "calibrate", "docs", "bench", "show"} | {s[0] for s in SWEEPS}, line
    if args[0] in ("run", "calibrate", "show"):
        compose([a for a in args[1:] if not a.startswith("-")])  # a bad override raises a ConfigError naming the fix
