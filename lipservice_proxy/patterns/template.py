"""One learned template, and how its tokens compare with a line's masked tokens.

Token kinds come from masking: CONSTANT (a literal word), MIXED (literal text around placeholders,
"blk_<NUM>") and VARIABLE (placeholders and punctuation only, "<IP>"). A template token *accepts*
a line token when they are equal, when the template has <*> there, when both hold placeholders and
are one parameter (see `same_parameter`), or when the template has "key=<*>" and the line has that
key. Anything else contradicts a constant.
"""

from __future__ import annotations

from typing import Final

from .masking import CONSTANT, MIXED, VARIABLE, WILDCARD, literal_ends, token_kind
from .model import Pattern, pattern_id

MIN_SIMILARITY: Final = 0.6
REST_WORDS: Final = 2

BucketKey = tuple[int, int, str]
RestSignature = tuple[int, int, tuple[str, ...]]
_ANY: Final = "\x00"
_RELEASED: Final[tuple[()]] = ()
_RELEASED_KEY: Final[BucketKey] = (0, -1, "")
_RELEASED_PATTERN: Final = Pattern("0" * 16, "<RETIRED>")


def anchor_of(kinds: list[int]) -> int:
    """The position of the first literal word, the word that anchors a message (-1: none)."""
    for index, kind in enumerate(kinds):
        if kind == CONSTANT:
            return index
    return -1


def bucket_key(tokens: list[str], kinds: list[int]) -> BucketKey:
    anchor = anchor_of(kinds)
    return len(tokens), anchor, (tokens[anchor] if anchor >= 0 else WILDCARD)


def rest_signature(tokens: list[str], kinds: list[int], anchor: int) -> RestSignature | None:
    """Everything but the anchor word, with each parameter reduced to "some parameter": lines that
    differ only by their first word share it. None when the rest holds too few words to say so
    (at least REST_WORDS, and most of the line)."""
    if anchor < 0:
        return None
    rest = [token if kind == CONSTANT else _ANY for token, kind in zip(tokens, kinds, strict=True)]
    del rest[anchor]
    words = len(rest) - rest.count(_ANY)
    if words < REST_WORDS or words < MIN_SIMILARITY * len(tokens):
        return None
    return len(tokens), anchor, tuple(rest)


def minted_id(tokens: list[str], kinds: list[int]) -> str:
    """The id a template is born with: the hash of its text with every token that is a value written
    as <*> (placeholders only, or placeholders in literal text that is not a key=), so replicas whose
    first line of a statement differed only in values ("(<HOST>)" or "()") mint the same id."""
    canonical = [
        WILDCARD if kind == VARIABLE or (kind == MIXED and "=" not in token) else token
        for token, kind in zip(tokens, kinds, strict=True)
    ]
    return pattern_id(" ".join(canonical))


def generalise(values: list[str]) -> str:
    """The wildcard that covers every value: "key=<*>" when all are key=value with one key, else <*>."""
    first = values[0]
    cut = first.find("=") + 1
    if cut > 1 and token_kind(first[:cut]) == CONSTANT:
        prefix = first[:cut]
        if all(value.startswith(prefix) for value in values):
            return prefix + WILDCARD
    return WILDCARD


def same_parameter(mine: str, my_kind: int, token: str, kind: int) -> bool:
    """Two different tokens that both hold placeholders are one parameter when they are values of
    one key ("rhost=<IP>", "rhost=n<NUM>.example.net"), when either is only placeholders, or when
    they share their literal start or end ("attempt_<NUM>_m", "attempt_<NUM>_r")."""
    if my_kind == CONSTANT or kind == CONSTANT:
        return False
    cut = mine.find("=") + 1
    if cut > 1 and token[:cut] == mine[:cut] and token_kind(mine[:cut]) == CONSTANT:
        return True
    if my_kind == VARIABLE or kind == VARIABLE:
        return True
    my_head, my_tail = literal_ends(mine)
    head, tail = literal_ends(token)
    return bool(my_head and my_head == head) or bool(my_tail and my_tail == tail)


