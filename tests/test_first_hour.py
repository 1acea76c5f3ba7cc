"""Issue 19, "the first hour without surprises": what a new operator meets, tried as they would, through
the real `lipservice-proxy` command in a subprocess and real HTTP against it."""

from __future__ import annotations

import contextlib
import os
import re
import socketserver
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from .support.proxy import ProxyProcess, http_get
from .support.sdk import emit, sdk_logger
from .support.waiting import wait_until
from .test_status_page import SCREENSHOTS, run_chromium

REPO = Path(__file__).resolve().parents[1]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`lipservice-proxy ARGS` as a user runs it; the environment is the test's plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def warnings_of(proxy: ProxyProcess) -> list[str]:
    return [str(line.get("msg")) for line in proxy.log_lines if line.get("level") == "warning"]


# ---- 1. a sampler.policy_file that does not exist ----


def test_a_missing_policy_file_is_warned_about_at_start_and_on_the_status_page(tmp_path: Path) -> None:
    config: dict[str, Any] = {"sampler": {"policy_file": "policies/typo.yaml"}}
    with ProxyProcess(config, tmp_path) as proxy:
        warnings = [text for text in warnings_of(proxy) if "policies/typo.yaml" in text]
        assert warnings, proxy.log_lines
        assert "does not exist" in warnings[0] and str(tmp_path) in warnings[0]
        assert "built-in default" in warnings[0]

        status, body = http_get(proxy.admin_url + "/api/v1/policy")
        assert status == 200
        assert orjson.loads(body)["warnings"] == warnings[:1]
        status, page = http_get(proxy.admin_url + "/")
        assert status == 200
        assert "class='warning'" in page.decode() and "policies/typo.yaml" in page.decode()

        # once the file appears the policy store takes it up and the warning goes away
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "typo.yaml").write_text("version: 3\n")

        def policy() -> dict[str, Any]:
            return dict(orjson.loads(http_get(proxy.admin_url + "/api/v1/policy")[1]))

        wait_until(lambda: policy()["current"]["version"] == 3, timeout=20, what="the policy file to load")
        assert "warnings" not in policy()
        assert "class='warning'" not in http_get(proxy.admin_url + "/")[1].decode()


# ---- 6. ERROR-only patterns: every record kept, and shown so ----


def test_an_error_only_pattern_shows_rate_one_always_kept_in_the_api_and_in_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"body": f"payment {i} declined by the bank", "severity": "ERROR"} for i in range(300)]
    records += [{"body": f"cart {i} viewed", "severity": "INFO"} for i in range(200)]
    with ProxyProcess({}, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, service="shop") as logger:
            emit(logger, records)

        def patterns() -> dict[str, dict[str, Any]]:
            body = http_get(proxy.admin_url + "/api/v1/patterns")[1]
            return {p["template"]: p for p in orjson.loads(body)["patterns"]}

        wait_until(
            lambda: sum(p["received"] for p in patterns().values()) == 500, what="every record counted"
        )
        declined = patterns()["payment <NUM> declined by the bank"]
        assert declined["counts"] == {"ERROR": 300} and declined["kept"] == 300
        assert (declined["rate"], declined["rule"], declined["reason"]) == (
            1.0,
            "protected",
            "always kept (severity)",
        )
        viewed = patterns()["cart <NUM> viewed"]  # a sampled pattern keeps its severity's rate
        assert (viewed["rate"], viewed["rule"]) == (0.2, "severity")

        dom = run_chromium(tmp_path, "--dump-dom", proxy.admin_url + "/").stdout
        row = re.search(r"<tr>(?:(?!</tr>).)*payment &lt;NUM&gt; declined(?:(?!</tr>).)*</tr>", dom, re.S)
        assert row is not None, dom
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
        # columns: id, template, service, received, kept, last hour (a sparkline), rate, rule, reason
        assert cells[3:5] == ["300", "300"], cells
        assert cells[6:9] == ["1", "protected", "always kept (severity)"], cells

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "status_page_error_only_pattern.png"
        shot.unlink(missing_ok=True)
        run_chromium(tmp_path, "--window-size=1200,1100", f"--screenshot={shot}", proxy.admin_url + "/")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with capsys.disabled():
            print(f"\nstatus page screenshot (an ERROR-only pattern's row): {shot}")


