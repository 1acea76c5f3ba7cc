"""The Helm chart, rendered offline by Helm's own Go library (helm-python-sdk), in every mode and with
every values file under helm/lipservice-proxy/ci/. Each rendering is linted, every manifest is
validated against the Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail) or,
for the Prometheus Operator's kinds, which no offline schema package covers, against a structural
schema of the fields this chart uses (MONITORING_SCHEMAS); the config and policy it
renders are loaded by the proxy's own loaders, and the pod wiring (mounts, probes, secrets, ports,
security) is checked against that config. Sidecar-mode values are rendered through the example
application chart (examples/sidecar-app), the way a user consumes them. In fleet mode (analyzer.enabled)
the analyzer Deployment is checked the same way, and so is how the agents reach it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from lipservice_proxy import __version__
from lipservice_proxy.config import ProxyConfig, load_config
from lipservice_proxy.sampling.policy import parse_policy
from tests.support.helm import (
    CASES,
    CHART,
    DATA_DIR,
    NAMESPACE,
    PROXY,
    Rendering,
    case_values,
    example_app_chart,
    helm,
    overlay,
    proxy_container,
    render,
)

try:
    import jsonschema
    import kubernetes_validate
except ImportError as missing:  # a CI without the tools must fail, never skip
    pytest.fail(f"{missing}: install the test tools with `pip install -e '.[test]'`", pytrace=False)


def _closed(schema: Any) -> Any:
    """Every object schema with `properties` refuses other keys."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return schema


# monitoring.coreos.com/v1 as the operator's CRDs define the fields this chart uses; closed, so a
# misspelt or misplaced field fails here, where the API server would prune it silently.
MONITORING_SCHEMAS = _closed(
    yaml.safe_load(
        """
        _shared:
          strings: &strings {type: object, additionalProperties: {type: string}}
          duration: &duration {type: string, pattern: "^([0-9]+(ms|s|m|h|d|w|y))+$"}
          metadata: &metadata
            required: [name]
            properties: {name: {type: string}, labels: *strings, annotations: *strings}
        ServiceMonitor:
          required: [apiVersion, kind, metadata, spec]
          properties:
            apiVersion: {const: monitoring.coreos.com/v1}
            kind: {const: ServiceMonitor}
            metadata: *metadata
            spec:
              required: [selector, endpoints]
              properties:
                selector: {required: [matchLabels], properties: {matchLabels: *strings}}
                endpoints:
                  type: array
                  minItems: 1
                  items:
                    required: [port]
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: *duration
                      honorLabels: {type: boolean}
        PrometheusRule:
          required: [apiVersion, kind, metadata, spec]
          properties:
            apiVersion: {const: monitoring.coreos.com/v1}
            kind: {const: PrometheusRule}
            metadata: *metadata
            spec:
              required: [groups]
              properties:
                groups:
                  type: array
                  items:
                    required: [name, rules]
                    properties:
                      name: {type: string}
                      rules:
                        type: array
                        items:
                          required: [alert, expr, labels, annotations]
                          properties:
                            alert: {type: string}
                            expr: {type: string}
                            for: *duration
                            labels: *strings
                            annotations: *strings
        """
    )
)


def _min_kubernetes() -> str:
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(-0)?", constraint)
    assert match, f"Chart.yaml kubeVersion {constraint!r} is not a lower bound"
    return match.group(1)


