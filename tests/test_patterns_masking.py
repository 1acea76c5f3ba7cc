"""Masking: typed placeholders, token kinds, and the digit-shape property the lookup cache relies on."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipservice_proxy.patterns.masking import (
    CONSTANT,
    MAX_BODY_CHARS,
    MIXED,
    VARIABLE,
    Masker,
    clean_text,
    digit_shape,
    token_kind,
)
from tests.support.loghub import available_systems, iter_lines


def masked(text: str) -> str:
    tokens, _ = Masker().tokens(clean_text(text))
    return " ".join(tokens)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("took 17 tries", "took <NUM> tries"),
        ("offset -42 and +7 and 3.14", "offset <NUM> and <NUM> and <NUM>"),
        ("block blk_-6952295868487656571 done", "block blk_<NUM> done"),
        ("addr 0x7f961cf08cf0 mask 0x05", "addr <HEX> mask <HEX>"),
        ("iar 003a90fc dear 00b360e8", "iar <HEX> dear <HEX>"),
        ("req 550e8400-e29b-41d4-a716-446655440000 ok", "req <UUID> ok"),
        ("from 10.251.73.220:50010 to 127.0.0.1", "from <IP> to <IP>"),
        ("ip fe80::1ff:fe23:4567:890a and 2607:f140:6000:8:c6b3:1ff:fecd:467f", "ip <IP> and <IP>"),
        ("open proxy.cse.cuhk.edu.hk:5070 now", "open <HOST> now"),
        ("mac 5c:50:15:4c:18:13:aa", "mac <MAC>"),
        ("see https://example.com/a?b=1 now", "see <URL> now"),
        ("mail bob.smith@example.org sent", "mail <EMAIL> sent"),
        ("loading /etc/httpd/conf/workers2.properties", "loading <PATH>"),
        ("GET /health", "GET /health"),
        ("took 65020ms and 5 ms and 2.5 seconds", "took <DURATION> and <DURATION> and <DURATION>"),
        ("0 bytes sent, 18.4 KB received, 126MB free", "<SIZE> sent, <SIZE> received, <SIZE> free"),
        ("node '/udev/vcs2' and \"host.local\"", "node <QUOTED> and <QUOTED>"),
        ('"GET /v2/servers HTTP/1.1" status: 200', '"GET <PATH> HTTP/<NUM>" status: <NUM>'),
        ("at 2015-10-18 18:01:47,978 done", "at <TIME> done"),
        ("at Fri Jun 17 07:07:00 2005 done", "at <TIME> done"),
        ("at 07:07:00 done", "at <TIME> done"),
        ("user=root uid=0 rhost=1.2.3.4", "user=root uid=<NUM> rhost=<IP>"),
        ("Can't find child 6725 in scoreboard", "Can't find child <NUM> in scoreboard"),
    ],
)
def test_typed_placeholders(body: str, expected: str) -> None:
    assert masked(body) == expected


def test_adjacent_placeholders_are_one_parameter() -> None:
    assert masked("451 bytes (18.4 KB) sent") == "<SIZE> (<SIZE>) sent"
    assert masked("onExtend:1514038530000 14 0 4") == "onExtend:<NUM> <NUM>"
    assert masked("delete blk_1 blk_2 blk_3 now") == "delete blk_<NUM> now"


def test_token_kinds() -> None:
    assert token_kind("failure;") == CONSTANT
    assert token_kind("<memory:") == CONSTANT  # a literal angle bracket is not a placeholder
    assert token_kind("blk_<NUM>") == MIXED
    assert token_kind("key=<*>") == MIXED
    assert token_kind("<IP>") == VARIABLE
    assert token_kind("(<SIZE>),") == VARIABLE
    assert Masker().tokens("rhost=1.2.3.4 (<x>) 5") == (
        ["rhost=<IP>", "(<x>)", "<NUM>"],
        [MIXED, CONSTANT, VARIABLE],
    )


@pytest.mark.loghub
def test_no_digit_survives_masking_of_real_logs() -> None:
    systems = available_systems()
    masker = Masker()
    for system in systems:
        for line in iter_lines(system):
            tokens, _ = masker.tokens(clean_text(line.content))
            assert not re.search(r"[0-9]", " ".join(tokens)), (system, line.content)


_TEXT = st.text(
    alphabet=st.sampled_from(list("0123456789abcdefABCDEFxyz.:-_/=@'\"()[]<>#, \t")) | st.characters(),
    max_size=80,
)


@settings(max_examples=300, deadline=None, database=None)
@given(text=_TEXT, seed=st.integers(0, 9))
def test_bodies_that_differ_only_in_digits_mask_alike(text: str, seed: int) -> None:
    # the engine's first cache maps a digit shape to a template: this must hold for it to be exact
    other = re.sub(r"[0-9]", lambda m: str((int(m.group()) + seed) % 10), text)
    assert digit_shape(text) == digit_shape(other)
    assert Masker().tokens(clean_text(text)) == Masker().tokens(clean_text(other))


@settings(max_examples=300, deadline=None, database=None)
@given(text=_TEXT, lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8))
def test_bodies_whose_numbers_change_length_mask_alike(text: str, lengths: list[int]) -> None:
    # the second cache keys on digit runs made one digit: no rule may count digits
    runs = iter(lengths * 20)
    other = re.sub(r"[0-9]+", lambda m: "7" * next(runs, 1), text)
    assert Masker().tokens(clean_text(text)) == Masker().tokens(clean_text(other))


def test_clean_text_bounds_and_repairs() -> None:
    assert len(clean_text("x" * (MAX_BODY_CHARS * 3))) == MAX_BODY_CHARS
    repaired = clean_text("a\ud800b")
    assert repaired.encode() == "a\ufffdb".encode()
