"""What the analysis loop knew, kept across restarts: its known patterns and their baselines.

Written beside the generated policy (`<policy stem>.state.json`) after every pass and at shutdown,
atomically (files.write_atomically), bounded like the stats it comes from (`max_patterns`
entries). A restarted loop reads it before its first pass, so a pattern it knew is not news
(no new-pattern boost) and a spike is judged against the baseline it had. A missing file is a
first start; an unreadable one is logged and ignored (the loop starts without history), never a
crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from ..files import write_atomically
from .stats import Ema, PatternEntry, PatternStats, state_document

log = logging.getLogger(__name__)

FORMAT = "lipservice-analysis-state"
VERSION = 1


def state_path(policy_path: Path) -> Path:
    return policy_path.with_name(f"{policy_path.stem}.state.json")


def save_state(path: Path, taken: tuple[list[PatternEntry], dict[str, Ema], int]) -> None:
    """Write `PatternStats.state()` to `path`; raises OSError when the directory is not writable."""
    data = orjson.dumps({"format": FORMAT, "version": VERSION, **state_document(*taken)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def load_state(path: Path, stats: PatternStats) -> int:
    """Restore `stats` from `path`; the number of patterns restored (0 when there is nothing usable)."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, orjson.JSONDecodeError) as exc:
        log.error("analysis state %s is unreadable (%s); starting without it", path, exc)
        return 0
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("version") != VERSION
    ):
        log.error("%s is not analysis state of version %d; starting without it", path, VERSION)
        return 0
    try:
        restored = stats.restore(document)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("analysis state %s is malformed (%s); starting without it", path, exc)
        return 0
    log.info("analysis: %d known patterns and their baselines restored from %s", restored, path)
    return restored