KUBERNETES_VERSIONS = [_min_kubernetes(), kubernetes_validate.utils.latest_version()]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[helm.Chart]:
    with example_app_chart(tmp_path_factory.mktemp("charts")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def renderings(chart: helm.Chart, example_app: helm.Chart) -> dict[str, Rendering]:
    rendered = {}
    for case in CASES:
        values = case_values(case)
        if chart.merge_values(values)["mode"] == "sidecar":
            # The dependency's values: its defaults, under the example's, under the case's.
            merged = chart.merge_values(overlay(example_app.values["lipservice"], values))
            documents, notes = render(example_app, {"lipservice": values})
        else:
            merged = chart.merge_values(values)
            documents, notes = render(chart, values)
        rendered[case] = Rendering(case, merged, documents, notes)
    return rendered


@pytest.fixture(scope="module")
def configs(
    renderings: dict[str, Rendering], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ProxyConfig]:
    """Each rendering's config file, loaded by the proxy's own loader (with no env overrides)."""
    directory = tmp_path_factory.mktemp("configs")
    loaded = {}
    for case, rendering in renderings.items():
        path = directory / f"{case}.yaml"
        path.write_text(rendering.config_text())
        loaded[case] = load_config(path, environ={})
    return loaded


# ---- the chart as a whole ----


def test_every_mode_is_rendered_with_several_values_files(chart: helm.Chart) -> None:
    modes = [chart.merge_values(case_values(case))["mode"] for case in CASES]
    assert {mode: modes.count(mode) >= 2 for mode in ("daemonset", "gateway", "sidecar")} == {
        "daemonset": True,
        "gateway": True,
        "sidecar": True,
    }


def test_chart_app_version_is_the_package_version(chart: helm.Chart) -> None:
    assert chart.metadata["appVersion"] == __version__


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case: str) -> None:
    report = helm.lint(
        CHART,
        case_values(case),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBERNETES_VERSIONS[0]}.0",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid_kubernetes(
    renderings: dict[str, Rendering], case: str, version: str
) -> None:
    for doc in renderings[case].documents:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in MONITORING_SCHEMAS:
            try:
                jsonschema.validate(doc, MONITORING_SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as error:
                pytest.fail(f"{where}: {error.json_path}: {error.message}")
        else:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where} against {version}: {'.'.join(map(str, error.path))}: {error.message}")


