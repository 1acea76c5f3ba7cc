"""A bounded memo without per-hit bookkeeping: two generations of plain dicts.

New entries go into the young generation; when it holds `capacity` entries the old generation is
dropped and the young one becomes old. A hit in the old generation moves the entry back to the young
one. So at most 2 x capacity entries are held, entries in use survive, and a hit in the young
generation is a single dict lookup (callers on a hot path read `hot` directly).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Generations(Generic[K, V]):
    __slots__ = ("capacity", "cold", "evictions", "hot")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.hot: dict[K, V] = {}
        self.cold: dict[K, V] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.hot) + len(self.cold)

    def put(self, key: K, value: V) -> None:
        if len(self.hot) >= self.capacity:
            self.evictions += len(self.cold)
            self.cold = self.hot
            self.hot = {}
        self.hot[key] = value

    def get(self, key: K) -> V | None:
        value = self.hot.get(key)
        if value is None:
            value = self.cold.get(key)
            if value is not None:
                self.put(key, value)
        return value
