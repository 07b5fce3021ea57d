"""The package as a user meets it: `mypy --strict` accepts it and the
README's example, which runs as printed against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import API_KEY, SECRET, Server

PACKAGE = Path(__file__).resolve().parent.parent


def readme_example(server: Server) -> str:
    """The README's first Python block, pointed at the test server."""
    text = (PACKAGE / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python example"
    example = match.group(1)
    for printed, here in (
        ("http://127.0.0.1:8080", server.http),
        ("herald-dev-key", API_KEY),
    ):
        assert printed in example, printed
        example = example.replace(printed, here)
    assert len(example.strip().splitlines()) <= 10
    return example


def mypy(*targets: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, *targets],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_and_the_readme_example_pass_mypy_strict(server: Server, tmp_path: Path) -> None:
    assert (PACKAGE / "herald_client" / "py.typed").is_file()
    script = tmp_path / "example.py"
    script.write_text(readme_example(server))
    mypy("herald_client", str(script), cwd=PACKAGE)


def test_the_readme_example_runs(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example(server))
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(PACKAGE), "HERALD_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["[{'text': 'hello'}] True", "no_devices", "[]"], result.stdout
