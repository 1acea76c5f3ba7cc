"""The pattern engine: a log body in, its pattern (template + stable id) out. Pure and synchronous.

    engine = PatternEngine(max_templates=10_000, cache_size=100_000)
    pattern = engine.add("User alice logged in from 10.0.0.7:51432")   # learn, then name
    pattern.template   # "User alice logged in from <IP>"
    pattern.id         # 16 hex digits, minted from that first text, kept for good
                       # after bob, carol and dave: "User <*> logged in from <IP>", the same id

Template syntax. A template is the body's tokens (split on whitespace, joined by one space) with
the variable parts replaced:

    <NUM> <HEX> <UUID> <IP> (v4 or v6, with or without port) <HOST> (a host name with a digit or
    three labels, or name:port) <MAC> <URL> <EMAIL> <PATH> (two or more segments) <TIME> <DURATION>
    and <SIZE> (a number with its unit, "5 ms", "18.4 KB") <QUOTED> ('...' or "...")
              typed placeholders found by masking;
    <*>       a wildcard the miner learned: the token varies between lines of this template;
    key=<*>   the same, for a key=value token whose key stayed the same.

Every ASCII digit in a body ends up inside a placeholder ("blk_<NUM>", "ssh<NUM>"): digits never
tell two statements apart. A run of adjacent placeholder-only tokens is one parameter
("<SIZE> (<SIZE>)"), as is a token repeated right after itself ("blk_<NUM> blk_<NUM>" -> "blk_<NUM>");
an empty value in brackets or quotes ("()", "[]", '""') counts as placeholder-only.
Bodies are cut at 4096 characters and 256 tokens. Structured bodies (`add_body`): a map with a
message-like key (message, msg, event, log, body, text) is the pattern of that text; another map is
"{key1, key2, ...}" (its sorted key set); bytes are "<BYTES lo-hi>" (power-of-two length classes);
no value or an empty text is "<EMPTY>"; bool, numbers and arrays are "<BOOL>", "<NUM>", "<ARRAY>".
A new line shed under a flood of new lines (see engine.py) is "<UNMINED>".
Severity is never part of a pattern.

Ids. A template's id is minted once, when the template is created: xxh3_64 of its first text with
every value token written as <*> ("lease for <*>" whether the first line had "(<HOST>)" or "()"; a
counter is appended in the rare case that id is taken). It is the id for good: when the template learns
(a token becomes <*>) its text changes and its id does not, so the id stamped on the first record of
a statement is the id of its later records too, and survives a restart with the state file. When two
templates turn out to be one statement (variants that merge once a position shows PARAMETER_VALUES
distinct values, or a template that widened into the text of another), one survives; the other's id
resolves to it (`resolve(old_id)`), and `stats().pattern_merges` counts these. The alias map is
bounded (as many entries as `max_templates`); an evicted template's ids resolve to None. Ids depend
on the order in which an engine saw the lines, never on the process: the same sequence gives the same
ids; replicas whose first line of a statement differed in a word that later became <*> mint two
(bench/README.md measures how often). Policies that must hold across replicas can name a pattern by
template too.

Learning. One configuration for all logs (template.py, miner.py): a line joins the candidate that
agrees with it at MIN_SIMILARITY (0.6) of its positions; where they differ at a literal word the
line becomes a *variant* (its own template and id: "Failed none" is not "Failed password"), where
one of them holds only a value the template widens; PARAMETER_VALUES (4) distinct values at the
same positions make those positions a parameter and the variants merge.

Bounds. At most `max_templates` templates (CLOCK eviction, see miner.py) and `cache_size` cache
entries (two generations, see engine.py); `stats()` reports both and their evictions. `save` and
`load` keep what was learned across restarts as JSON.
"""

from .engine import PatternEngine
from .model import EngineStats, Pattern, pattern_id

__all__ = ["EngineStats", "Pattern", "PatternEngine", "pattern_id"]
