"""Masking: replace the variable parts of a log body by typed placeholders, then split it into tokens.

Every rule looks at the *shape* of the text (which characters are digits, letters, punctuation), never
at the value of a digit, and every ASCII digit ends up inside a placeholder. So two bodies that differ
only in their digits always mask to the same tokens; the engine's lookup cache relies on this.

Placeholders (see the package docstring for the whole template syntax):

    <URL> <EMAIL> <UUID> <TIME> <MAC> <IP> <HOST> <PATH> <HEX> <DURATION> <SIZE> <QUOTED> <NUM>

Tokens are whitespace-separated. Two rewrites make one parameter out of several tokens:
adjacent tokens that are nothing but placeholders and punctuation become one token
("<SIZE> (<SIZE>)"), and a token repeated right after itself, when it holds a placeholder, is kept
once ("blk_<NUM> blk_<NUM>" is a list of blocks, one parameter).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from .generations import Generations

WILDCARD: Final = "<*>"
PLACEHOLDERS: Final = (
    "<URL>",
    "<EMAIL>",
    "<UUID>",
    "<TIME>",
    "<MAC>",
    "<IP>",
    "<HOST>",
    "<PATH>",
    "<HEX>",
    "<DURATION>",
    "<SIZE>",
    "<QUOTED>",
    "<NUM>",
)

# What a masked token is made of: a literal word, a mix of literal text and placeholders
# ("blk_<NUM>", "uid=<NUM>"), or nothing but placeholders and punctuation ("<IP>", "(<SIZE>)").
CONSTANT: Final = 0
MIXED: Final = 1
VARIABLE: Final = 2

# Bodies are cut here before masking: the statement that wrote a line is known long before 4 KiB,
# and a bound keeps the work per line and the size of every key and template bounded.
MAX_BODY_CHARS: Final = 4096
MAX_TOKENS: Final = 256


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A date written with spaces ("Fri Jun 17 07:07:00 2005"): a month name (and a weekday before it)
# right before a number or a time joins them into one <TIME>.
_MONTHS: Final = _words(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Sept Oct Nov Dec January February March April June "
    "July August September October November December"
)
_WEEKDAYS: Final = _words(
    "Mon Tue Wed Thu Fri Sat Sun Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
)
_TIME_PARTS: Final = ("<NUM>", "<TIME>")
_NUMBER: Final = ("<NUM>", VARIABLE)

# Rules within one token. They run as one regex: scanning left to right, at each position the
# first rule (in this order) that matches claims the span. No rule counts digits: a run of digits
# may be of any length, so bodies that differ only in their numbers mask alike (the engine's caches
# rely on it).
_TOKEN_RULES: Final = (
    # a quoted value with no space in it; longer quotes are usually prose or a request line
    ("<QUOTED>", r"(?<![\w\\])'[^'\s]*'(?!\w)|(?<![\w\\])\"[^\"\s]*\"(?![\w:])"),
    ("<URL>", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\[\]()]+"),
    ("<EMAIL>", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ("<UUID>", r"\b(?=[0-9a-fA-F-]*\d)[0-9a-fA-F]+(?:-[0-9a-fA-F]+){4}\b"),
    # a host name: dot-separated labels ending in a lowercase top-level label, with a digit in it
    # ("node-17.rack2.example.net") or three labels or more ("ns.example.com"); "example.com" or
    # "config.yaml" is as likely a word as a value, and a reverse-DNS name ("com.example.app", a
    # Java package) names code, not a host
    (
        "<HOST>",
        r"(?<![\w.-])(?:(?=[\w.-]*\d)[A-Za-z0-9](?:[A-Za-z0-9-]*\.)+"
        r"|(?!(?:com|org|net|io|edu|gov|java|javax|android)\.)[A-Za-z0-9][A-Za-z0-9-]*\.(?:[A-Za-z0-9-]+\.)+)"
        r"[a-z]{2,6}(?![\w.-]|:\d)",
    ),
    ("<TIME>", r"\b\d+-\d+-\d+(?:T\d+:\d+(?::\d+(?:[.,]\d+)?)?(?:Z|[+-]\d+(?::\d+)?)?)?(?!\w)"),
    ("<TIME>", r"(?<![\w:.])\d+:\d+:\d+(?:[.,]\d+)?(?![\w:])"),
    # IPv6: eight groups, or fewer around "::"
    (
        "<IP>",
        r"(?<![\w:.])(?=[0-9a-fA-F:]*\d)(?:[0-9a-fA-F]+(?::[0-9a-fA-F]+){7}"
        r"|(?:[0-9a-fA-F]+:)*[0-9a-fA-F]*::(?:[0-9a-fA-F]+(?::[0-9a-fA-F]+)*)?)(?![\w:.])",
    ),
    ("<MAC>", r"(?<![\w:-])(?=[0-9a-fA-F:-]*\d)[0-9A-Fa-f]+(?:[:-][0-9A-Fa-f]+){5,}(?![\w:-])"),
    ("<IP>", r"(?<![\w.])\d+(?:\.\d+){3}(?::\d+)?(?![\w.])"),
    ("<HOST>", r"(?<![\w.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+:\d+(?![\w.])"),
    (
        "<PATH>",
        r"(?<![\w/.~-])(?:~|\.{1,2})?(?:/[\w.@%+~,-]+){2,}/?|\b[A-Za-z]:\\(?:[^\\\s]+\\)+[^\\\s]*",
    ),
    ("<HEX>", r"\b0[xX][0-9a-fA-F]+\b"),
    ("<DURATION>", r"(?<![\w.])\d+(?:\.\d+)?(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)\b"),
    ("<SIZE>", r"(?<![\w.])\d+(?:\.\d+)?(?:[kKMGTP]i?[Bb]?|B|b|bytes)\b"),
    # a word of hex digits with both a digit and a letter in it ("003a90fc", "8a2a501")
    ("<HEX>", r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]+\b"),
    ("<NUM>", r"(?:(?<![A-Za-z0-9.])[-+])?\d+(?:\.\d+)*"),
)
_TOKEN_RULE = re.compile("|".join(f"({pattern})" for _, pattern in _TOKEN_RULES), re.ASCII)

# A number followed by one of these, as the next token, is a duration or a size.
_DURATION_UNITS: Final = _words(
    "ns us µs ms s sec secs second seconds min mins minute minutes hr hrs hour hours day days "
    "millis milliseconds microseconds nanoseconds"
)
_SIZE_UNITS: Final = _words("B KB MB GB TB PB kB KiB MiB GiB TiB byte bytes kb mb gb KBytes MBytes")
_TRAILING_PUNCTUATION: Final = ",;:.)]}'\""

_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in (*PLACEHOLDERS, WILDCARD)))
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGIT_SHAPE: Final = bytes.maketrans(b"0123456789", b"0000000000")
_ZERO_RUNS: Final = re.compile(b"0+")

# Masked tokens are remembered per token shape; two generations bound the memory.
_TOKEN_CACHE_GENERATION: Final = 8192


# An empty value in brackets or quotes ("()" where a host name would be) is a value, not a word.
_EMPTY_VALUES: Final = frozenset(("()", "[]", "{}", "<>", "''", '""', "(),", "[],", "():", "[]:"))


def token_kind(token: str) -> int:
    if "<" not in token:
        return VARIABLE if token in _EMPTY_VALUES else CONSTANT
    stripped = _PLACEHOLDER_RE.sub("", token)
    if len(stripped) == len(token):
        return CONSTANT
    return MIXED if _LETTER_OR_DIGIT.search(stripped) else VARIABLE


@lru_cache(maxsize=8192)
def literal_ends(token: str) -> tuple[str, str]:
    """The literal text before the first and after the last placeholder of a MIXED token, each kept
    only when it holds a letter or digit ("attempt_<NUM>_m" -> ("attempt_", "_m"))."""
    first = _PLACEHOLDER_RE.search(token)
    if first is None:
        return token, token
    last = first
    for last in _PLACEHOLDER_RE.finditer(token, first.start()):  # noqa: B007 - the last match is wanted
        pass
    head, tail = token[: first.start()], token[last.end() :]
    return (head if _LETTER_OR_DIGIT.search(head) else ""), (tail if _LETTER_OR_DIGIT.search(tail) else "")


def digit_shape(text: str) -> bytes:
    """`text` as UTF-8 with every ASCII digit turned into 0: equal shapes mask to equal tokens."""
    try:
        return text.encode().translate(_DIGIT_SHAPE)
    except UnicodeEncodeError:  # lone surrogates
        return text.encode("utf-8", "surrogatepass").translate(_DIGIT_SHAPE)


def digit_runs(shape: bytes) -> bytes:
    """A digit shape with every run of 0s made one 0: the key of the engine's second cache, equal for
    bodies that differ only in their numbers, whatever their lengths (no masking rule counts digits)."""
    return _ZERO_RUNS.sub(b"0", shape)


def clean_text(text: str) -> str:
    """`text` cut to MAX_BODY_CHARS, with lone surrogates replaced so templates always encode."""
    if len(text) > MAX_BODY_CHARS:
        text = text[:MAX_BODY_CHARS]
    try:
        text.encode()
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _placeholder(match: re.Match[str]) -> str:
    return _TOKEN_RULES[match.lastindex - 1][0]  # type: ignore[operator]  # every rule is a group: lastindex is set


def _mask_token(token: str) -> str:
    return _TOKEN_RULE.sub(_placeholder, token)


def _unit_of(token: str) -> tuple[str, str] | None:
    """The placeholder a unit token turns a preceding number into, and the punctuation after the unit."""
    word = token.rstrip(_TRAILING_PUNCTUATION)
    if word in _DURATION_UNITS:
        return "<DURATION>", token[len(word) :]
    if word in _SIZE_UNITS:
        return "<SIZE>", token[len(word) :]
    return None


class Masker:
    """Turns a body into masked tokens. Holds only bounded memos of masked tokens."""

    __slots__ = ("_shapes", "_words")

    def __init__(self) -> None:
        self._words: Generations[str, tuple[str, int]] = Generations(_TOKEN_CACHE_GENERATION)
        self._shapes: Generations[bytes, tuple[str, int]] = Generations(_TOKEN_CACHE_GENERATION)

    def mask_token(self, word: str) -> tuple[str, int]:
        """The masked token and its kind (CONSTANT, MIXED or VARIABLE)."""
        masked = self._words.get(word)
        if masked is not None:
            return masked
        if word.isdigit() and word.isascii():
            return _NUMBER
        if word.isalpha():
            masked = (word, CONSTANT)
            self._words.put(word, masked)
            return masked
        shape = digit_shape(word)
        masked = self._shapes.get(shape)
        if masked is None:
            text = _mask_token(word)
            masked = (text, token_kind(text))
            self._shapes.put(shape, masked)
        if shape == word.encode("utf-8", "surrogatepass"):
            # no digit in it: the word itself will come back (numbers would only crowd the memo)
            self._words.put(word, masked)
        return masked

    def tokens(self, text: str) -> tuple[list[str], list[int]]:
        """The masked tokens of `text` (already passed through `clean_text`) and their kinds."""
        raw = text.split()
        known = self._words.hot.get
        mask = self.mask_token
        masked = [
            known(word) or (_NUMBER if word.isdigit() and word.isascii() else mask(word)) for word in raw
        ]
        tokens: list[str] = []
        kinds: list[int] = []
        consumed = -1
        for index, (token, kind) in enumerate(masked):
            if kind == CONSTANT:
                if index != consumed:
                    tokens.append(token)
                    kinds.append(kind)
                continue
            if token.endswith("<NUM>") and index + 1 < len(raw):
                unit = _unit_of(raw[index + 1])
                if unit is not None:
                    token = token[:-5] + unit[0] + unit[1]
                    kind = token_kind(token)
                    consumed = index + 1
            if (
                kind == VARIABLE
                and token.startswith(_TIME_PARTS)
                and tokens
                and tokens[-1].rstrip(",") in _MONTHS
            ):
                tokens.pop()
                kinds.pop()
                if tokens and tokens[-1].rstrip(",") in _WEEKDAYS:
                    tokens.pop()
                    kinds.pop()
                token = "<TIME>"
            if kind == VARIABLE and kinds and kinds[-1] == VARIABLE:
                last = tokens[-1]
                if last == "<TIME>" and token.startswith(_TIME_PARTS):
                    continue
                if last != token and not last.endswith(" " + token):
                    tokens[-1] = f"{last} {token}"
            elif not (tokens and token == tokens[-1]):
                tokens.append(token)
                kinds.append(kind)
        if len(tokens) > MAX_TOKENS:
            del tokens[MAX_TOKENS:], kinds[MAX_TOKENS:]
        return tokens, kinds