# ---- what the proxy is given ----


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_loads_and_listens_on_every_interface(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering, config = renderings[case], configs[case]
    ports = {p["name"]: p["containerPort"] for p in rendering.container()["ports"]}
    assert config.receivers.grpc.endpoint == f"0.0.0.0:{ports['otlp-grpc']}"
    assert config.receivers.http.endpoint == f"0.0.0.0:{ports['otlp-http']}"
    assert config.admin.endpoint == f"0.0.0.0:{ports['admin']}"
    wanted = rendering.values["ports"]
    assert ports == {
        "otlp-grpc": wanted["otlpGrpc"],
        "otlp-http": wanted["otlpHttp"],
        "admin": wanted["admin"],
    }
    role = ["--role", "sampler"] if rendering.values["analyzer"]["enabled"] else []
    assert rendering.container()["args"] == ["-c", rendering.mount("lipservice-config")["mountPath"], *role]


@pytest.mark.parametrize("case", CASES)
def test_policy_is_mounted_as_a_directory_so_edits_reload(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering, config = renderings[case], configs[case]
    mount = rendering.mount("lipservice-policy")
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert PurePosixPath(mount["mountPath"]) == PurePosixPath(config.sampler.policy_file).parent
    source = rendering.volume("lipservice-policy")["configMap"]
    assert source["items"] == [
        {"key": config.sampler.policy_file.name, "path": config.sampler.policy_file.name}
    ]
    existing = rendering.values["policy"]["existingConfigMap"]
    if existing:
        assert source["name"] == existing and rendering.named("ConfigMap", existing) is None
    else:
        policy_map = rendering.named("ConfigMap", source["name"])
        assert policy_map is not None
        policy = parse_policy(policy_map["data"][config.sampler.policy_file.name], source=case)
        assert policy.version == rendering.values["policy"]["content"]["version"]


@pytest.mark.parametrize("case", CASES)
def test_everything_the_proxy_writes_is_on_a_writable_volume(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering, config = renderings[case], configs[case]
    assert rendering.container()["securityContext"]["readOnlyRootFilesystem"] is True
    data = rendering.mount("lipservice-data")
    assert PurePosixPath(data["mountPath"]) == DATA_DIR and not data.get("readOnly")
    assert rendering.mount("lipservice-tmp")["mountPath"] == "/tmp"
    queues = [e.queue.directory for e in config.exporters if e.queue.directory is not None]
    written = [config.analysis.policy_file, config.patterns.state_file, *queues]
    assert all(DATA_DIR in PurePosixPath(path).parents for path in written), written
    assert len(set(queues)) == len(queues), "two exporters share a queue directory"
    if rendering.values["diskQueue"]["enabled"]:
        assert len(queues) == sum(e.type != "debug" for e in config.exporters)

    volume = rendering.volume("lipservice-data")
    needed_mib = sum(e.queue.max_disk_mib for e in config.exporters if e.queue.directory is not None) + 64
    if "persistentVolumeClaim" in volume:
        claim = rendering.named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        assert (
            claim is not None and _mebibytes(claim["spec"]["resources"]["requests"]["storage"]) >= needed_mib
        )
        assert rendering.workload()["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert _mebibytes(volume["emptyDir"]["sizeLimit"]) >= needed_mib


@pytest.mark.parametrize("case", CASES)
def test_every_referenced_configmap_secret_and_claim_exists_or_is_declared_external(
    renderings: dict[str, Rendering], case: str
) -> None:
    rendering = renderings[case]
    external = {rendering.values["policy"]["existingConfigMap"]} - {""}
    external |= {ref["secretName"] for ref in rendering.values["secrets"].values()} - {""}
    external |= {
        v["configMap"]["name"] for v in rendering.values["extraVolumes"] if "configMap" in v
    }  # the user's
    for volume in rendering.pod()["spec"]["volumes"]:
        for kind, key in (("ConfigMap", "configMap"), ("PersistentVolumeClaim", "persistentVolumeClaim")):
            if key in volume:
                name = volume[key].get("name") or volume[key].get("claimName")
                assert name in external or rendering.named(kind, name) is not None, (
                    f"{kind} {name} is not rendered"
                )
    for variable in rendering.container().get("env", []):
        if "valueFrom" in variable:
            assert variable["valueFrom"]["secretKeyRef"]["name"] in external


@pytest.mark.parametrize("case", CASES)
def test_secrets_reach_the_proxy_by_reference(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering, config = renderings[case], configs[case]
    wanted = {
        "posthogApiKey": "POSTHOG_API_KEY",
        "openaiApiKey": "OPENAI_API_KEY",
        "receiverToken": "LIPSERVICE_TOKEN",
        "fleetToken": "LIPSERVICE_FLEET_TOKEN",
    }
    expected = {
        wanted[key]: {"name": ref["secretName"], "key": ref["key"]}
        for key, ref in rendering.values["secrets"].items()
        if ref["secretName"]
    }
    if rendering.values["analyzer"]["enabled"]:  # the LLM is the analyzer's: its key stays there
        assert _secret_env(rendering.analyzer_container()) == {
            k: v for k, v in expected.items() if k in ("OPENAI_API_KEY", "LIPSERVICE_FLEET_TOKEN")
        }
        expected.pop("OPENAI_API_KEY", None)
    assert _secret_env(rendering.container()) == expected
    assert (config.receivers.auth is not None) == ("LIPSERVICE_TOKEN" in expected)
    if "LIPSERVICE_TOKEN" in expected:
        assert (
            config.receivers.auth is not None and config.receivers.auth.bearer_token_env == "LIPSERVICE_TOKEN"
        )
    if "OPENAI_API_KEY" in expected:
        assert config.analysis.llm is not None and config.analysis.llm.api_key_env == "OPENAI_API_KEY"
    posthog = [e for e in config.exporters if e.type == "posthog"]
    assert all(e.api_key_env in expected for e in posthog), "a posthog exporter has no key"


@pytest.mark.parametrize("case", CASES)
def test_memory_limiter_sits_below_the_container_limit(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    limiter = configs[case].memory_limiter
    limit = renderings[case].container()["resources"]["limits"]["memory"]
    assert 0 < limiter.limit_mib - limiter.spike_limit_mib < limiter.limit_mib < _mebibytes(limit)
    user_set = renderings[case].values["config"].get("memory_limiter", {})
    for key, value in user_set.items():
        assert getattr(limiter, key) == value


# ---- the pods ----


@pytest.mark.parametrize("case", CASES)
def test_pods_run_unprivileged(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    security = rendering.container()["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    if rendering.mode != "sidecar":
        pod = rendering.pod()["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("case", CASES)
def test_probes_use_healthz_and_readyz_on_the_admin_port(renderings: dict[str, Rendering], case: str) -> None:
    container = renderings[case].container()
    assert [
        p["name"]
        for p in container["ports"]
        if p["containerPort"] == renderings[case].values["ports"]["admin"]
    ] == ["admin"]
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert {container[probe]["httpGet"]["port"] for probe in paths} == {"admin"}


@pytest.mark.parametrize("case", CASES)
def test_pods_carry_scrape_annotations_and_a_config_checksum(
    renderings: dict[str, Rendering], case: str
) -> None:
    rendering = renderings[case]
    annotations = rendering.pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(rendering.values["ports"]["admin"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


@pytest.mark.parametrize("case", CASES)
def test_services_and_monitors_select_the_proxy_pods(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    pods = [(rendering.pod(), rendering.container())]
    if rendering.values["analyzer"]["enabled"]:
        pods.append((rendering.analyzer()["spec"]["template"], rendering.analyzer_container()))
    for service in rendering.all("Service"):
        selector = service["spec"]["selector"].items()
        (selected,) = [c for pod, c in pods if selector <= pod["metadata"]["labels"].items()]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in selected["ports"]}
    for monitor in rendering.all("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        (scraped,) = [s for s in rendering.all("Service") if selector <= s["metadata"]["labels"].items()]
        assert scraped["spec"]["clusterIP"] == "None", "a headless Service lists every pod"
        assert [p["name"] for p in scraped["spec"]["ports"]] == ["admin"]
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["admin"]
        assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


@pytest.mark.parametrize("case", [c for c in CASES if c == "defaults" or c.startswith("daemonset")])
def test_daemonset_is_a_node_agent(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    agent = rendering.workload()
    assert agent["kind"] == "DaemonSet"
    assert {"operator": "Exists"} in agent["spec"]["template"]["spec"]["tolerations"]
    host_ports = {p.get("hostPort") for p in rendering.container()["ports"]} - {None}
    expected = {rendering.values["ports"]["otlpGrpc"], rendering.values["ports"]["otlpHttp"]}
    assert host_ports == (expected if rendering.values["daemonset"]["hostPort"]["enabled"] else set())
    services = rendering.otlp_services()
    assert len(services) == int(rendering.values["daemonset"]["service"]["enabled"])
    assert all(s["spec"]["internalTrafficPolicy"] == "Local" for s in services)
    assert not rendering.all("HorizontalPodAutoscaler") and not rendering.all("PodDisruptionBudget")
    if host_ports:
        assert (
            "status.hostIP" in rendering.notes
            and f"$(HOST_IP):{rendering.values['ports']['otlpGrpc']}" in rendering.notes
        )
    for service in services:
        assert f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:" in rendering.notes


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("gateway")])
def test_gateway_is_a_scalable_deployment(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    gateway, values = rendering.workload(), rendering.values["gateway"]
    assert gateway["kind"] == "Deployment"
    (service,) = rendering.otlp_services()
    assert f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:" in rendering.notes
    autoscalers = rendering.all("HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        (autoscaler,) = autoscalers
        assert autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": gateway["metadata"]["name"],
        }
        assert "replicas" not in gateway["spec"], "the autoscaler owns the replica count"
        assert rendering.container()["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"
    else:
        assert autoscalers == [] and gateway["spec"]["replicas"] == values["replicas"]
    budgets = rendering.all("PodDisruptionBudget")
    assert len(budgets) == int(values["podDisruptionBudget"]["enabled"])
    for budget in budgets:
        assert (
            budget["spec"]["selector"]["matchLabels"].items() <= rendering.pod()["metadata"]["labels"].items()
        )


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("sidecar")])
def test_sidecar_runs_in_the_application_pod(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    spec = rendering.pod()["spec"]
    (app,) = [c for c in spec["containers"] if c["name"] == "app"]
    endpoint = {v["name"]: v.get("value") for v in app["env"]}["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == f"http://localhost:{rendering.values['ports']['otlpGrpc']}"
    native = rendering.values["sidecar"]["nativeSidecar"]
    where = "initContainers" if native else "containers"
    assert PROXY in [c["name"] for c in spec.get(where, [])]
    assert rendering.container().get("restartPolicy") == ("Always" if native else None)
    assert (
        not rendering.all("DaemonSet")
        and not rendering.all("Service")
        and not rendering.all("ServiceAccount")
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("sidecar")])
def test_sidecar_mode_alone_renders_only_what_the_container_needs(chart: helm.Chart, case: str) -> None:
    documents, notes = render(chart, case_values(case))
    assert {doc["kind"] for doc in documents} <= {"ConfigMap", "PrometheusRule"}
    assert "lipservice-proxy.sidecarContainer" in notes and "http://localhost:" in notes


@pytest.mark.parametrize("case", CASES)
def test_dashboard_configmap_is_labelled_for_grafana(renderings: dict[str, Rendering], case: str) -> None:
    rendering = renderings[case]
    dashboards = [doc for doc in rendering.all("ConfigMap") if doc["metadata"]["name"].endswith("-dashboard")]
    if not rendering.values["dashboard"]["enabled"]:
        assert dashboards == []
        return
    (dashboard,) = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"].get("annotations", {}) == rendering.values["dashboard"]["annotations"]
    assert yaml.safe_load(dashboard["data"]["lipservice-proxy.json"])["uid"] == "lipservice-proxy"


# ---- fleet mode ----

FLEET_CASES = [c for c in CASES if case_values(c).get("analyzer", {}).get("enabled")]


def test_fleet_mode_is_rendered_for_daemonset_and_gateway(renderings: dict[str, Rendering]) -> None:
    assert {renderings[case].mode for case in FLEET_CASES} == {"daemonset", "gateway"}


@pytest.mark.parametrize("case", FLEET_CASES)
def test_one_analyzer_that_every_agent_reaches(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering, config = renderings[case], configs[case]
    analyzer = rendering.analyzer()
    assert analyzer["spec"]["replicas"] == 1 and analyzer["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        hpa
        for hpa in rendering.all("HorizontalPodAutoscaler")
        if hpa["spec"]["scaleTargetRef"]["name"] == analyzer["metadata"]["name"]
    ], "a second analyzer would call the LLM and publish policies of its own"
    container = rendering.analyzer_container()
    assert container["args"] == [
        "-c",
        rendering.mount("lipservice-config")["mountPath"],
        "--role",
        "analyzer",
    ]
    assert rendering.container()["args"][-2:] == ["--role", "sampler"]

    # the agents' config names the analyzer's Service, whose port leads to what the analyzer listens on
    (service,) = [s for s in rendering.all("Service") if "fleet" in {p["name"] for p in s["spec"]["ports"]}]
    (port,) = service["spec"]["ports"]
    assert config.fleet.analyzer == f"{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}"
    assert port["port"] == rendering.values["analyzer"]["port"]
    fleet_port = {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]]
    assert config.fleet.listen == f"0.0.0.0:{fleet_port}"
    pod_labels = analyzer["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    agent_selector = rendering.workload()["spec"]["selector"]["matchLabels"].items()
    assert not agent_selector <= pod_labels.items(), "the agents' selector would adopt the analyzer pod"
    assert (
        not analyzer["spec"]["selector"]["matchLabels"].items()
        <= rendering.pod()["metadata"]["labels"].items()
    )

    # one config for both (its checksum rolls both), the same policy; a data volume of its own
    volumes = {v["name"]: v for v in analyzer["spec"]["template"]["spec"]["volumes"]}
    assert volumes["lipservice-config"] == rendering.volume("lipservice-config")
    assert volumes["lipservice-policy"] == rendering.volume("lipservice-policy")
    assert "emptyDir" in volumes["lipservice-data"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts == {m["name"]: m for m in rendering.container()["volumeMounts"]}
    assert (
        PurePosixPath(mounts["lipservice-data"]["mountPath"])
        in PurePosixPath(config.analysis.policy_file).parents
    )
    annotations = analyzer["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == rendering.pod()["metadata"]["annotations"]["checksum/config"]

    # it runs as unprivileged as the agents, with the same probes on its admin port
    assert container["securityContext"] == rendering.container()["securityContext"]
    assert analyzer["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe] == rendering.container()[probe]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["admin"] == rendering.values["ports"][
        "admin"
    ]

    token = rendering.values["secrets"]["fleetToken"]["secretName"]
    assert (config.fleet.auth is not None) == bool(token)
    if token:
        assert (
            config.fleet.auth is not None and config.fleet.auth.bearer_token_env == "LIPSERVICE_FLEET_TOKEN"
        )
    assert (
        f"deployment/{analyzer['metadata']['name']}" in rendering.notes
        and config.fleet.analyzer in rendering.notes
    )
    if rendering.values["metrics"]["serviceMonitor"]["enabled"]:
        assert len(rendering.all("ServiceMonitor")) == 2  # agents and analyzer, each scraped once


@pytest.mark.parametrize("case", [c for c in CASES if c not in FLEET_CASES])
def test_without_fleet_mode_there_is_no_analyzer(
    renderings: dict[str, Rendering], configs: dict[str, ProxyConfig], case: str
) -> None:
    rendering = renderings[case]
    assert rendering.analyzers() == []
    assert configs[case].fleet.analyzer is None and "--role" not in rendering.container()["args"]
    assert "Fleet mode" not in rendering.notes


# ---- helpers ----


def _secret_env(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container.get("env", []) if "valueFrom" in v}


_UNITS = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit] / 2**20


# ---- what users of the Collector's chart expect: extra volumes, env, containers, pod settings ----


def _pods(rendering: Rendering) -> list[dict[str, Any]]:
    return [doc for doc in rendering.documents if doc["kind"] in ("DaemonSet", "Deployment")]


def test_extra_volumes_mounts_env_from_and_containers_reach_the_pods(
    renderings: dict[str, Rendering],
) -> None:
    rendering = renderings["gateway-tls-extras"]
    pod = rendering.pod()["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["receiver-tls"] == {
        "name": "receiver-tls",
        "secret": {"secretName": "lipservice-receiver-tls"},
    }
    mounts = {mount["name"]: mount["mountPath"] for mount in rendering.container()["volumeMounts"]}
    assert mounts["receiver-tls"] == "/etc/lipservice/tls"
    assert mounts["upstream-ca"] == "/etc/lipservice/upstream-ca"
    # the files the config names are on those mounts: the TLS features work on Kubernetes
    config = yaml.safe_load(rendering.config_text())
    for path in (config["receivers"]["tls"]["cert_file"], config["exporters"][0]["tls"]["ca_file"]):
        assert any(path.startswith(mount + "/") for mount in mounts.values()), path
    assert rendering.container()["envFrom"] == [
        {"secretRef": {"name": "lipservice-overrides"}},
        {"configMapRef": {"name": "lipservice-settings", "optional": True}},
    ]
    assert [c["name"] for c in pod["containers"]] == ["lipservice-proxy", "shipper"]
    assert rendering.pod()["metadata"]["labels"]["team"] == "observability"
    assert pod["dnsPolicy"] == "ClusterFirst" and "hostNetwork" not in pod
    assert rendering.workload()["spec"]["revisionHistoryLimit"] == 3


def test_host_network_resolves_cluster_names_and_the_analyzer_gets_the_extra_mounts(
    renderings: dict[str, Rendering],
) -> None:
    rendering = renderings["daemonset-hostnetwork"]
    pod = rendering.pod()["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    analyzer = rendering.analyzer()
    assert "hostNetwork" not in analyzer["spec"]["template"]["spec"]  # it serves the fleet through a Service
    assert {v["name"] for v in analyzer["spec"]["template"]["spec"]["volumes"]} >= {"upstream-ca"}
    assert {m["name"] for m in rendering.analyzer_container()["volumeMounts"]} >= {"upstream-ca"}
    assert [doc["spec"]["revisionHistoryLimit"] for doc in _pods(rendering)] == [5, 5]


@pytest.mark.parametrize("case", CASES)
def test_defaults_keep_kubernetes_defaults_for_the_new_pod_settings(
    renderings: dict[str, Rendering], case: str
) -> None:
    rendering = renderings[case]
    for doc in _pods(rendering):
        if rendering.mode != "sidecar":
            assert doc["spec"]["revisionHistoryLimit"] == rendering.values["revisionHistoryLimit"]
    if not rendering.values["hostNetwork"] and not rendering.values["dnsPolicy"]:
        assert "dnsPolicy" not in rendering.pod()["spec"] and "hostNetwork" not in rendering.pod()["spec"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_an_existing_configmap_replaces_the_rendered_config(chart: helm.Chart, version: str) -> None:
    values = {"mode": "gateway", "configMap": {"existingName": "my-proxy-config", "key": "proxy.yaml"}}
    documents, _ = render(chart, values)
    maps = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    assert not any(
        "config.yaml" in doc.get("data", {}) or "proxy.yaml" in doc.get("data", {}) for doc in maps
    )
    (workload,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    pod = workload["spec"]["template"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "lipservice-config"]
    assert volume["configMap"]["name"] == "my-proxy-config"
    container = proxy_container(workload)
    assert container is not None
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "lipservice-config"]
    assert mount["subPath"] == "proxy.yaml" and container["args"][:2] == ["-c", mount["mountPath"]]
    assert "checksum/config" not in pod["metadata"]["annotations"]  # not the chart's to hash
    for doc in documents:
        if doc["kind"] not in MONITORING_SCHEMAS:
            kubernetes_validate.validate(doc, version, strict=True)
