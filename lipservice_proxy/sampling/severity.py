"""Severity of a record as one of six levels, from severity_number, else severity_text, else the body.

Levels are small ints (TRACE=0 .. FATAL=5) so the hot path indexes lists instead of hashing names.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

SeverityName = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
SEVERITY_NAMES: tuple[SeverityName, ...] = get_args(SeverityName)
"""The six levels by name, indexed by level. Defined here, the lowest module that needs them (config
and the domain code import them from here)."""

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = range(6)
LEVEL_OF_NAME: dict[str, int] = {name: level for level, name in enumerate(SEVERITY_NAMES)}

# OTLP SeverityNumber 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL; index 0 unused.
LEVEL_OF_NUMBER: tuple[int, ...] = (INFO, *(min((n - 1) // 4, FATAL) for n in range(1, 25)))

_TEXT_LEVELS = {
    TRACE: ("trace", "trc", "finest", "finer", "verbose"),
    DEBUG: ("debug", "dbg", "fine", "config"),
    INFO: ("info", "inf", "information", "informational", "notice", "ok"),
    WARN: ("warn", "warning", "wrn"),
    ERROR: ("err", "error", "eror", "severe", "failure"),
    FATAL: ("fatal", "critical", "crit", "panic", "emerg", "emergency", "alert", "ftl"),
}
LEVEL_OF_TEXT: dict[str, int] = {text: level for level, texts in _TEXT_LEVELS.items() for text in texts}

_BODY_ERROR = re.compile(r"\b(?:error|errors|exception|traceback|fatal|panic|panicked)\b", re.IGNORECASE)


def level_of_number(number: int) -> int | None:
    """The level of an OTLP severity_number, or None when it is 0 (unspecified) or out of range."""
    return LEVEL_OF_NUMBER[number] if 0 < number < len(LEVEL_OF_NUMBER) else None


def level_of_text(text: str) -> int | None:
    """The level named by a severity_text such as 'warning' or 'ERR', case-insensitively."""
    if not text:
        return None
    level = LEVEL_OF_TEXT.get(text)
    if level is None:
        level = LEVEL_OF_TEXT.get(text.strip().lower())
    return level


def level_of_body(text: str) -> int:
    """ERROR when the text mentions an error, exception, traceback, fatal or panic; else INFO."""
    return ERROR if _BODY_ERROR.search(text) else INFO
