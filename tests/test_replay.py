"""`replay` over the shared Loghub systems, and the guarantees the default policy must keep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from lipservice_proxy.replay import parse_line, read_records, replay
from lipservice_proxy.sampling.policy import Policy

from .support.loghub import available_systems, iter_lines

SYSTEMS = available_systems()
RECORDS, RATE = 100_000, 1000.0


def loghub_json_lines(system: str) -> list[str]:
    """Content as the body, the Level column as severity where the system has one."""
    return [
        orjson.dumps({"body": line.content, **({"severity": line.level} if line.level else {})}).decode()
        for line in iter_lines(system)
    ]


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    return {
        system: replay(read_records(loghub_json_lines(system)), Policy(), total=RECORDS, rate=RATE).as_dict(
            top=10**6
        )
        for system in SYSTEMS
    }


def test_the_shared_systems_are_there() -> None:
    assert len(SYSTEMS) == 8, "../shared/loghub should hold the eight Loghub-2k systems"


@pytest.mark.parametrize("system", SYSTEMS)
def test_default_policy_guarantees(reports: dict[str, dict], system: str) -> None:
    report = reports[system]
    assert report["total"]["seen"] == RECORDS
    for severity in ("ERROR", "FATAL"):
        if severity in report["severities"]:
            tally = report["severities"][severity]
            assert tally["kept"] == tally["seen"], f"{severity} records dropped"
    for pattern in report["patterns"]:
        assert pattern["windows_without_kept"] == 0, f"pattern {pattern['template']!r} vanished from a window"
        if pattern["seen"] >= 100:
            assert abs(pattern["estimate_error"]) <= 0.02, pattern


@pytest.mark.parametrize("system", ["HDFS", "OpenSSH"])
def test_mostly_info_systems_are_cut_by_three_quarters(reports: dict[str, dict], system: str) -> None:
    assert reports[system]["total"]["savings_records"] >= 0.75


def test_worst_estimate_error_is_reported(
    reports: dict[str, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    worst = max(
        (abs(p["estimate_error"]), system, p["template"])
        for system, report in reports.items()
        for p in report["patterns"]
        if p["seen"] >= 100
    )
    with capsys.disabled():
        print(
            f"\nworst per-pattern estimate error (>=100 records): {worst[0]:.3%} "
            f"in {worst[1]}: {worst[2][:60]}"
        )
        for system, report in reports.items():
            print(
                f"  {system:10} savings {report['total']['savings_records']:.1%} of records, "
                f"{report['total']['savings_bytes']:.1%} of bytes, {report['pattern_count']} patterns"
            )
    assert worst[0] <= 0.02


def test_input_formats() -> None:
    (plain,) = parse_line("disk /dev/sda1 is 91% full\n")
    assert (
        plain.record.body.string_value == "disk /dev/sda1 is 91% full" and plain.service == "unknown_service"
    )
    (structured,) = parse_line(
        '{"body": "paid", "level": "warning", "service": "shop", "timestamp": "2026-11-22T10:00:00Z",'
        ' "trace_id": "5b8efff798038103d269b633813fc60c"}'
    )
    assert structured.record.severity_text == "warning" and structured.service == "shop"
    assert structured.timestamp == 1795341600.0
    assert structured.record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    otlp = (
        '{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},'
        '"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a"}},{"body":{"stringValue":"b"}}]}]}]}'
    )
    assert [(r.service, r.record.body.string_value) for r in parse_line(otlp)] == [
        ("cart", "a"),
        ("cart", "b"),
    ]
    assert parse_line("   \n") == []
    assert parse_line("{not json")[0].record.body.string_value == "{not json"


def test_replay_command_table_and_json(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"GET /item/{i} 200\n" for i in range(50)) + "ERROR payment 7 failed\n")
    command = [sys.executable, "-m", "lipservice_proxy.cli", "replay", str(log), "--records", "1000"]
    table = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "savings:" in table and "GET <PATH> <NUM>" in table
    data = json.loads(
        subprocess.run(
            [*command, "--format", "json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    assert data["total"]["seen"] == 1000
    assert data["severities"]["ERROR"]["kept"] == data["severities"]["ERROR"]["seen"]
    missing = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "replay", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
