"""The policy file: schema, validation messages, the shipped files, and the store's hot reload."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lipservice_proxy.errors import PolicyError
from lipservice_proxy.patterns.model import pattern_id
from lipservice_proxy.sampling.policy import (
    Policy,
    dump_policy,
    load_policy,
    parse_policy,
    policy_json_schema,
)
from lipservice_proxy.sampling.store import PolicyStore
from lipservice_proxy.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[1]

# the example of README.md's "The policy file", as a reader copies it
README_EXAMPLE = re.search(
    r"## The policy file.*?```yaml\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S
).group(1)  # type: ignore[union-attr]


def test_the_readme_example_parses() -> None:
    policy = parse_policy(README_EXAMPLE)
    assert policy.version == 7
    assert policy.patterns[0].rate == 0.01
    assert policy.patterns[0].id == pattern_id(str(policy.patterns[0].template))  # a real id: 16 hex digits
    assert policy.patterns[1].id is None and policy.patterns[1].template  # a rule by template alone
    assert policy.first_per_window.window == 60.0
    assert policy.anomaly_boost.duration == 600.0
    assert policy.services["checkout"].severity_rates == {"INFO": 0.5}


def test_dump_round_trips() -> None:
    policy = parse_policy(README_EXAMPLE)
    assert parse_policy(dump_policy(policy)) == policy


def test_shipped_default_equals_builtin_default() -> None:
    assert load_policy(REPO / "policies" / "default.yaml") == Policy()
    assert Policy().severity_rates == {
        "TRACE": 0.01,
        "DEBUG": 0.05,
        "INFO": 0.2,
        "WARN": 0.5,
        "ERROR": 1.0,
        "FATAL": 1.0,
    }


def test_shipped_schema_is_current() -> None:
    shipped = json.loads((REPO / "policies" / "policy.schema.json").read_text())
    assert shipped == policy_json_schema(), (
        "regenerate: lipservice-proxy policy schema > policies/policy.schema.json"
    )


def test_examples_are_valid() -> None:
    examples = sorted((REPO / "policies" / "examples").glob("*.yaml"))
    assert examples, "policies/examples/ should hold at least one example"
    for path in examples:
        load_policy(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("severity_rates: {ERROR: 0.5}", "severity_rates: ERROR must be 1.0"),
        ("severity_rates: {fatal: 0.9}", "severity_rates: FATAL must be 1.0"),
        ("severity_rates: {INFO: 1.5}", "severity_rates.INFO: Input should be less than or equal to 1"),
        ("severity_rates: {LOUD: 0.5}", "severity_rates.LOUD"),
        ("patterns: [{id: a, rate: 0.1}, {id: a, rate: 0.2}]", "pattern id 'a' appears twice"),
        ("patterns: [{id: 'x y', rate: 0.1}]", "patterns[0].id"),
        (
            "patterns: [{rate: 0.1, reason: r}]",
            "patterns[0]: a pattern rule needs an `id`, a `template` or both",
        ),
        ("patterns: [{template: t, rate: 0.1}, {template: t, rate: 0.2}]", "template 't' appears twice"),
        ("exemptions: [{attribute: audit}]", "exactly one of `equals` or `matches`"),
        ("exemptions: [{attribute: a, matches: '(['}]", "not a valid regular expression"),
        ("first_per_window: {window: 0s}", "first_per_window.window: must be positive"),
        ("generated_by: robot", "generated_by: must be default, heuristic, manual or llm:<model>"),
        ("versoin: 3", "versoin: unknown key"),
        ("", "the file is empty"),
        ("[1, 2]", "the top level must be a mapping"),
        ("a: [", "invalid YAML at line"),
    ],
)
def test_invalid_policies_name_the_problem(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert expected in str(error.value)


def _write(path: Path, text: str) -> None:
    """Write, then move the mtime so a same-second rewrite is still seen as a change."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_store_reloads_keeps_last_good_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, "version: 2\nseverity_rates: {INFO: 0.3}\n")
    telemetry = Telemetry()
    store = PolicyStore([path], Policy(), telemetry)
    seen: list[Policy] = []
    store.subscribe(seen.append)
    assert store.load_initial().severity_rates["INFO"] == 0.3
    assert store.poll() is False  # unchanged file: nothing to do

    _write(path, "version: 3\nseverity_rates: {INFO: 0.4}\n")
    assert store.poll() is True
    assert store.current.version == 3 and seen[-1].severity_rates["INFO"] == 0.4

    _write(path, "version: 4\nseverity_rates: {INFO: nope}\n")
    assert store.poll() is False
    assert store.current.version == 3  # the last good policy stays
    errors = telemetry.registry.get_sample_value("lipservice_policy_reloads_total", {"outcome": "error"})
    assert errors == 1
    assert telemetry.registry.get_sample_value("lipservice_policy_version") == 3

    path.unlink()
    assert store.poll() is False and store.current.version == 3  # a vanished file changes nothing


def test_store_prefers_the_highest_version(tmp_path: Path) -> None:
    manual, generated = tmp_path / "manual.yaml", tmp_path / "generated.yaml"
    _write(manual, "version: 5\n")
    store = PolicyStore([manual, generated], Policy())
    assert store.load_initial().version == 5
    _write(generated, "version: 6\ngenerated_by: heuristic\n")
    assert store.poll() and store.current.generated_by == "heuristic"
    _write(manual, "version: 9\ngenerated_by: manual\n")
    assert store.poll() and store.current.generated_by == "manual"


def test_store_fails_fast_on_a_broken_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("severity_rates: {ERROR: 0}\n")
    with pytest.raises(PolicyError, match=r"ERROR must be 1\.0"):
        PolicyStore([path], Policy()).load_initial()
