"""The engine's contract: same object per template, lookups that do not learn, OTLP bodies, any input,
and state that survives a restart."""

from __future__ import annotations

import itertools
import random
import re
import string
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from lipservice_proxy.errors import PatternStoreError
from lipservice_proxy.patterns import Pattern, PatternEngine
from lipservice_proxy.patterns.engine import UNMINED_TEMPLATE
from tests.support.loghub import available_systems, iter_lines

_ID = re.compile(r"^[0-9a-f]{16}$")


def kvlist(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


def test_the_same_template_is_the_same_object() -> None:
    engine = PatternEngine()
    first = engine.add("GET /health 200 in 3 ms")
    assert engine.add("GET /health 200 in 3 ms") is first
    assert engine.add("GET /health 503 in 41 ms") is first  # new digit shape, same template
    assert engine.add("GET /health 200 in 3 ms") is first


def test_match_looks_up_without_learning() -> None:
    engine = PatternEngine()
    assert engine.match("User alice logged in") is None
    assert engine.stats().templates == 0
    learned = engine.add("User alice logged in")
    assert engine.match("User alice logged in") is learned
    assert engine.match("User alice logged out now") is None
    assert engine.stats().templates == 1


def test_string_bodies_are_mined_like_text() -> None:
    engine = PatternEngine()
    assert engine.add_body(AnyValue(string_value="disk 3 full")) is engine.add("disk 7 full")


def test_a_map_body_uses_its_message_like_key() -> None:
    engine = PatternEngine()
    body = kvlist(level=AnyValue(string_value="info"), msg=AnyValue(string_value="user 42 logged in"))
    assert engine.add_body(body) is engine.add("user 7 logged in")
    preferred = kvlist(
        event=AnyValue(string_value="cache miss"), Message=AnyValue(string_value="disk 3 full")
    )
    assert engine.add_body(preferred).template == "disk <NUM> full"


def test_a_map_body_without_a_message_is_its_key_set() -> None:
    engine = PatternEngine()
    one = engine.add_body(kvlist(b=AnyValue(int_value=1), a=AnyValue(string_value="x")))
    two = engine.add_body(kvlist(a=AnyValue(string_value="y"), b=AnyValue(int_value=2)))
    assert one is two
    assert one.template == "{a, b}"
    message_not_text = kvlist(message=AnyValue(int_value=3))
    assert engine.add_body(message_not_text).template == "{message}"


def test_bytes_bodies_fall_into_length_classes() -> None:
    engine = PatternEngine()
    assert engine.add_body(AnyValue(bytes_value=b"")).template == "<BYTES 0>"
    five, seven, eight = (engine.add_body(AnyValue(bytes_value=b"x" * n)) for n in (5, 7, 8))
    assert five is seven and five.template == "<BYTES 4-7>"
    assert eight.template == "<BYTES 8-15>"


def test_other_bodies_get_fixed_patterns_and_severity_plays_no_part() -> None:
    engine = PatternEngine()
    assert engine.add_body(AnyValue()).template == "<EMPTY>"
    assert engine.add_body(AnyValue(string_value="   ")).template == "<EMPTY>"
    assert engine.add_body(AnyValue(bool_value=True)).template == "<BOOL>"
    assert engine.add_body(AnyValue(int_value=3)) is engine.add_body(AnyValue(double_value=2.5))
    assert engine.add_body(AnyValue(array_value=ArrayValue())).template == "<ARRAY>"
    fixed = engine.add_body(AnyValue(bool_value=False))
    assert engine.resolve(fixed.id) is fixed


def _well_formed(pattern: Pattern) -> bool:
    return (
        bool(_ID.match(pattern.id))
        and bool(pattern.template)
        and not re.search(r"[\t\n\r]", pattern.template)
    )


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\x00\x01\x02 \x1b[31mred\x1b[0m",
        "lone \ud800 surrogate \udfff here",
        "ünïcödé ✓ 日本語 ٣٤٥ digits",
        "x" * 1_000_000,
        "word " * 200_000,
        "<*> <NUM> literal placeholders =<*> key=",
        "\t\n\r\x0b\x0c",
        " ".join(f"k{i}=v{i}x" for i in range(10_000)),  # 10,000 tokens
        bytes(range(256)).decode("utf-8", "surrogateescape") * 4096,  # 1 MiB, not UTF-8
        "\x00" * 1_048_576,
        "() [] {} \"\" '' <> ()" * 1000,
    ],
)
def test_odd_bodies_get_a_pattern_and_never_raise(body: str) -> None:
    engine = PatternEngine()
    pattern = engine.add(body)
    assert _well_formed(pattern)
    assert engine.add(body) is pattern
    assert engine.match(body) is pattern
    assert len(pattern.template) <= 20_000


@settings(max_examples=300, deadline=None, database=None)
@given(bodies=st.lists(st.text(max_size=60), min_size=1, max_size=20))
def test_any_text_gets_a_well_formed_pattern(bodies: list[str]) -> None:
    engine = PatternEngine(max_templates=8, cache_size=8)
    for body in bodies:
        assert _well_formed(engine.add(body))
    assert engine.stats().templates <= 8
    assert engine.stats().cache_entries <= 8


@settings(max_examples=200, deadline=None, database=None)
@given(raw=st.lists(st.binary(max_size=200), min_size=1, max_size=20), burst=st.integers(1, 5))
def test_any_bytes_get_a_well_formed_pattern_whether_mined_or_shed(raw: list[bytes], burst: int) -> None:
    steps = itertools.count()
    engine = PatternEngine(
        max_templates=8,
        cache_size=8,
        mining_burst=burst,
        mining_per_line=0.5,
        mining_per_second=0.0,
        clock=lambda: next(steps),
    )
    bodies = [data.decode("utf-8", "surrogateescape") for data in raw]
    for pattern in engine.add_many(bodies) + engine.add_many(bodies):
        assert _well_formed(pattern)
    assert engine.stats().templates <= 8


def _random_words(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(5)) for _ in range(count)
    ]


