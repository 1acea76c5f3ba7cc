"""What of a template may leave the process for an LLM: the one place that decides it. Pure.

The pattern engine masks what it recognises (numbers, ids, addresses, quoted text) and learns the
rest: a word becomes <*> once it varies. Until then a template carries what its first lines carried,
names and secrets included. So the prompt never takes a template as it is; every token passes here:

- a placeholder (<NUM>, <*>, <IP>, ...) and bare punctuation always pass;
- a *confirmed* pattern has been seen in at least CONFIRMED_AFTER lines under its id, and a word still
  literal in its template was the same on every one of those lines (the engine turns a word that
  varies into <*>, in the template and in any template merged into it).
  In a confirmed pattern a plain word passes; in one seen fewer times only the words of SAFE_WORDS
  (everyday log vocabulary) do;
- a plain word is letters in a shape words have: lower case, Capitalised, an acronym, CamelCase whose
  every part has a vowel, optionally joined by `_` or `-` and ending in a placeholder ("blk_<NUM>").
  Anything else is variable-looking and becomes <*> whatever the engine says: digits, a dot or `@`
  inside a token (hosts, dotted names, emails), mixed case around a placeholder, vowelless CamelCase
  parts, non-ASCII letters, tokens too long for a word;
- `key=value` and `key:value` keep the key (judged as a word) and mask the value;
- a second net, the detect-secrets library's detectors (cloud keys, tokens, JWTs, private keys,
  keyword assignments, high-entropy strings at its default limits), runs over each template as the
  engine gave it: every token overlapping what a detector flags becomes <*>.

Service names in the prompt pass the same word test (they are configuration, not log text, so they
count as confirmed). What stays possible: a value that is the same in every line of a busy pattern
and is shaped like a word (one user's lower-case name logged unchanged a thousand times) is
indistinguishable from the message's own words and is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from ..patterns.masking import PLACEHOLDERS, WILDCARD

if TYPE_CHECKING:
    from detect_secrets.plugins.base import BasePlugin

MASK: Final = WILDCARD
CONFIRMED_AFTER: Final = 10  # lines; above the engine's STABLE_AFTER (8), after which a word is kept
MAX_WORD: Final = 32
MAX_ACRONYM: Final = 10

_PLACEHOLDER_NAMES: Final = frozenset((*PLACEHOLDERS, WILDCARD, "<EMPTY>", "<BOOL>", "<ARRAY>"))
_PLACEHOLDER: Final = re.compile(
    "|".join(re.escape(p) for p in sorted(_PLACEHOLDER_NAMES, key=len, reverse=True))
)
_PLACEHOLDER_ENDS: Final = tuple(_PLACEHOLDER_NAMES)
_LETTER_OR_DIGIT: Final = re.compile(r"[^\W_]")  # in any script
# whole templates the engine makes for bodies without words: bytes length classes
_FIXED_TEMPLATE: Final = re.compile(r"<BYTES \d+(?:-\d+)?>")
_OPEN: Final = "([{\"'<"
_CLOSE: Final = ")]}\"',.;:!?>"
_SEGMENT: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_VOWELS: Final = frozenset("aeiouyAEIOUY")
_SINGLE_CASE_WORD: Final = re.compile(r"[a-z]+|[A-Z]+")
_PUNCTUATION_ONLY: Final = re.compile(r"[^\w<>]+")

# Everyday log vocabulary: the words a pattern seen only a few times may still show. Lower case;
# a template word matches when its lower-case form is here.
_VOCABULARY: Final = """
    a an the and or not no of to in on at by for from with without into over under after before
    is are was were be been being has have had will would can could should may must did does do
    it its this that these those there here all any some none each every other than then when
    while until since because if else also only still yet again already just more less most
    least too very up down out off via per as
    error errors failed failure fail fails warning warn warnings info debug trace fatal critical
    notice alert emergency severe exception exceptions caught thrown throw stack traceback cause
    caused panic crash crashed abort aborted aborting retry retrying retries retried attempt
    attempts attempting timeout timed expired expiring expire invalid valid unknown missing
    found not_found denied forbidden unauthorized unauthenticated refused rejected reject
    accepted accept ok success successful successfully succeeded done complete completed
    completing finished finish start started starting stop stopped stopping shutdown shutting
    restart restarted restarting ready running run started initialized initializing init loaded
    loading load unloaded reload reloaded reloading open opened opening close closed closing
    connect connected connecting connection connections disconnect disconnected reconnect
    reconnected reconnecting socket port host address client server service services worker
    workers thread threads process processes pid job jobs task tasks queue queued dequeued
    request requests requested response responses reply sent send sending receive received
    receiving read reading write writing wrote written get put post delete head patch options
    user users account accounts login logout logged signin signout session sessions token
    tokens password passwords key keys secret credentials auth authentication authorization
    authenticated authorized permission permissions role roles access granted revoked reset
    create created creating update updated updating insert inserted remove removed removing
    deleted deleting add added adding save saved saving commit committed rollback transaction
    query queries database db table tables row rows record records cache cached hit miss evict
    evicted file files directory path disk memory cpu usage limit limits exceeded quota size
    bytes count total rate latency duration time seconds ms took elapsed slow fast high low
    new old current previous next first last value values id ids name type status state code
    message messages event events log logs level config configuration setting settings
    enabled disabled enable disable health healthy unhealthy check checks checking heartbeat
    ping pong poll polling sync synced syncing backup restore version upgrade deploy
    deployed deployment node nodes cluster leader follower replica replicas peer peers block
    blocks packet packets network http https tcp udp dns tls ssl certificate cert
    handshake proxy upstream downstream route routing forward forwarded forwarding redirect
    payment payments order orders checkout cart invoice email mail notification notifications
    scheduled schedule scheduler cron batch batches pending waiting wait waited available
    unavailable busy idle alive dead lost skipped skip ignored ignore dropped drop using used
    """
SAFE_WORDS: Final = frozenset(_VOCABULARY.split())


def _is_placeholder_text(text: str) -> bool:
    """True when `text` is nothing but placeholders and punctuation (no letter or digit of any script)."""
    return not _LETTER_OR_DIGIT.search(_PLACEHOLDER.sub("", text))


def _word_shaped(word: str) -> bool:
    """Letters in a shape words have: lower, Capitalised, an acronym, or CamelCase of voweled parts."""
    if not word or len(word) > MAX_WORD or not word.isascii() or not word.isalpha():
        return False
    segments = _SEGMENT.findall(word)
    if "".join(segments) != word:
        return False
    if len(segments) == 1:
        return not word.isupper() or len(word) <= MAX_ACRONYM
    # CamelCase: random letters rarely split into parts that all hold a vowel
    return len(segments) <= 6 and all(
        (segment.isupper() and len(segment) <= MAX_ACRONYM) or (_VOWELS & set(segment) and len(segment) >= 2)
        for segment in segments
    )


def _piece_passes(piece: str, confirmed: bool) -> bool:
    """One `_`/`-` separated part of a token: a placeholder, or a word (with a placeholder suffix)."""
    if not piece or piece in _PLACEHOLDER_NAMES:
        return True
    head = piece
    match = _PLACEHOLDER.search(piece)
    if match is not None:
        if _PLACEHOLDER.sub("", piece[match.start() :]):
            return False  # letters after a placeholder: "zz<NUM>Ffk", "AKIA<NUM>EXAMPLE"
        head = piece[: match.start()]
        if not _SINGLE_CASE_WORD.fullmatch(head):
            return False  # mixed case next to masked digits is an identifier's shape
    if not _word_shaped(head):
        return False
    return confirmed or head.lower() in SAFE_WORDS


def _word_passes(word: str, confirmed: bool) -> bool:
    if _is_placeholder_text(word):
        return True
    return all(_piece_passes(piece, confirmed) for piece in re.split(r"[_-]", word))


def _strip(token: str) -> tuple[str, str, str]:
    """(opening punctuation, the token's core, closing punctuation); placeholders stay in the core."""
    start, end = 0, len(token)
    while start < end and token[start] in _OPEN and not _PLACEHOLDER.match(token, start):
        start += 1
    while end > start and token[end - 1] in _CLOSE and not token[start:end].endswith(_PLACEHOLDER_ENDS):
        end -= 1
    return token[:start], token[start:end], token[end:]


def redact_token(token: str, confirmed: bool) -> str:
    """The token as it may be sent: unchanged, `key=<*>`, or <*>."""
    if _is_placeholder_text(token) or _PUNCTUATION_ONLY.fullmatch(token):
        return token
    opening, core, closing = _strip(token)
    for separator in ("=", ":"):
        key, found, value = core.partition(separator)
        if found and key and value:
            if not _word_passes(key, confirmed):
                return MASK
            return f"{opening}{key}{separator}{value if _is_placeholder_text(value) else MASK}{closing}"
    if _word_passes(core, confirmed):
        return token
    return MASK


@lru_cache(maxsize=1)
def _detectors() -> tuple[BasePlugin, ...]:
    """detect-secrets' plugins at their default settings (imported once, on the first prompt)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    # its signature's type variable is unbound (the classes come out as type[Never]): name their base
    classes: Iterable[type[BasePlugin]] = get_mapping_from_secret_type_to_class().values()
    return tuple(plugin() for plugin in classes)


def flagged_secrets(text: str) -> set[str]:
    """What detect-secrets' detectors flag in `text`: the pattern detectors anywhere in it, the
    entropy detectors on each token (and on the value of a key=value token) at their own limits."""
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

    found: set[str] = set()
    for detector in _detectors():
        if isinstance(detector, HighEntropyStringsPlugin):
            for token in text.split():
                core = _strip(token)[1]
                for part in (core, core.partition("=")[2], core.partition(":")[2]):
                    if len(part) >= 8 and detector.calculate_shannon_entropy(part) > detector.entropy_limit:
                        found.add(part)
        else:
            found.update(detector.analyze_string(text))
    return {value for value in found if len(value) >= 4 and not _is_placeholder_text(value)}


def redact_template(template: str, lines_seen: int) -> str:
    """`template` with every token not known to be constant and word-like replaced by <*>."""
    if _FIXED_TEMPLATE.fullmatch(template):
        return template
    confirmed = lines_seen >= CONFIRMED_AFTER
    secrets = flagged_secrets(template)
    return " ".join(
        MASK if _overlaps(token, secrets) else redact_token(token, confirmed) for token in template.split()
    )


def _overlaps(token: str, secrets: set[str]) -> bool:
    """True when a flagged secret lies in the token, or the token is part of a longer one."""
    core = _strip(token)[1]
    return any(secret in token or (len(core) >= 4 and core in secret) for secret in secrets)


def redact_names(names: Iterable[str]) -> list[str]:
    """Names that are configuration, not log text (services): each passes the word test or is <*>."""
    return [" ".join(redact_token(token, True) for token in name.split()) or MASK for name in names]
