"""The markers for tests that need a tool from outside Python (tests/conftest.py): a missing tool skips
the test with its reason, or fails it when CI is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDS_OPENSSL = "import pytest\n\n\n@pytest.mark.openssl\ndef test_needs_openssl():\n    pass\n"


def run_marked_test(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on one openssl-marked test, with tests/conftest.py and a PATH where no tool is found."""
    (tmp_path / "test_marked.py").write_text(NEEDS_OPENSSL)
    empty = tmp_path / "bin"
    empty.mkdir()
    environ = {key: value for key, value in os.environ.items() if key != "CI"}
    environ["PATH"] = str(empty)
    if ci is not None:
        environ["CI"] = ci
    argv = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(REPO / "pyproject.toml")]
    argv += [
        "--rootdir",
        str(tmp_path),
        "-rsE",
        "-q",
        "-p",
        "no:cacheprovider",
        str(tmp_path / "test_marked.py"),
    ]
    return subprocess.run(
        argv,
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_tool_skips_the_marked_test_with_its_reason(tmp_path: Path, ci: str | None) -> None:
    result = run_marked_test(tmp_path, ci)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "the openssl command is not installed" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_a_missing_tool_fails_the_marked_test(tmp_path: Path, ci: str) -> None:
    result = run_marked_test(tmp_path, ci)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout  # in its setup: the run is red
    assert "CI is set, so this test must run: the openssl command is not installed" in result.stdout