def test_a_flood_of_new_lines_is_shed_and_lines_of_known_shapes_are_not() -> None:
    steps = itertools.count()
    # each mining costs one tick of this clock (two readings): a burst of 40 mines about twenty lines
    engine = PatternEngine(
        mining_burst=40, mining_per_line=0.0, mining_per_second=0.0, clock=lambda: next(steps)
    )
    known = engine.add("GET /health 200 in 3 ms")
    flood = engine.add_many(_random_words(1000, seed=1))
    shed = [pattern for pattern in flood if pattern.template == UNMINED_TEMPLATE]
    assert len(shed) >= 950
    assert engine.stats().shed_lines == len(shed)
    assert len({pattern.id for pattern in shed}) == 1  # the flood is one pattern for the sampler
    assert engine.add("GET /health 503 in 41 ms") is known  # a known shape is a cache hit
    assert engine.stats().shed_lines == len(shed)


def test_mining_credit_comes_back_with_the_lines_and_the_seconds() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # one tick per reading: each mining costs one
        return now[0]

    per_line = PatternEngine(mining_burst=2, mining_per_line=0.1, mining_per_second=0.0, clock=clock)
    mined = [body for body in _random_words(2000, seed=2) if per_line.add(body).template != UNMINED_TEMPLATE]
    assert 150 <= len(mined) <= 250  # one line in ten (0.1 of a tick per line, a tick per mining)

    now[0] = 0.0
    # the clock's own ticks earn 0.1 each, less than a mining costs: a flood runs the credit out
    per_second = PatternEngine(mining_burst=2, mining_per_line=0.0, mining_per_second=0.1, clock=clock)
    assert per_second.add("a first new statement").template != UNMINED_TEMPLATE
    shed_before = per_second.stats().shed_lines
    per_second.add_many(_random_words(50, seed=3))
    assert per_second.stats().shed_lines > shed_before
    now[0] += 100.0  # time passes: the burst is back
    assert per_second.add("quite another statement now").template != UNMINED_TEMPLATE


def test_a_mining_budget_must_make_sense() -> None:
    with pytest.raises(ValueError, match="mining budget"):
        PatternEngine(mining_burst=0.0)
    with pytest.raises(ValueError, match="mining budget"):
        PatternEngine(mining_per_line=-1.0)


