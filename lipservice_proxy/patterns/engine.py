"""PatternEngine: the hot-path front of the miner (lookup cache, structured bodies, stats, save/load)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import xxhash
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValueList

from . import persistence
from .generations import Generations
from .masking import MAX_BODY_CHARS, Masker, clean_text, digit_runs, digit_shape
from .miner import TemplateMiner
from .model import EngineStats, Pattern
from .template import Template

# Keys longer than this are replaced by a 128-bit hash of themselves, so the cache's memory has a
# bound per entry; 128 bits make a collision (two shapes sharing a key) practically impossible.
KEY_CHARS: Final = 256
_DIGIT_SHAPE: Final = bytes.maketrans(b"0123456789", b"0000000000")

MESSAGE_KEYS: Final = ("message", "msg", "event", "log", "body", "text")
_MAX_KEYS_IN_TEMPLATE: Final = 64

EMPTY_TEMPLATE: Final = "<EMPTY>"
UNMINED_TEMPLATE: Final = "<UNMINED>"

# Mining budget (see PatternEngine), in seconds of mining: what may be spent at once, what each line
# added earns, and what each second earns. A flood of new lines spends at most ~1.5 us of mining per
# line on top of shedding the rest (~3 us); ordinary traffic mines a few percent of its lines, often
# in a few microseconds (known words), and never exhausts it.
MINING_BURST_SECONDS: Final = 0.3
MINING_SECONDS_PER_LINE: Final = 1.5e-6
MINING_SECONDS_PER_SECOND: Final = 0.03
_SCALAR_TEMPLATES: Final = {
    "bool_value": "<BOOL>",
    "int_value": "<NUM>",
    "double_value": "<NUM>",
    "array_value": "<ARRAY>",
}


def bytes_template(length: int) -> str:
    """Bytes bodies have no words to mine: one pattern per power-of-two length class."""
    if length == 0:
        return "<BYTES 0>"
    low = 1 << (length.bit_length() - 1)
    return f"<BYTES {low}-{2 * low - 1}>"


def keyset_template(keys: list[str]) -> str:
    names = sorted({" ".join(key.split()) or "''" for key in keys})
    shown = ", ".join(names[:_MAX_KEYS_IN_TEMPLATE])
    more = ", …" if len(names) > _MAX_KEYS_IN_TEMPLATE else ""
    return "{" + clean_text(shown) + more + "}"


class PatternEngine:
    """Learns templates from log bodies and names each body's pattern. Not thread-safe: one event loop.

    `add` is the hot path. Its cache maps the body's digit shape (UTF-8 with every digit turned into
    0) to the template it fell into; masking never depends on the value of a digit, so a hit is a
    body the slow path has seen, up to its digits, at the cost of one translate and one dict lookup.
    Behind it, a second cache is keyed on the shape with every run of digits made one digit: no
    masking rule counts digits, so a known statement whose numbers changed length skips masking and
    mining too (for bodies up to KEY_CHARS long). Both are two-generation memos (generations.py)
    that share `cache_size`: three quarters for shapes, one quarter for the shorter keys.

    A line neither cache knows is masked and mined: ~30 us of CPU for a line of new words, a few us
    for a known statement with a new word, against ~1 us for a hit. A flood of lines that are all new
    (random words, a client logging ids as words) would spend the most on every line, so mining has
    a budget in seconds of mining time, measured around each mining: `mining_burst` at once, refilled
    by `mining_per_line` for every line added and `mining_per_second` of clock time. A new line over
    budget is *shed*: not mined, it gets the fixed pattern <UNMINED> (one pattern for the whole
    flood, which the sampler then samples as one), and `stats().shed_lines` counts it. Lines of known
    shapes are never shed, and ordinary traffic, whose new shapes are a small share of its lines,
    never runs the budget out.
    """

    def __init__(
        self,
        max_templates: int = 10_000,
        cache_size: int = 100_000,
        *,
        mining_burst: float = MINING_BURST_SECONDS,
        mining_per_line: float = MINING_SECONDS_PER_LINE,
        mining_per_second: float = MINING_SECONDS_PER_SECOND,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if cache_size < 2:
            raise ValueError("cache_size must be at least 2")
        if mining_burst <= 0.0 or mining_per_line < 0.0 or mining_per_second < 0.0:
            raise ValueError("mining budget: a positive burst and non-negative refills expected")
        self._miner = TemplateMiner(max_templates)
        self._masker = Masker()
        self._cache_size = cache_size
        self._shapes: Generations[bytes | int, Template] = Generations(max(1, cache_size * 3 // 8))
        self._runs: Generations[bytes, Template] = Generations(max(1, cache_size // 8))
        self._fixed: dict[str, Pattern] = {}
        self._fixed_by_id: dict[str, Pattern] = {}
        self._burst = mining_burst
        self._per_line = mining_per_line
        self._per_second = mining_per_second
        self._clock = clock
        self._credit = mining_burst
        self._lines = 0  # lines added, counted at the end of each batch
        self._refilled_lines = 0
        self._refilled_at = clock()
        self._shed = 0

    @property
    def max_templates(self) -> int:
        return self._miner.max_templates

    @property
    def cache_size(self) -> int:
        return self._cache_size

    # ---- the hot path ----

    def add(self, text: str) -> Pattern:
        """Learn from one body and return its pattern (the same object while the template stands)."""
        return self.add_many((text,))[0]

    def add_many(self, texts: Sequence[str]) -> list[Pattern]:
        """`add` for each text in order: one call per batch keeps the per-body cost to the key, one
        dict lookup and a hit check (a method call per body would cost as much again)."""
        empty: Pattern | None = None
        hot = self._shapes.hot
        patterns: list[Pattern] = []
        append = patterns.append
        for text in texts:
            if len(text) > KEY_CHARS:
                key: bytes | int = _long_key(text)
            elif text:
                try:
                    key = text.encode().translate(_DIGIT_SHAPE)
                except UnicodeEncodeError:
                    key = digit_shape(text)
            else:
                if empty is None:
                    empty = self._fixed_pattern(EMPTY_TEMPLATE)
                append(empty)
                continue
            template = hot.get(key)
            if template is not None and template.alive:
                template.size += 1
                append(template.pattern)
            else:
                append(self._add_slow(text, key))
                hot = self._shapes.hot  # the slow path may have rotated the generations
        self._lines += len(texts)  # the mining credit they earn is for later lines
        return patterns

    def add_runs(self, shapes: Iterable[tuple[bytes, str, int]]) -> list[Pattern]:
        """`add` for bodies grouped by their digit runs key (sampling/scan.py, `digit_runs`): (key,
        one body with that key at most KEY_CHARS long, how many bodies) each. One lookup per key, in
        the second cache: the bodies of a key share one fate, so a shed key sheds all of them."""
        runs = self._runs
        patterns: list[Pattern] = []
        append = patterns.append
        lines = 0
        for key, text, count in shapes:
            lines += count
            template = runs.hot.get(key)
            if template is None or not template.alive:
                template = runs.get(key)
                if template is None or not template.alive:
                    mined = self._mine(text, count)
                    if not isinstance(mined, Template):
                        append(mined)
                        continue
                    runs.put(key, mined)
                    append(mined.pattern)
                    continue
            template.size += count
            append(template.pattern)
        self._lines += lines
        return patterns

    def _add_slow(self, text: str, key: bytes | int) -> Pattern:
        template = self._shapes.cold.get(key)
        if template is None or not template.alive:
            runs = digit_runs(key) if isinstance(key, bytes) else None
            template = self._runs.get(runs) if runs is not None else None
            if template is None or not template.alive:
                mined = self._mine(text, 1)
                if not isinstance(mined, Template):
                    return mined
                if runs is not None:
                    self._runs.put(runs, mined)
                self._shapes.put(key, mined)
                return mined.pattern
        template.size += 1
        self._shapes.put(key, template)
        return template.pattern

    def _mine(self, text: str, count: int) -> Template | Pattern:
        """The template of `count` bodies like `text` that no cache knows, within the mining budget;
        a fixed pattern when shed (over budget) or when the body has no tokens."""
        if self._credit <= 0.0 and not self._refill():
            self._shed += count
            return self._fixed_pattern(UNMINED_TEMPLATE)
        started = self._clock()
        tokens, kinds = self._masker.tokens(clean_text(text))
        if not tokens:
            return self._fixed_pattern(EMPTY_TEMPLATE)
        template = self._miner.learn(tokens, kinds)  # counts one body
        self._credit -= self._clock() - started
        template.size += count - 1
        return template

    def _refill(self) -> bool:
        """Add the credit earned since the last refill (capped at the burst); True when a line may be
        mined now. Runs only when the credit is out."""
        now = self._clock()
        lines, seconds = self._lines - self._refilled_lines, now - self._refilled_at
        earned = lines * self._per_line + seconds * self._per_second
        self._credit = min(self._burst, self._credit + earned)
        self._refilled_lines, self._refilled_at = self._lines, now
        return self._credit > 0.0

    def match(self, text: str) -> Pattern | None:
        """The pattern `add` would give `text` without learning from it; None when no template fits."""
        key = _long_key(text) if len(text) > KEY_CHARS else digit_shape(text)
        template = self._shapes.hot.get(key) or self._shapes.cold.get(key)
        if (template is None or not template.alive) and isinstance(key, bytes):
            runs = digit_runs(key)
            template = self._runs.hot.get(runs) or self._runs.cold.get(runs)
        if template is not None and template.alive:
            return template.pattern
        tokens, kinds = self._masker.tokens(clean_text(text))
        if not tokens:
            return self._fixed_pattern(EMPTY_TEMPLATE)
        found = self._miner.lookup(tokens, kinds)
        return None if found is None else found.pattern

    def add_body(self, body: AnyValue) -> Pattern:
        """The pattern of an OTLP log body: text is mined; a map uses its message-like key when it has
        one, else its key set; bytes fall into length classes; other values get fixed patterns."""
        kind = body.WhichOneof("value")
        if kind == "string_value":
            return self.add(body.string_value)
        if kind == "kvlist_value":
            return self._add_map(body.kvlist_value)
        if kind == "bytes_value":
            return self._fixed_pattern(bytes_template(len(body.bytes_value)))
        if kind is None:
            return self._fixed_pattern(EMPTY_TEMPLATE)
        # a kind newer than this table (AnyValue.string_value_strindex, for profiles) gets one of its own
        return self._fixed_pattern(_SCALAR_TEMPLATES.get(kind) or f"<{kind.upper()}>")

    def _add_map(self, kvlist: KeyValueList) -> Pattern:
        best_rank = len(MESSAGE_KEYS)
        message: str | None = None
        keys: list[str] = []
        for entry in kvlist.values:
            keys.append(entry.key)
            lowered = entry.key.lower()
            if lowered in MESSAGE_KEYS and entry.value.WhichOneof("value") == "string_value":
                rank = MESSAGE_KEYS.index(lowered)
                if rank < best_rank:
                    best_rank, message = rank, entry.value.string_value
        if message is not None:
            return self.add(message)
        return self._fixed_pattern(keyset_template(keys))

    def _fixed_pattern(self, template: str) -> Pattern:
        pattern = self._fixed.get(template)
        if pattern is None:
            if len(self._fixed) >= self._miner.max_templates:
                # key sets can be unbounded; these patterns are pure functions of their text, so
                # forgetting them costs only the object identity, never the id
                self._fixed.clear()
                self._fixed_by_id.clear()
            pattern = Pattern.of(template)
            self._fixed[template] = pattern
            self._fixed_by_id[pattern.id] = pattern
        return pattern

    # ---- ids, counters, state ----

    def resolve(self, pattern_id: str) -> Pattern | None:
        """The current pattern for an id handed out earlier, following generalisations and merges;
        None when the engine no longer remembers it (evicted, or an alias older than the alias map)."""
        template = self._miner.resolve(pattern_id)
        if template is not None:
            return template.pattern
        return self._fixed_by_id.get(pattern_id)

    def patterns(self) -> list[tuple[Pattern, int]]:
        """Every live template's pattern and the number of lines it stood for, most lines first."""
        held = [(t.pattern, t.size) for t in self._miner.templates()]
        held.sort(key=lambda item: (-item[1], item[0].template))
        return held

    def stats(self) -> EngineStats:
        return EngineStats(
            templates=len(self._miner),
            cache_entries=len(self._shapes) + len(self._runs),
            template_evictions=self._miner.evictions,
            cache_evictions=self._shapes.evictions + self._runs.evictions,
            pattern_merges=self._miner.merges,
            shed_lines=self._shed,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write what was learned to `path` as JSON (temp file + rename: never a torn file)."""
        persistence.save(self._miner, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], max_templates: int = 10_000, cache_size: int = 100_000
    ) -> PatternEngine:
        """An engine that knows what a saved one knew. Raises PatternStoreError on a missing or bad file."""
        engine = cls(max_templates=max_templates, cache_size=cache_size)
        persistence.load_into(engine._miner, path)
        return engine


def _long_key(text: str) -> int:
    return xxhash.xxh3_128_intdigest(digit_shape(text[:MAX_BODY_CHARS]))