def accepts(mine: str, my_kind: int, token: str, kind: int) -> bool:
    if mine in (token, WILDCARD) or same_parameter(mine, my_kind, token, kind):
        return True
    return my_kind == MIXED and mine.endswith("=<*>") and token.startswith(mine[:-3])


class Template:
    """One learned template. `size` counts the lines it stood for (the engine bumps it on cache hits).

    `anchor` is where its first literal word was when it was created; it stays put when that word
    later becomes a parameter, so lines that differ only there still find this template.
    """

    __slots__ = (
        "alive",
        "anchor",
        "key",
        "kinds",
        "parent",
        "pattern",
        "rest",
        "serial",
        "size",
        "successor",
        "swept_size",
        "tokens",
        "variants",
    )

    def __init__(
        self,
        tokens: list[str],
        kinds: list[int],
        serial: int,
        parent: Template | None = None,
        size: int = 1,
        anchor: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.kinds = kinds
        self.key = bucket_key(tokens, kinds)
        self.anchor = self.key[1] if anchor is None else anchor
        self.rest: RestSignature | None = None
        self.pattern = Pattern(minted_id(tokens, kinds), " ".join(tokens))
        self.serial = serial
        self.size = size
        self.swept_size = size  # unreferenced until it is used again
        self.parent = parent
        self.variants: list[Template] = []
        self.alive = True
        self.successor: Template | None = None

    def release(self) -> None:
        """Drop what a retired template no longer needs: the lookup cache may keep the object itself
        until its entries age out, so only `alive` and `successor` stay meaningful."""
        self.tokens = self.kinds = self.variants = _RELEASED  # type: ignore[assignment]  # shared empty, never read
        self.key = _RELEASED_KEY
        self.rest = None
        self.parent = None
        self.pattern = _RELEASED_PATTERN

    def rest_signature(self) -> RestSignature | None:
        return rest_signature(self.tokens, self.kinds, self.anchor)

    def agreement(self, tokens: list[str], kinds: list[int]) -> int:
        agree = 0
        for mine, my_kind, token, kind in zip(self.tokens, self.kinds, tokens, kinds, strict=True):
            if mine == token or same_parameter(mine, my_kind, token, kind):
                agree += 1
        return agree

    def mismatches(self, tokens: list[str], kinds: list[int]) -> list[int]:
        return [
            index
            for index, (mine, my_kind, token, kind) in enumerate(
                zip(self.tokens, self.kinds, tokens, kinds, strict=True)
            )
            if not accepts(mine, my_kind, token, kind)
        ]

    def values_only(self, tokens: list[str], kinds: list[int], mismatched: list[int]) -> bool:
        """True when every mismatched position holds a value: one side is nothing but a value
        ("(<HOST>)" against "()"), or both hold placeholders ("KB<NUM>~<HEX>" against
        "Win<NUM>-SRV<NUM>") and are not values of different keys ("LOGIN(uid=<NUM>)" against
        "(uid=<NUM>)"). A parameter: the template widens there rather than split off a variant."""
        for index in mismatched:
            mine, token = self.tokens[index], tokens[index]
            if self.kinds[index] == VARIABLE or kinds[index] == VARIABLE:
                continue
            if self.kinds[index] == CONSTANT or kinds[index] == CONSTANT:
                return False  # "SOCKS<NUM>" against "HTTPS" may well be another statement
            if "=" in mine or "=" in token:
                return False
        return True

    def absorb(self, tokens: list[str], kinds: list[int]) -> bool:
        """Widen the template to cover a line; True when its text changed."""
        changed = False
        mine = self.tokens
        for index, token in enumerate(tokens):
            current = mine[index]
            if current in (token, WILDCARD):
                continue
            if self.kinds[index] == MIXED and current.endswith("=<*>") and token.startswith(current[:-3]):
                continue
            widened = generalise([current, token])
            if widened != current:
                mine[index] = widened
                self.kinds[index] = token_kind(widened)
                changed = True
        self.size += 1
        return changed
