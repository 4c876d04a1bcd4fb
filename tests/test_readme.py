"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_block(starting: str) -> str:
    """The README's python code block whose first line is ``starting``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    matches = [block for block in blocks if block.startswith(starting)]
    assert len(matches) == 1, f"one README block should start with {starting!r}"
    return matches[0]


def test_bot_test_example_passes_in_an_empty_project(tmp_path: Path) -> None:
    """The README's test example passes when pasted into an empty project."""
    # the plugin's fixtures load from the installed package, with pytest-asyncio in strict mode
    (tmp_path / "test_my_bot.py").write_text(python_block("# test_my_bot.py\n"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_bot.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
