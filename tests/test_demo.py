"""`lipservice-proxy demo`: a real proxy in-process, the bundled workload through the real OTel SDK,
and a summary whose numbers are the proxy's own counters."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lipservice_proxy.demo import (
    WORKLOAD,
    ProgressBar,
    Summary,
    generate,
    load_workload,
    run_demo,
)
from lipservice_proxy.errors import InputError

from .support.proxy import http_get
from .support.waiting import wait_until

KEEP_ALL = "version: 3\ngenerated_by: manual\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def demo(records: int, policy: Path | None = None) -> tuple[Summary, str, str]:
    out, progress = io.StringIO(), io.StringIO()
    summary = asyncio.run(
        run_demo(records=records, seed=1, top=5, policy=policy, serve=False, out=out, progress=progress)
    )
    return summary, out.getvalue(), progress.getvalue()


def test_the_workload_is_deterministic_and_every_field_is_filled() -> None:
    messages = load_workload(WORKLOAD.read_text(encoding="utf-8"))
    first, second = list(generate(messages, 500, seed=3)), list(generate(messages, 500, seed=3))
    assert first == second and first != list(generate(messages, 500, seed=4))
    assert all("{" not in body for _, _, body in first)
    assert {service for service, _, _ in first} == {"gateway", "auth", "catalog", "checkout"}
    with pytest.raises(InputError, match="bad entry"):
        load_workload("services: {a: [{weight: 1, severity: INFO, body: 'x {nonsense}'}]}")


def test_the_demo_reports_what_the_policy_kept_and_dropped() -> None:
    summary, out, progress = demo(4000)
    received = {name: r for name, (r, _) in summary.severities.items()}
    kept = {name: k for name, (_, k) in summary.severities.items()}
    assert sum(received.values()) == 4000 == summary.records  # every record the SDK sent was counted
    assert kept["ERROR"] == received["ERROR"] > 0  # always kept
    assert received["DEBUG"] * 0.04 < kept["DEBUG"] < received["DEBUG"] * 0.2  # 5%, plus firsts
    assert 0 < summary.bytes_kept < summary.bytes_received / 2
    assert summary.services == 4 and len(summary.patterns) == 5
    assert summary.patterns[0]["template"] == "GET /healthz <NUM> <DURATION>"
    assert "  severity   received      kept   dropped   kept %" in out
    assert re.search(r"^  total +4,000 ", out, re.M) and "top patterns" in out and "KiB saved" in out
    assert "4,000/4,000 records" in progress
    assert progress.count("\n") == 1 and "\r" not in progress  # not a terminal: one final line


def test_a_keep_everything_policy_drops_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "keep-all.yaml"
    policy.write_text(KEEP_ALL)
    summary, out, _ = demo(1000, policy)
    assert all(received == kept for received, kept in summary.severities.values())
    assert f"{policy} (version 3, manual)" in out


def test_the_progress_bar_redraws_in_place_on_a_terminal() -> None:
    terminal = Terminal()
    bar = ProgressBar(200, terminal, width=10)
    bar.update(50)
    bar.update(100)
    bar.finish(200)
    frames = terminal.getvalue().split("\r")[1:]
    assert [frame.split("]")[0] for frame in frames] == ["  [##--------", "  [#####-----", "  [##########"]
    assert terminal.getvalue().endswith("\n")


def test_the_command_line_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "demo", "--records", "1500", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,  # no policies/ here: the built-in default applies
    )
    assert result.returncode == 0, result.stderr
    assert "1,500/1,500 records" in result.stderr and "Traceback" not in result.stderr
    assert "lipservice-proxy demo: 1,500 log records from 4 services" in result.stdout
    assert "built-in default (version 1, default)" in result.stdout
    assert result.stdout.count("\n  ") >= 12


def test_serve_keeps_the_status_page_up_until_a_signal(tmp_path: Path) -> None:
    output = tmp_path / "out.txt"
    with output.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "lipservice_proxy.cli", "demo", "--records", "500", "--serve"],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            address = re.compile(r"status page: (http://127\.0\.0\.1:\d+/)")
            wait_until(lambda: address.search(output.read_text()) or process.poll() is not None, 120)
            found = address.search(output.read_text())
            assert found, output.read_text()
            status, page = http_get(found.group(1))
            assert status == 200 and b"GET /healthz &lt;NUM&gt;" in page
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
