"""The container image, built from the Dockerfile for real (scripts/build-image.sh: buildah on a Debian
base made with debootstrap) and run as the image runs it: its entrypoint, its baked-in config, its
non-root user and empty data directory. Only the listeners are moved to loopback ports, through the
environment overrides an operator would use. `buildah run` with chroot isolation shares this machine's
network, so the test talks to the container on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from .support.otelcol import free_port
from .support.otlp_samples import attribute
from .support.proxy import http_get
from .support.waiting import wait_until

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[1]
EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@pytest.fixture(scope="module")
def image() -> str:
    result = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh")], capture_output=True, text=True, timeout=1500, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = subprocess.run(
        ["buildah", "from", "--quiet", image], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120, check=False)


def image_config(image: str) -> dict[str, Any]:
    inspected = subprocess.run(
        ["buildah", "inspect", "--type", "image", image],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config: dict[str, Any] = json.loads(inspected.stdout)["Docker"]["config"]
    return config


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (the container's processes are this machine's)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children.get(parent, [])]
        found += frontier
    return found


def proxy_pid(run: subprocess.Popen[bytes]) -> int | None:
    """The proxy's own process inside the container: the Python process under `buildah run`."""
    for pid in descendants(run.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command[0].endswith(b"/python") and b"run" in command:
            return pid
    return None


def log_request(count: int) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(attribute("service.name", "image-test"))
    records = resource_logs.scope_logs.add().log_records
    for index in range(count):
        record = records.add(severity_number=17 if index % 10 == 0 else 9)
        record.body.string_value = f"order {index} failed" if index % 10 == 0 else f"order {index} shipped"
    return request.SerializeToString()


def test_image_healthcheck_survives_the_docker_format(image: str) -> None:
    config = image_config(image)
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["lipservice-proxy", "run"]


def test_image_runs_its_own_config_and_stops_cleanly_on_sigterm(image: str, container: str) -> None:
    config = image_config(image)
    # `buildah run` needs the command spelled out: the image's own entrypoint and arguments
    ports = {"grpc": free_port(), "http": free_port(), "admin": free_port()}
    overrides = {
        "LIPSERVICE_RECEIVERS__GRPC__ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "LIPSERVICE_RECEIVERS__HTTP__ENDPOINT": f"127.0.0.1:{ports['http']}",
        "LIPSERVICE_ADMIN__ENDPOINT": f"127.0.0.1:{ports['admin']}",
    }
    argv = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    argv += [arg for key, value in overrides.items() for arg in ("--env", f"{key}={value}")]
    run = subprocess.Popen(
        [*argv, container, "--", *config["Entrypoint"], *config["Cmd"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    kept: list[dict[str, Any]] = []
    errors: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: kept.extend(orjson.loads(line) for line in run.stdout), daemon=True),
        threading.Thread(target=lambda: errors.extend(run.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        admin = f"http://127.0.0.1:{ports['admin']}"
        wait_until(lambda: run.poll() is not None or healthy(admin), 60, interval=0.1, what="/healthz")
        assert run.poll() is None, b"".join(errors).decode(errors="replace")[-2000:]
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            channel.unary_unary(EXPORT)(log_request(200), timeout=10)
        # the debug exporter prints kept records as OTLP/JSON lines: every ERROR record at least
        wait_until(lambda: errors_kept(kept) >= 20, 30, what="the 20 ERROR records on stdout")
        pid = wait_until(lambda: proxy_pid(run), 10, what="the proxy's process in the container")
        os.kill(pid, signal.SIGTERM)
        assert run.wait(60) == 0, b"".join(errors).decode(errors="replace")[-2000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    # the pattern state was saved into the image's (initially empty) data directory
    state = subprocess.run(
        [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            "cat",
            "/var/lib/lipservice/patterns/state.json",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert state.returncode == 0 and b"order" in state.stdout, state.stderr[-2000:]


def healthy(admin: str) -> bool:
    try:
        return http_get(admin + "/healthz")[0] == 200
    except OSError:
        return False


def errors_kept(kept: list[dict[str, Any]]) -> int:
    """ERROR records among the OTLP/JSON requests the debug exporter printed."""
    return sum(
        record.get("severityNumber") in (17, "SEVERITY_NUMBER_ERROR")
        for request in list(kept)
        for resource_logs in request.get("resourceLogs", [])
        for scope_logs in resource_logs.get("scopeLogs", [])
        for record in scope_logs.get("logRecords", [])
    )
