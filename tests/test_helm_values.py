"""Bad chart values fail before anything reaches a cluster: the schema (values.schema.json) refuses
wrong keys, types and ranges; the templates refuse combinations that would lose data or never become
ready. Each failure names what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lipservice_proxy.config import EXPORTER_TYPES, SECTIONS
from tests.support.helm import CHART, NAMESPACE, RELEASE, example_app_chart, helm


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


BAD_VALUES = [
    ({"mode": "agent"}, "/mode"),
    ({"gateway": {"replicas": 0}}, "/gateway/replicas"),
    ({"config": {"recievers": {}}}, "recievers"),
    ({"config": {"exporters": [{"type": "kafka"}]}}, "/config/exporters/0/type"),
    ({"config": {"exporters": []}}, "/config/exporters"),
    ({"ports": {"otlpGrpc": 70000}}, "/ports/otlpGrpc"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
    ({"storage": {"emptyDir": {"sizeLimit": "lots"}}}, "/storage/emptyDir/sizeLimit"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"secrets": {"posthogApiKey": {"name": "posthog"}}}, "/secrets/posthogApiKey"),
    ({"replicas": 3}, "replicas"),
    ({"analyzer": {"port": 0}}, "/analyzer/port"),
    ({"analyzer": {"replicas": 2}}, "replicas"),
    ({"secrets": {"fleetToken": {"name": "fleet"}}}, "/secrets/fleetToken"),
    ({"extraVolumes": [{"secret": {"secretName": "tls"}}]}, "/extraVolumes/0"),
    ({"extraVolumeMounts": [{"name": "tls"}]}, "/extraVolumeMounts/0"),
    ({"extraContainers": [{"image": "x"}]}, "/extraContainers/0"),
    ({"extraEnvFrom": {"secretRef": {"name": "s"}}}, "/extraEnvFrom"),
    ({"hostNetwork": "yes"}, "/hostNetwork"),
    ({"dnsPolicy": "Cluster"}, "/dnsPolicy"),
    ({"revisionHistoryLimit": -1}, "/revisionHistoryLimit"),
    ({"configMap": {"existingName": "mine", "key": "a/b"}}, "/configMap/key"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert helm.lint(CHART, values, strict=True)["messages"], "lint passed bad values"


BAD_COMBINATIONS = [
    (
        {"config": {"receivers": {"grpc": {"endpoint": "127.0.0.1:4317"}}}},
        "config.receivers.grpc.endpoint is set by the chart",
    ),
    ({"config": {"sampler": {"policy_file": "/p.yaml"}}}, "config.sampler.policy_file is set by the chart"),
    ({"storage": {"persistentVolumeClaim": {"enabled": True}}}, "pods must never share a disk queue"),
    (
        {
            "mode": "gateway",
            "storage": {"persistentVolumeClaim": {"enabled": True}},
            "gateway": {"replicas": 1},
        },
        "pods must never share a disk queue",
    ),
    (
        {
            "storage": {"emptyDir": {"sizeLimit": "256Mi"}},
            "config": {"exporters": [{"type": "otlp_grpc", "endpoint": "c:4317"}]},
        },
        "sizeLimit 256Mi is below the 576 MiB",
    ),
    (
        {"mode": "gateway", "gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}},
        "minReplicas (5) is above maxReplicas (3)",
    ),
    ({"mode": "sidecar", "metrics": {"serviceMonitor": {"enabled": True}}}, "sidecar mode has none"),
    (
        {"daemonset": {"hostPort": {"enabled": False}, "service": {"enabled": False}}},
        "cannot reach the agent",
    ),
    (
        {
            "config": {
                "exporters": [{"type": "otlp_grpc", "endpoint": "c:4317", "queue": {"directory": "/queue"}}]
            }
        },
        'queue.directory "/queue" is outside /var/lib/lipservice',
    ),
    (
        {"config": {"exporters": [{"type": "posthog"}]}},
        "config.exporters[0] sends to PostHog but nothing sets POSTHOG_API_KEY",
    ),
    (
        {"daemonset": {"resources": {"limits": {"memory": "half a gig"}}}},
        '"half a gig" is not a memory quantity',
    ),
    (
        {"mode": "sidecar", "analyzer": {"enabled": True}},
        "analyzer.enabled (fleet mode) needs mode=daemonset",
    ),
    ({"analyzer": {"enabled": True, "port": 8888}}, "analyzer.port 8888 is also ports.admin"),
    (
        {"secrets": {"fleetToken": {"secretName": "fleet", "key": "token"}}},
        "secrets.fleetToken guards the analyzer's fleet API, which only exists with analyzer.enabled",
    ),
    (
        {"analyzer": {"enabled": True}, "config": {"fleet": {"analyzer": "elsewhere:4320"}}},
        "config.fleet.analyzer is set by the chart",
    ),
    (
        {"mode": "sidecar", "extraContainers": [{"name": "x", "image": "x"}]},
        "in sidecar mode the pod is your application's",
    ),
    ({"mode": "sidecar", "hostNetwork": True}, "in sidecar mode the pod is your application's"),
]


@pytest.mark.parametrize(("values", "message"), BAD_COMBINATIONS, ids=[m for _, m in BAD_COMBINATIONS])
def test_template_checks_refuse_unsafe_combinations(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_sidecar_templates_refuse_a_dependency_in_another_mode(tmp_path: Path) -> None:
    with (
        pytest.raises(
            helm.HelmRenderError,
            match=re.escape('need mode=sidecar in the dependency\'s values (it is "daemonset"'),
        ),
        example_app_chart(tmp_path) as example_app,
    ):
        example_app.render({"lipservice": {"mode": "daemonset"}}, name=RELEASE, namespace=NAMESPACE)


def test_schema_knows_exactly_the_proxy_config_sections_and_exporter_types(chart: helm.Chart) -> None:
    config_schema = chart.schema["properties"]["config"]
    assert set(config_schema["properties"]) == set(SECTIONS)
    exporter_types = config_schema["properties"]["exporters"]["items"]["properties"]["type"]["enum"]
    assert set(exporter_types) == set(EXPORTER_TYPES)
