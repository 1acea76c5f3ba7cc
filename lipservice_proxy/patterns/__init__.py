"""The pattern engine: a log body in, its pattern (template + stable id) out. Pure and synchronous.

    engine = PatternEngine(max_templates=10_000, cache_size=100_000)
    pattern = engine.add("User alice logged in from 10.0.0.7:51432")   # learn, then name
    pattern.template   # "User alice logged in from <IP>"
                       # after "User bob ...": "User <*> logged in from <IP>"
    pattern.id         # 16 hex digits: xxh3_64 of the template text

Template syntax. A template is the body's tokens (split on whitespace, joined by one space) with
the variable parts replaced:

    <NUM> <HEX> <UUID> <IP> (v4 or v6, with or without port) <HOST> (name:port) <MAC> <URL> <EMAIL>
    <PATH> (two or more segments) <TIME> <DURATION> and <SIZE> (a number with its unit, "5 ms",
    "18.4 KB") <QUOTED> ('...' or "...")       typed placeholders found by masking;
    <*>       a wildcard the miner learned: the token varies between lines of this template;
    key=<*>   the same, for a key=value token whose key stayed the same.

Every ASCII digit in a body ends up inside a placeholder ("blk_<NUM>", "ssh<NUM>"): digits never
tell two statements apart. A run of adjacent placeholder-only tokens is one parameter
("<SIZE> (<SIZE>)"), as is a token repeated right after itself ("blk_<NUM> blk_<NUM>" -> "blk_<NUM>").
Bodies are cut at 4096 characters and 256 tokens. Structured bodies (`add_body`): a map with a
message-like key (message, msg, event, log, body, text) is the pattern of that text; another map is
"{key1, key2, ...}" (its sorted key set); bytes are "<BYTES lo-hi>" (power-of-two length classes);
no value or an empty text is "<EMPTY>"; bool, numbers and arrays are "<BOOL>", "<NUM>", "<ARRAY>".
Severity is never part of a pattern.

Ids. The id is a hash of the template text and nothing else: the same template has the same id in
every process, replica and restart. (Which template a line ends in depends on the lines the engine
saw before it, never on the process: the same sequence gives the same ids.) When a template learns
(a constant becomes <*>, or variants merge into one template), its text and so its id change: the
old id becomes an alias of the template that replaced it, and `resolve(old_id)` returns the
current pattern. The alias map is bounded (as many entries as `max_templates`); an evicted
template's ids resolve to None. Policies that must survive learning can name a pattern by
template as well as by id.

Learning. One configuration for all logs (template.py, miner.py): a line joins the candidate that
agrees with it at MIN_SIMILARITY (0.6) of its positions; a word constant over STABLE_AFTER (8)
lines is kept, and a line that differs there becomes a variant; PARAMETER_VALUES (4) distinct
values make a position a parameter; PHRASE_CHANGE (2) adjacent different words make another message.

Bounds. At most `max_templates` templates (CLOCK eviction, see miner.py) and `cache_size` cache
entries (two generations, see engine.py); `stats()` reports both and their evictions. `save` and
`load` keep what was learned across restarts as JSON.
"""

from .engine import PatternEngine
from .model import EngineStats, Pattern, pattern_id

__all__ = ["EngineStats", "Pattern", "PatternEngine", "pattern_id"]
