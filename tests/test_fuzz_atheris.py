"""A bounded run of each atheris (libFuzzer) target in CI: coverage-guided, from the seed corpus, a
few thousand inputs each. fuzz/README.md documents the long runs and their figures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[1]
RUNS = 5000


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_fuzz_target_survives_a_bounded_coverage_guided_run(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [
            sys.executable, "-m", "fuzz.run", target, str(corpus),
            f"-runs={RUNS}", "-max_total_time=120", "-rss_limit_mb=1024", "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} runs" in result.stderr
    assert not list(tmp_path.glob("crash-*")) and any(corpus.iterdir())
