"""The values the pattern engine hands out: a pattern (id + template) and the engine's counters."""

from __future__ import annotations

from dataclasses import dataclass

import xxhash


def pattern_id(template: str) -> str:
    """16 lowercase hex digits: xxh3_64 of a template's UTF-8 text. A learned template's id is this
    of its first text with values as <*>, and stays with it when the text generalises (see miner.py)."""
    return xxhash.xxh3_64_hexdigest(template.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Pattern:
    id: str
    template: str

    @classmethod
    def of(cls, template: str) -> Pattern:
        return cls(pattern_id(template), template)


@dataclass(frozen=True, slots=True)
class EngineStats:
    templates: int  # templates held by the miner (at most max_templates)
    cache_entries: int  # entries in the lookup cache (at most cache_size)
    template_evictions: int  # templates forgotten to stay under max_templates, since start
    cache_evictions: int  # cache entries dropped to stay under cache_size, since start
    pattern_merges: int = 0  # templates retired into another (their id now resolves to it), since start
    shed_lines: int = 0  # new-shaped lines not mined during a flood (see engine.py), since start
