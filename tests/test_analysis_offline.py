"""`lipservice-proxy analyze` over shared loghub files, checked by replaying the policy it proposes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lipservice_proxy.cli import main
from lipservice_proxy.replay import read_records, replay
from lipservice_proxy.sampling.policy import load_policy, parse_policy

from .support.loghub import LOGHUB_DIR

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
RECORDS = 100_000


def log_file(system: str) -> Path:
    return LOGHUB_DIR / system / f"{system}_2k.log"


@pytest.mark.loghub
@pytest.mark.parametrize("system", ["HDFS", "OpenSSH"])
def test_analyze_proposes_a_policy_that_cuts_90_percent_and_loses_nothing_important(
    system: str, tmp_path: Path
) -> None:
    source = log_file(system)
    output = tmp_path / "policies" / "generated.yaml"
    argv = [
        "analyze",
        str(source),
        "-o",
        str(output),
        "--records",
        str(RECORDS),
        "--policy",
        str(DEFAULT_POLICY),
    ]
    assert main(argv) == 0

    policy = load_policy(output)
    assert (policy.version, policy.generated_by) == (load_policy(DEFAULT_POLICY).version + 1, "heuristic")
    assert policy.reasoning and "target keeps 10.0%" in policy.reasoning
    assert policy.patterns and all(rule.reason for rule in policy.patterns)

    records = read_records(source.read_text(encoding="utf-8", errors="replace").splitlines())
    report = replay(records, policy, total=RECORDS).as_dict(top=1_000_000)
    total = report["total"]
    assert total["seen"] == RECORDS  # type: ignore[index]
    assert total["savings_records"] >= 0.90, total  # type: ignore[index]
    for severity in ("ERROR", "FATAL"):
        tally = report["severities"].get(severity)  # type: ignore[attr-defined]
        if tally is not None:
            assert tally["kept"] == tally["seen"]
    patterns = report["patterns"]
    assert len(patterns) == report["pattern_count"]  # type: ignore[arg-type]
    assert [p["id"] for p in patterns if p["windows_without_kept"]] == []  # type: ignore[union-attr]

    assert main(argv) == 0  # a second pass refines the first: version + 1, the first kept in history
    assert load_policy(output).version == policy.version + 1
    (archived,) = (output.parent / "history").iterdir()
    assert load_policy(archived) == policy


@pytest.mark.loghub
def test_analyze_reads_stdin_and_prints_the_policy(tmp_path: Path) -> None:
    source = log_file("OpenSSH")
    completed = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "analyze", "-", "--policy", str(DEFAULT_POLICY)],
        input=source.read_bytes(),
        capture_output=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    policy = parse_policy(completed.stdout)
    assert policy.generated_by == "heuristic" and policy.patterns
    assert b"analyze: 2000 records" in completed.stderr


def test_analyze_refuses_empty_input_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("\n\n")
    assert main(["analyze", str(empty), "--policy", str(DEFAULT_POLICY)]) == 2
    assert "no log records" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.log")]) == 2
    assert "cannot read" in capsys.readouterr().err
