"""Rendering the Helm chart offline for tests: the chart, its CI values files, the example
application that consumes sidecar mode, and a view of one rendering's manifests.

Helm's own Go library renders (helm-python-sdk, through ctypes: no helm binary, cluster or network).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

try:
    import helm_python as helm
except ImportError as missing:  # a CI without the tools must fail, never skip
    pytest.fail(f"{missing}: install the test tools with `pip install -e '.[test]'`", pytrace=False)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lipservice-proxy"
CI_VALUES = {
    path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))
}
CASES = ["defaults", *CI_VALUES]
RELEASE, NAMESPACE = "obs", "telemetry"
PROXY = "lipservice-proxy"
ANALYZER = "lipservice-analyzer"  # fleet mode's analyzer container
DATA_DIR = PurePosixPath("/var/lib/lipservice")


@dataclass(frozen=True)
class Rendering:
    case: str
    values: dict[str, Any]  # the chart's values after merging (for sidecar: the dependency's)
    documents: list[dict[str, Any]]
    notes: str

    @property
    def mode(self) -> str:
        return str(self.values["mode"])

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((doc for doc in self.all(kind) if doc["metadata"]["name"] == name), None)

    def otlp_services(self) -> list[dict[str, Any]]:
        return [s for s in self.all("Service") if "otlp-grpc" in {p["name"] for p in s["spec"]["ports"]}]

    def workload(self) -> dict[str, Any]:
        """The DaemonSet or Deployment whose pods run the proxy (for sidecars: the application's)."""
        found = [
            doc
            for doc in self.documents
            if doc["kind"] in ("DaemonSet", "Deployment") and proxy_container(doc)
        ]
        assert len(found) == 1, f"{self.case}: expected one workload running the proxy, found {len(found)}"
        return found[0]

    def pod(self) -> dict[str, Any]:
        return self.workload()["spec"]["template"]

    def container(self) -> dict[str, Any]:
        container = proxy_container(self.workload())
        assert container is not None
        return container

    def mount(self, volume: str) -> dict[str, Any]:
        (mount,) = [m for m in self.container()["volumeMounts"] if m["name"] == volume]
        return mount

    def volume(self, name: str) -> dict[str, Any]:
        (volume,) = [v for v in self.pod()["spec"]["volumes"] if v["name"] == name]
        return volume

    def analyzers(self) -> list[dict[str, Any]]:
        """Fleet mode's analyzer Deployments (there must be one, or none)."""
        return [doc for doc in self.all("Deployment") if analyzer_container(doc) is not None]

    def analyzer(self) -> dict[str, Any]:
        (found,) = self.analyzers()
        return found

    def analyzer_container(self) -> dict[str, Any]:
        container = analyzer_container(self.analyzer())
        assert container is not None
        return container

    def config_text(self) -> str:
        maps = [doc for doc in self.all("ConfigMap") if "config.yaml" in doc.get("data", {})]
        assert len(maps) == 1
        return maps[0]["data"]["config.yaml"]


def proxy_container(workload: dict[str, Any]) -> dict[str, Any] | None:
    spec = workload["spec"]["template"]["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    return next((c for c in containers if c["name"] == PROXY), None)


def analyzer_container(workload: dict[str, Any]) -> dict[str, Any] | None:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c["name"] == ANALYZER), None)


def documents(manifests: dict[str, str]) -> Iterator[dict[str, Any]]:
    for path, text in manifests.items():
        if not path.endswith("NOTES.txt"):
            yield from (doc for doc in yaml.safe_load_all(text) if doc)


def render(chart: helm.Chart, values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next(
        text
        for path, text in manifests.items()
        if path.endswith(f"{PROXY}/templates/NOTES.txt") or path.endswith("lipservice/templates/NOTES.txt")
    )
    return list(documents(manifests)), notes


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of two values layers: maps merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = overlay(base[key], value) if both_maps else value
    return merged


def case_values(case: str) -> dict[str, Any]:
    return yaml.safe_load(CI_VALUES[case].read_text()) if case in CI_VALUES else {}


@contextmanager
def example_app_chart(directory: Path) -> Iterator[helm.Chart]:
    """examples/sidecar-app with its dependency built as `helm dependency build` does (offline, from a
    copy of the chart under `directory`, so the source tree is left alone)."""
    copy = directory / "lipservice-proxy"
    shutil.copytree(CHART, copy)
    helm.dependency_build(copy / "examples" / "sidecar-app")
    with helm.Chart.load(copy / "examples" / "sidecar-app") as loaded:
        yield loaded
