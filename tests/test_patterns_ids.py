"""Ids for good: the id stamped on a statement's first record is its id as the template learns, across
a restart (state file version 2, and version 1 files still load), and on the records the sampler
annotates."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.errors import PatternStoreError
from lipservice_proxy.patterns import PatternEngine, pattern_id
from lipservice_proxy.sampling.annotate import PATTERN_ID, TEMPLATE
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from tests.support.loghub import available_systems, iter_lines
from tests.support.proxy import ProxyThread, http_get
from tests.support.waiting import wait_until


@pytest.mark.loghub
def test_every_first_id_of_a_loghub_system_still_names_its_pattern_at_the_end() -> None:
    systems = available_systems()
    engine = PatternEngine()
    first = [pattern.id for pattern in engine.add_many([line.content for line in iter_lines(systems[0])])]
    resolved = [engine.resolve(i) for i in first]
    kept = sum(pattern is not None and pattern.id == i for pattern, i in zip(resolved, first, strict=True))
    assert kept / len(first) >= 0.99
    assert all(pattern is not None for pattern in resolved)


def test_a_version_1_state_file_still_loads_with_its_ids(tmp_path: Path) -> None:
    state = tmp_path / "old.json"
    widened = "lease renewed for <*>"
    document = {
        "format": "lipservice-patterns",
        "version": 1,
        "templates": [
            {"id": pattern_id(widened), "tokens": widened.split(), "size": 5, "pinned": True, "anchor": 0},
        ],
        "aliases": {pattern_id("lease renewed for <IP>"): 0},
    }
    state.write_bytes(orjson.dumps(document))
    engine = PatternEngine.load(state)
    current = engine.resolve(pattern_id(widened))
    assert current is not None and current.template == widened
    assert engine.resolve(pattern_id("lease renewed for <IP>")) == current
    assert engine.add("lease renewed for 10.0.0.1") == current
    engine.save(state)
    assert orjson.loads(state.read_bytes())["version"] == 2
    assert PatternEngine.load(state).resolve(current.id) == current


def _version_2(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"format": "lipservice-patterns", "version": 2, "templates": list(entries)})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_version_2({"tokens": ["a"], "size": 1}), r"templates\[0\].id: expected str"),
        (_version_2({"id": "XYZ", "tokens": ["a"], "size": 1}), "is not a pattern id"),
        (
            _version_2(
                {"id": "0123456789abcdef", "tokens": ["a"], "size": 1},
                {"id": "0123456789abcdef", "tokens": ["b"], "size": 1},
            ),
            "listed twice",
        ),
        (
            _version_2(
                {"id": "0123456789abcdef", "tokens": ["a"], "size": 1},
                {"id": "fedcba9876543210", "tokens": ["a"], "size": 1},
            ),
            "the same template as another entry",
        ),
    ],
)
def test_a_bad_version_2_state_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    with pytest.raises(PatternStoreError, match=message):
        PatternEngine.load(state)


def test_a_statement_that_comes_back_after_eviction_gets_its_old_id() -> None:
    engine = PatternEngine(max_templates=3, cache_size=4)
    ids = [engine.add(f"job state {value}").id for value in ("done", "failed", "killed", "lost")]
    assert engine.stats().pattern_merges == 2  # failed and killed merged into done's template
    for i in range(20):  # crowd the merged template out
        engine.add(f"other statement number{'x' * i} here")
    assert engine.resolve(ids[0]) is None
    back = engine.add("job state failed")
    assert back.id == ids[1]  # its old alias led nowhere: the id is free again
    assert engine.resolve(ids[1]) is back


def _request(bodies: list[str]) -> ExportLogsServiceRequest:
    message = ExportLogsServiceRequest()
    scope = message.resource_logs.add().scope_logs.add()
    for body in bodies:
        scope.log_records.add().body.string_value = body
    return message


def _annotations(message: ExportLogsServiceRequest) -> list[tuple[str, str]]:
    found = []
    for resource_logs in message.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                values = {a.key: a.value.string_value for a in record.attributes}
                found.append((values[PATTERN_ID], values[TEMPLATE]))
    return found


def test_the_sampler_stamps_the_kept_id_with_the_template_as_it_is_now() -> None:
    keep_all = {"severity_rates": dict.fromkeys(("TRACE", "DEBUG", "INFO", "WARN"), 1.0)}
    sampler = Sampler(PatternEngine(), Policy.model_validate(keep_all))
    first = _request(["lease renewed for 10.0.0.1 (node-1.example.net)"])
    sampler.process(first, first.SerializeToString(), 1000.0)
    later = _request(["lease renewed for 10.0.0.2 ()", "lease renewed for 10.0.0.3 (n3.example.org)"])
    sampler.process(later, later.SerializeToString(), 1001.0)
    ((first_id, first_template),) = _annotations(first)
    assert first_template == "lease renewed for <IP> (<HOST>)"
    assert _annotations(later) == [(first_id, "lease renewed for <*>")] * 2


def _post(proxy: ProxyThread, bodies: list[str]) -> None:
    request = urllib.request.Request(
        proxy.http_url + "/v1/logs",
        data=_request(bodies).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _patterns_view(proxy: ProxyThread) -> dict[str, Any]:
    status, body = http_get(proxy.admin_url + "/api/v1/patterns?limit=100")
    assert status == 200
    view: dict[str, Any] = orjson.loads(body)
    return view


def test_a_running_proxy_reports_merges_and_current_templates_in_its_patterns_api() -> None:
    with ProxyThread({}) as proxy:
        _post(
            proxy, [f"job {i} state {value}" for i, value in enumerate(("done", "failed", "killed", "lost"))]
        )
        assert _patterns_view(proxy)["engine"]["pattern_merges"] == 2
        assert wait_until(
            lambda: proxy.metric("lipservice_pattern_merges_total") == 2, what="merges published"
        )

        _post(proxy, ["lease renewed for 10.0.0.1 (node-1.example.net)"])
        _post(proxy, ["lease renewed for 10.0.0.2 ()"])
        leases = [p for p in _patterns_view(proxy)["patterns"] if p["template"].startswith("lease")]
        assert [(p["template"], p["received"]) for p in leases] == [("lease renewed for <*>", 2)]