def _loghub_bodies() -> list[str]:
    systems = available_systems()
    return [line.content for system in systems[:4] for line in iter_lines(system)]


@pytest.mark.loghub
def test_a_restored_engine_keeps_ids_and_goes_on_learning_the_same_way(tmp_path: Path) -> None:
    bodies = _loghub_bodies()
    half = len(bodies) // 2
    running = PatternEngine()
    for body in bodies[:half]:
        running.add(body)
    state = tmp_path / "patterns.json"
    running.save(state)
    restored = PatternEngine.load(state)
    assert sorted(p.id for p, _ in restored.patterns()) == sorted(p.id for p, _ in running.patterns())
    assert [restored.add(b).id for b in bodies[half:]] == [running.add(b).id for b in bodies[half:]]


def test_ids_and_aliases_survive_a_restart(tmp_path: Path) -> None:
    engine = PatternEngine()
    first, bob, carol, _dave = (
        engine.add(f"User {name} logged in") for name in ("alice", "bob", "carol", "dave")
    )
    assert first.id != bob.id != carol.id  # an enumeration, until the fourth value makes it a parameter
    survivor = engine.resolve(first.id)
    assert survivor is not None and survivor.id == first.id and survivor.template == "User <*> logged in"
    engine.save(tmp_path / "state.json")
    restored = PatternEngine.load(tmp_path / "state.json")
    assert restored.resolve(bob.id) == restored.resolve(carol.id) == survivor
    assert restored.add("User erin logged in") == survivor
    assert orjson.loads((tmp_path / "state.json").read_bytes())["version"] == 2


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("previous")
    engine = PatternEngine()
    engine.add("a message with 3 words")
    engine.save(state)
    assert orjson.loads(state.read_bytes())["format"] == "lipservice-patterns"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_save_creates_missing_directories(tmp_path: Path) -> None:
    state = tmp_path / "missing" / "patterns" / "state.json"
    PatternEngine().save(state)
    assert orjson.loads(state.read_bytes())["format"] == "lipservice-patterns"


def test_save_where_no_directory_can_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PatternStoreError, match="cannot write"):
        PatternEngine().save(tmp_path / "file" / "patterns" / "state.json")


def test_load_keeps_the_newest_templates_when_the_cap_is_smaller(tmp_path: Path) -> None:
    def statement(i: int) -> str:
        return " ".join(f"w{chr(97 + i % 26)}{chr(97 + i // 26)}{k}" for k in "xyz")

    engine = PatternEngine()
    for i in range(30):
        engine.add(statement(i))
    engine.save(tmp_path / "state.json")
    restored = PatternEngine.load(tmp_path / "state.json", max_templates=10)
    assert restored.stats().templates == 10
    assert restored.match(statement(29)) is not None
    assert restored.match(statement(0)) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such pattern state file"),
        (b"{not json", "not valid JSON"),
        (b"[]", "not a pattern state file"),
        (b'{"format": "lipservice-patterns", "version": 99, "templates": []}', "unsupported version"),
        (b'{"format": "lipservice-patterns", "version": 1, "templates": {}}', "templates: expected a list"),
        (
            b'{"format": "lipservice-patterns", "version": 1, "templates": '
            b'[{"tokens": [], "size": 1, "pinned": false}]}',
            r"templates\[0\].tokens",
        ),
        (
            b'{"format": "lipservice-patterns", "version": 1, "templates": '
            b'[{"tokens": ["a"], "size": true, "pinned": false}]}',
            r"templates\[0\].size",
        ),
        (
            b'{"format": "lipservice-patterns", "version": 1, "templates": '
            b'[{"id": "0000000000000000", "tokens": ["a"], "size": 1, "pinned": false}]}',
            "is not the id of its template",
        ),
        (
            b'{"format": "lipservice-patterns", "version": 1, "templates": [], "aliases": {"x": 0}}',
            "is not a pattern id",
        ),
    ],
)
def test_a_missing_or_corrupt_state_file_is_a_clear_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    state = tmp_path / "state.json"
    if content is not None:
        state.write_bytes(content)
    with pytest.raises(PatternStoreError, match=message) as raised:
        PatternEngine.load(state)
    assert str(state) in str(raised.value)
