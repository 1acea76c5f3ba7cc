"""Exemptions: records that are never sampled (an attribute equals or matches a value, or a service).

Matching walks a record's attributes, which is costly on the hot path, so `might_match(raw)` first
asks whether any exempted attribute key occurs in the request's raw bytes at all: one substring
search per request, and most requests skip the walk entirely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from .policy import Exemption


def any_value_text(value: AnyValue) -> str:
    """A scalar AnyValue as text ('true', '42', 'abc'); containers and empty values as ''."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    return ""


@dataclass(frozen=True, slots=True)
class _AttributeRule:
    key: str
    equals: str | None
    pattern: re.Pattern[str] | None

    def matches(self, text: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        return text == self.equals


class Exemptions:
    def __init__(self, exemptions: Iterable[Exemption]) -> None:
        rules: dict[str, list[_AttributeRule]] = {}
        services: set[str] = set()
        for exemption in exemptions:
            if exemption.attribute is not None:
                pattern = re.compile(exemption.matches) if exemption.matches is not None else None
                rules.setdefault(exemption.attribute, []).append(
                    _AttributeRule(exemption.attribute, exemption.equals, pattern)
                )
            elif exemption.service is not None:
                services.add(exemption.service)
        self._rules = rules
        self._needles = tuple(key.encode() for key in rules)
        self.services = frozenset(services)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def might_match(self, raw: bytes) -> bool:
        return any(needle in raw for needle in self._needles)

    def match(self, attributes: Iterable[KeyValue]) -> str | None:
        """The exempting attribute key, or None."""
        for attribute in attributes:
            rules = self._rules.get(attribute.key)
            if rules is not None:
                text = any_value_text(attribute.value)
                for rule in rules:
                    if rule.matches(text):
                        return rule.key
        return None
