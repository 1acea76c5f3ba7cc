"""Mining: how templates generalise, split into variants, merge, get ids and stay within their caps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import xxhash

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.patterns.miner import PARAMETER_VALUES

REPO = Path(__file__).resolve().parents[1]


def test_a_template_that_widens_keeps_its_id() -> None:
    engine = PatternEngine()
    first = engine.add("lease renewed for 10.0.0.7 (node-17.rack2.example.net) in 4 ms")
    assert first.template == "lease renewed for <IP> (<HOST>) in <DURATION>"
    second = engine.add("lease renewed for 10.0.0.9 () in 9 ms")
    assert second.template == "lease renewed for <*> in <DURATION>"
    assert second.id == first.id
    assert engine.resolve(first.id) is second
    assert engine.add("lease renewed for 10.1.1.1 (n1.example.org) in 1 ms") is second
    assert engine.stats().pattern_merges == 0


def test_an_id_is_minted_from_the_first_text_and_never_changes() -> None:
    engine = PatternEngine()
    pattern = engine.add("disk full on /dev/sda1 after 5 ms")
    assert pattern.template == "disk full on <PATH> after <DURATION>"
    # the first text with its values as <*>: the same whichever values the first line had
    assert pattern.id == xxhash.xxh3_64_hexdigest(b"disk full on <*> after <*>")
    assert len(pattern.id) == 16 and pattern.id == pattern.id.lower()
    users = [
        engine.add(f"User {name} logged in from 10.0.0.7").id for name in ("alice", "bob", "carol", "dave")
    ]
    assert engine.resolve(users[0]).template == "User <*> logged in from <IP>"  # type: ignore[union-attr]
    assert engine.resolve(users[0]).id == users[0]  # type: ignore[union-attr]


def test_replicas_whose_first_lines_differ_only_in_values_mint_the_same_id() -> None:
    lines = [
        "lease renewed for 10.0.0.7 (node-17.example.net) in 4 ms",
        "lease renewed for 10.0.0.9 () in 9 ms",
    ]
    one, other = PatternEngine(), PatternEngine()
    first = [one.add(line).id for line in lines]
    second = [other.add(line).id for line in reversed(lines)]
    assert len({*first, *second}) == 1
    assert one.resolve(first[0]) == other.resolve(second[0])


def test_merged_variants_resolve_to_the_survivor_and_are_counted() -> None:
    engine = PatternEngine()
    ids = _states(engine, ["done", "failed", "killed", "lost", "paused"])
    survivor = engine.resolve(ids[0])
    assert survivor is not None
    assert survivor.id == ids[0]
    assert survivor.template == "job <NUM> finished with state <*> after <NUM> retries"
    assert {engine.resolve(i) for i in ids} == {survivor}
    merged = {i for i in ids if i != survivor.id}
    assert merged and engine.stats().pattern_merges == len(merged)


def test_a_word_that_differs_splits_off_a_variant_instead_of_becoming_a_wildcard() -> None:
    engine = PatternEngine()
    frequent = [
        engine.add(f"Failed password for root from 10.0.0.{i} port {4000 + i} ssh2") for i in range(20)
    ]
    assert len({p.id for p in frequent}) == 1
    rare = engine.add("Failed none for root from 10.0.0.1 port 4000 ssh2")
    assert rare.template == "Failed none for root from <IP> port <NUM> ssh<NUM>"
    assert engine.add("Failed password for root from 10.9.9.9 port 1 ssh2") is frequent[0]


def _states(engine: PatternEngine, values: list[str]) -> list[str]:
    return [engine.add(f"job 1 finished with state {value} after 3 retries").id for value in values]


def test_a_small_enumeration_stays_apart() -> None:
    engine = PatternEngine()
    ids = _states(engine, ["done", "failed", "killed"][: PARAMETER_VALUES - 1])
    assert len(set(ids)) == PARAMETER_VALUES - 1
    assert all(engine.resolve(i) is not None and engine.resolve(i).id == i for i in ids)  # type: ignore[union-attr]


def test_enough_distinct_values_make_the_position_a_parameter() -> None:
    engine = PatternEngine()
    ids = _states(engine, ["done", "failed", "killed", "lost", "paused"])
    resolved = {engine.resolve(i).template for i in ids}  # type: ignore[union-attr]
    assert resolved == {"job <NUM> finished with state <*> after <NUM> retries"}


def test_first_words_that_vary_become_a_parameter() -> None:
    engine = PatternEngine()
    sources = ["com.apple.a.daily:", "com.apple.b.update:", "com.apple.c.heartbeat:", "com.apple.d.weekly:"]
    ids = [engine.add(f"{s} the start time is not for 439034 seconds, ignoring this run").id for s in sources]
    final = {engine.resolve(i).template for i in ids}  # type: ignore[union-attr]
    assert final == {"<*> the start time is not for <DURATION>, ignoring this run"}
    later = engine.add("com.apple.e.monthly: the start time is not for 12 seconds, ignoring this run")
    assert later.template == "<*> the start time is not for <DURATION>, ignoring this run"


def test_a_different_first_word_alone_does_not_merge_two_statements() -> None:
    engine = PatternEngine()
    failed = engine.add("Failed password for root from 1.2.3.4 port 22 ssh2")
    accepted = engine.add("Accepted password for root from 1.2.3.4 port 22 ssh2")
    assert failed.id != accepted.id
    assert engine.resolve(failed.id) is failed


def test_a_different_phrase_is_another_message() -> None:
    engine = PatternEngine()
    severed = engine.add("Error reading socket to 10.0.0.1:42, Link has been severed")
    reset = engine.add("Error reading socket to 10.0.0.1:42, Connection reset by peer")
    assert severed.id != reset.id
    assert reset.template == "Error reading socket to <IP>, Connection reset by peer"


def test_lists_and_runs_of_values_are_one_parameter() -> None:
    engine = PatternEngine()
    one = engine.add("ask 10.0.0.1:50010 to delete blk_1")
    many = engine.add("ask 10.0.0.2:50010 to delete blk_2 blk_3 blk_4")
    assert one is many
    sizes = engine.add("proxy:5070 close, 451 bytes (18.4 KB) sent, 0 bytes received")
    plain = engine.add("proxy:5070 close, 0 bytes sent, 0 bytes received")
    assert engine.resolve(sizes.id) is plain


def _word(n: int) -> str:
    letters = "".join(chr(97 + (n // 26**k) % 26) for k in range(3))
    return "w" + letters


def test_template_count_stays_at_its_cap_and_a_busy_template_survives_eviction() -> None:
    engine = PatternEngine(max_templates=50, cache_size=1000)
    busy = engine.add("heartbeat from the scheduler ok")
    for i in range(600):
        engine.add(" ".join(_word(i * 4 + k) for k in range(4)))
        assert engine.add("heartbeat from the scheduler ok") is busy
        assert engine.stats().templates <= 50
    stats = engine.stats()
    assert stats.templates == 50
    assert stats.template_evictions >= 550
    assert engine.resolve(busy.id) is busy


def test_the_cache_stays_within_its_size() -> None:
    engine = PatternEngine(cache_size=100)
    for i in range(1000):
        engine.add(f"request {chr(97 + i % 26)}{'x' * (i % 40)} served")
    stats = engine.stats()
    assert stats.cache_entries <= 100
    assert stats.cache_evictions > 0


_IDS_OF_A_STREAM = """
from lipservice_proxy.patterns import PatternEngine
from tests.support.loghub import available_systems, iter_lines
engine = PatternEngine()
for system in available_systems()[:3]:
    for line in iter_lines(system):
        print(engine.add(line.content).id)
"""


def test_ids_do_not_depend_on_the_process() -> None:
    outputs = []
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _IDS_OF_A_STREAM],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
