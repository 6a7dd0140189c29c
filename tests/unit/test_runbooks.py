"""Every command the runbooks and the README tell a person to type exists: its module, its
subcommand and its flags parse (``--help`` for the subcommand, and the flags used are known)."""

from __future__ import annotations

import base64
import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import run_text

REPO = Path(__file__).resolve().parents[2]
DOCS = [*sorted((REPO / "docs" / "runbooks").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text()):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("cat ") and "| python" in line:
                    line = line.split("|", 1)[1].strip()
                if line.startswith(("python -m ", "python worker.py")):
                    found.append((doc.name, line))
    return found


COMMANDS = commands()


def test_the_docs_have_commands() -> None:
    assert len(COMMANDS) >= 15
    names = {doc for doc, _ in COMMANDS}
    assert {"rollout.md", "rollback.md", "key-rotation.md", "troubleshooting.md"} <= names


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_command_parses(doc: str, line: str) -> None:
    argv = shlex.split(line.replace("<", "'<").replace(">", ">'"))
    if argv[:2] == ["python", "worker.py"]:
        assert (REPO / "worker.py").exists()
        return
    assert argv[:2] == ["python", "-m"], line
    module = argv[2]
    words = [a for a in argv[3:] if not a.startswith("-")]
    sub = words[:1]
    code, out = help_text(module, tuple(sub))
    assert code == 0, f"{doc}: `{line}`: {out[-500:]}"
    for flag in (a.split("=", 1)[0] for a in argv[3:] if a.startswith("--")):
        assert flag in out, f"{doc}: `{line}` uses {flag}, unknown to {module} {sub}"


@functools.cache
def help_text(module: str, sub: tuple[str, ...]) -> tuple[int, str]:
    done = run_text([sys.executable, "-m", module, *sub, "--help"])
    return done.returncode, done.stdout + done.stderr


def test_key_generation_command_makes_a_valid_key() -> None:
    text = (REPO / "docs" / "runbooks" / "key-rotation.md").read_text()
    snippet = re.search(r'python -c "(import base64, os;[^"]+)"', text)
    assert snippet is not None
    out = subprocess.run(
        [sys.executable, "-c", snippet.group(1)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(base64.b64decode(out)) == 32