# ---- 3. environment overrides: a misspelt one is warned about, a bad value names its variable ----


def test_a_misspelt_environment_override_is_warned_about_at_start(tmp_path: Path) -> None:
    env = {
        "LIPSERVICE_SAMPLR__DRY_RUN": "true",
        "LIPSERVICE_SAMPLER__DRY_RUN": "false",
        "LIPSERVICE_TOKEN": "s3",
    }
    config = {"receivers": {"auth": {"bearer_token_env": "LIPSERVICE_TOKEN"}}}
    with ProxyProcess(config, tmp_path, environ=env) as proxy:
        ignored = [text for text in warnings_of(proxy) if "environment variable" in text]
    # the override that is right and the variable the config names as a token's source are not warned of
    assert len(ignored) == 1, ignored
    assert "LIPSERVICE_SAMPLR__DRY_RUN is ignored" in ignored[0] and "sampler" in ignored[0]


def test_a_bad_environment_value_names_the_variable_and_exits_2(tmp_path: Path) -> None:
    result = cli("run", env={"LIPSERVICE_SAMPLER__DRY_RUN": "maybe"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lipservice-proxy: config: sampler.dry_run (from LIPSERVICE_SAMPLER__DRY_RUN): "
        "Input should be a valid boolean, unable to interpret input (got 'maybe')"
    ]
    result = cli(
        "run",
        env={"LIPSERVICE_EXPORTERS__0__TYPE": "otlp_grpc", "LIPSERVICE_EXPORTERS__0__ENDPOINTT": "x:1"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "exporters[0].endpointt (from LIPSERVICE_EXPORTERS__0__ENDPOINTT): unknown key" in result.stderr


# ---- 5. a policy rule by template alone ----


def test_a_policy_rule_by_template_alone_is_accepted_and_applied(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 2\npatterns:\n  - {template: 'cart <NUM> viewed', rate: 0.1, reason: 'browsing noise'}\n"
    )
    result = cli("policy", "validate", str(policy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid (version 2, 1 pattern rules" in result.stdout

    records = [{"body": f"cart {i} viewed", "severity": "INFO"} for i in range(300)]
    with ProxyProcess({"sampler": {"policy_file": str(policy)}}, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, service="shop") as logger:
            emit(logger, records)

        def viewed() -> dict[str, Any] | None:
            body = http_get(proxy.admin_url + "/api/v1/patterns")[1]
            found = [p for p in orjson.loads(body)["patterns"] if p["template"] == "cart <NUM> viewed"]
            return found[0] if found and found[0]["received"] == 300 else None

        pattern = wait_until(viewed, what="every record counted")
    assert (pattern["rate"], pattern["rule"], pattern["reason"]) == (0.1, "pattern", "browsing noise")
    assert 25 <= pattern["kept"] <= 35  # the first of the window, then every tenth


# ---- 7. `analyze` offline says which bounds applied ----


def test_analyze_offline_says_which_guardrail_bounds_applied(tmp_path: Path) -> None:
    lines = [f"INFO heartbeat from worker {i % 7} ok" for i in range(20_000)]
    lines += [f"INFO user {i} logged in" for i in range(300)]
    (tmp_path / "app.log").write_text("\n".join(lines) + "\n")
    (tmp_path / "config.yaml").write_text("analysis: {target_keep_ratio: 0.01}\n")
    result = cli("analyze", "app.log", "-c", "config.yaml", "-o", "proposed.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary, guardrails = result.stderr.strip().splitlines()
    assert "by heuristic, refining the built-in default policy; wrote version 2" in summary
    assert "(heuristic)" not in summary
    assert guardrails.startswith("Guardrails: ERROR and FATAL at 1.0; every rate in [0.001, 1]; ")
    assert (
        "a rate moves by at most x4 per refresh (not applied to 2 patterns' first rules: offline"
        in guardrails
    )
    policy = yaml.safe_load((tmp_path / "proposed.yaml").read_text())
    assert policy["reasoning"].rstrip().endswith(guardrails)
    heartbeat = next(rule for rule in policy["patterns"] if "heartbeat" in rule["template"])
    assert heartbeat["rate"] < 0.2 / 4  # further than the change bound: what the line says

    # refining that policy, the change bound applies to its rules again and the line says so
    result = cli("analyze", "app.log", "-c", "config.yaml", "-o", "proposed.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    guardrails = result.stderr.strip().splitlines()[1]
    assert "every rate in [0.001, 1]; a rate moves by at most x4 per refresh;" in guardrails


# ---- 11. the proxy says where its status page is ----


def test_the_proxy_logs_where_its_status_page_is_at_start(tmp_path: Path) -> None:
    with ProxyProcess({}, tmp_path) as proxy:
        lines = [line for line in proxy.log_lines if str(line.get("msg", "")).startswith("status page at ")]
        assert len(lines) == 1, proxy.log_lines
        url = lines[0]["status_page"]
        assert url == f"http://127.0.0.1:{proxy.ports['admin']}/" and url in lines[0]["msg"]
        status, page = http_get(url)
        assert status == 200 and b"<title>lipservice-proxy status</title>" in page


def test_the_readme_says_test_sh_installs_debian_packages_as_root() -> None:
    quick_start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for needed in ("`chromium`", "`prometheus`", "`apt-get`", "root", "`sudo`", "status page at http://"):
        assert needed in quick_start
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "apt-get install" in setup and 'sudo_cmd="sudo"' in setup  # what the README describes


# ---- 2. a bare host:port toward a plaintext upstream: a hint, and no gRPC C-core lines ----

HTTP2_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # what a plaintext gRPC server sends first


class PlaintextUpstream(socketserver.ThreadingTCPServer):
    """Answers every connection as a plaintext HTTP/2 server would, and counts the connections."""

    daemon_threads = True
    connections = 0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PlaintextHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class PlaintextHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, PlaintextUpstream)
        server.connections += 1
        self.request.settimeout(5)
        with contextlib.suppress(OSError):
            self.request.recv(4096)  # the client's TLS ClientHello
            self.request.sendall(HTTP2_SETTINGS_FRAME)


def run_into_plaintext_upstream(tmp_path: Path, environ: dict[str, str]) -> tuple[ProxyProcess, str]:
    """A proxy whose exporter names a plaintext upstream as bare host:port: one record, until it gives up
    and gRPC has reconnected twice more. Returns the stopped proxy and the upstream's host:port."""
    upstream = PlaintextUpstream()
    upstream.thread.start()
    exporter = {
        "type": "otlp_grpc",
        "endpoint": upstream.endpoint,
        "queue": {"batch": {"timeout": "10ms"}},
        "retry": {"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed": "500ms"},
    }
    try:
        with ProxyProcess({"exporters": [exporter]}, tmp_path, environ=environ) as proxy:
            with sdk_logger(proxy.grpc_endpoint) as logger:
                emit(logger, [{"body": "payment 7 failed", "severity": "ERROR"}])
            gave_up = wait_until(
                lambda: (
                    next((i for i, e in enumerate(proxy.log_lines) if "gave up" in str(e.get("msg"))), None)
                    is not None
                ),
                timeout=30,
                what="the exporter to give up",
            )
            assert gave_up
            after = upstream.connections
            wait_until(lambda: upstream.connections >= after + 2, timeout=30, what="gRPC to reconnect twice")
            proxy.terminate()
    finally:
        upstream.shutdown()
        upstream.server_close()
    return proxy, upstream.endpoint


def test_a_tls_handshake_with_a_plaintext_upstream_hints_http_and_leaks_no_grpc_lines(tmp_path: Path) -> None:
    proxy, endpoint = run_into_plaintext_upstream(tmp_path, {})
    give_up = next(line for line in proxy.log_lines if "gave up" in str(line.get("msg")))
    assert give_up["level"] == "error" and "Tls handshake failed" in give_up["msg"]
    hint = f"(a bare host:port endpoint means TLS: write http://{endpoint} for a plaintext upstream)"
    assert give_up["msg"].endswith(hint)
    not_json = [line["msg"] for line in proxy.log_lines if "level" not in line]
    assert not_json == [], not_json  # no `I1205 ... ssl_transport_security.cc` line, before or after


def test_an_operators_own_grpc_verbosity_still_wins(tmp_path: Path) -> None:
    proxy, _ = run_into_plaintext_upstream(tmp_path, {"GRPC_VERBOSITY": "INFO"})
    assert any(
        "ssl_transport_security" in str(line["msg"]) for line in proxy.log_lines if "level" not in line
    )


# ---- 4. `config validate` and `config print` ----


def test_config_validate_exits_0_or_2_with_the_messages_of_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  dry_run: maybe\nexporterz: []\n")
    validated = cli("config", "validate", str(bad), cwd=tmp_path)
    ran = cli("run", "-c", str(bad), cwd=tmp_path)
    assert validated.returncode == ran.returncode == 2
    assert validated.stdout == "" and validated.stderr == ran.stderr
    assert validated.stderr.splitlines() == [
        f"lipservice-proxy: {bad}: sampler.dry_run: Input should be a valid boolean, unable to interpret "
        "input (got 'maybe')",
        f"{bad}: exporterz: unknown key",
    ]

    # a broken policy file stops `run` at start: validate says so the same way
    (tmp_path / "policy.yaml").write_text("severity_rates: {ERROR: 0.5}\n")
    (tmp_path / "good.yaml").write_text("sampler: {policy_file: policy.yaml}\n")
    validated = cli("config", "validate", "good.yaml", cwd=tmp_path)
    assert validated.returncode == 2
    assert validated.stderr.splitlines() == [
        "lipservice-proxy: policy.yaml: severity_rates: ERROR must be 1.0 (ERROR and FATAL are always kept)"
    ]

    (tmp_path / "policy.yaml").write_text("version: 4\n")
    validated = cli("config", "validate", "good.yaml", cwd=tmp_path, env={"LIPSERVICE_SAMPLR__DRY_RUN": "1"})
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout == "good.yaml: valid (1 exporter; policy version 4 from policy.yaml)\n"
    assert "warning: environment variable LIPSERVICE_SAMPLR__DRY_RUN is ignored" in validated.stderr

    validated = cli(
        "config", "validate", "good.yaml", cwd=tmp_path, env={"LIPSERVICE_SAMPLER__DRY_RUN": "maybe"}
    )
    assert validated.returncode == 2 and "(from LIPSERVICE_SAMPLER__DRY_RUN)" in validated.stderr


def test_config_print_shows_the_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "exporters:\n"
        "  - {type: otlp_http, endpoint: 'https://ingest:s3cret@backend:4318/v1/logs',"
        " headers: {Authorization: 'Bearer tok-123', X-Scope: tenant-9}}\n"
        "receivers: {auth: {bearer_token_env: MY_TOKEN}}\n"
        "passthrough: {traces: 'http://collector:4317', headers: {api-key: k-456}}\n"
    )
    env = {
        "LIPSERVICE_SAMPLER__DRY_RUN": "true",
        "LIPSERVICE_ANALYSIS__INTERVAL": "2m",
        "MY_TOKEN": "tok-789",
    }
    printed = cli("config", "print", "config.yaml", cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr
    for secret in ("s3cret", "ingest", "tok-123", "tenant-9", "k-456", "tok-789"):
        assert secret not in printed.stdout
    effective = yaml.safe_load(printed.stdout)
    exporter = effective["exporters"][0]
    assert exporter["endpoint"] == "https://<redacted>@backend:4318/v1/logs"
    assert exporter["headers"] == {"Authorization": "<redacted>", "X-Scope": "<redacted>"}
    assert exporter["queue"]["batch"]["max_records"] == 1024  # a default, filled in
    assert effective["receivers"]["auth"]["bearer_token_env"] == "MY_TOKEN"  # where it is, not what
    assert effective["sampler"]["dry_run"] is True and effective["analysis"]["interval"] == 120.0
    assert effective["passthrough"]["headers"] == {"api-key": "<redacted>"}

    # with no file: the defaults, and what is printed (secrets aside) is a config `run` accepts
    printed = cli("config", "print", cwd=tmp_path)
    (tmp_path / "printed.yaml").write_text(printed.stdout)
    assert cli("config", "validate", "printed.yaml", cwd=tmp_path).returncode == 0
    assert yaml.safe_load(printed.stdout)["exporters"][0]["type"] == "debug"


def test_the_kubernetes_docs_validate_the_rendered_config_and_catch_a_typo(tmp_path: Path) -> None:
    from helm_python import Chart

    from .support.helm import CHART, Rendering, render

    docs = (REPO / "docs" / "kubernetes.md").read_text()
    assert "lipservice-proxy config validate rendered-config.yaml" in docs
    with Chart.load(CHART) as chart:
        for values, code in (({}, 0), ({"config": {"sampler": {"dry_runn": True}}}, 2)):
            documents, notes = render(chart, values)
            config = Rendering("docs", values, documents, notes).config_text()
            (tmp_path / "rendered-config.yaml").write_text(config)
            result = cli("config", "validate", "rendered-config.yaml", cwd=tmp_path)
            assert result.returncode == code, result.stderr
    assert "rendered-config.yaml: sampler.dry_runn: unknown key" in result.stderr


# ---- 8. ARCHITECTURE.md, and no pointer to a DESIGN.md that is not there ----


def test_the_import_contracts_hold_and_architecture_md_describes_each() -> None:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 5
    section = (REPO / "ARCHITECTURE.md").read_text().split("### Import contracts", 1)[1].split("\n## ", 1)[0]
    for contract in contracts:  # the modules each contract names, as ARCHITECTURE.md writes them
        for expression in [*contract.get("layers", []), *contract.get("protected_modules", [])]:
            for module in expression.split("|"):
                short = module.strip().removeprefix("lipservice_proxy.").replace(".", "/")
                assert re.search(rf"`{re.escape(short)}(/|\.py)?`", section), short
    # The pure core is every sampling module but the store: a new one must join the contract.
    (pure,) = [c for c in contracts if "lipservice_proxy.sampling.sampler" in c.get("source_modules", [])]
    sampling = {
        f"lipservice_proxy.sampling.{p.stem}" for p in (REPO / "lipservice_proxy/sampling").glob("*.py")
    }
    expected = {"lipservice_proxy.patterns"} | sampling - {
        "lipservice_proxy.sampling.__init__",
        "lipservice_proxy.sampling.store",
    }
    missing, gone = expected - set(pure["source_modules"]), set(pure["source_modules"]) - expected
    assert not missing and not gone, f"pyproject.toml, the pure-core contract: add {missing}, remove {gone}"
    assert all(f"{name}," in section or f"{name}." in section for name in pure["forbidden_modules"])
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout[-3000:]


def test_architecture_md_names_only_code_that_exists_and_nothing_points_at_design_md() -> None:
    text = (REPO / "ARCHITECTURE.md").read_text()
    files = re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.(?:py|proto|json))`", text)
    assert len(files) > 40
    package = REPO / "lipservice_proxy"
    for name in files:  # module paths are relative to the package, other files to the repository
        assert (package / name).exists() or (REPO / name).exists() or any(package.rglob(name)), name
    source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    for symbol in re.findall(r"`([A-Z][A-Za-z]+)`", text):  # classes and type aliases it names
        assert re.search(rf"^(class {symbol}\b|{symbol} = )", source, re.M), symbol
    for function in ("add_observer", "check_room", "apply_guardrails", "build_exporter", "offer"):
        assert f"def {function}(" in source
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for path in tracked.split():
        if (
            path.endswith((".py", ".md", ".yaml", ".json", ".tpl", ".txt", ".toml"))
            and (REPO / path).exists()
        ):
            assert (
                "DESIGN.md" not in (REPO / path).read_text(errors="replace")
                or path == "tests/test_first_hour.py"
            )
