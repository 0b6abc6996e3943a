"""What changed between the stored events and a fresh read of the provider's lists. Pure.

An event is keyed by (symbol, provider id). A re-read classifies each seen event as new, changed
(same id, different content or validity) or unchanged. A stored event that is absent from a
*complete* re-read of its symbol's list (the whole list, not a date window) is withdrawn: marked,
never deleted. Events of symbols whose list was not read completely are left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    symbol: str
    provider_id: str
    content: tuple
    status: str  # active / duplicate / withdrawn / invalid


@dataclasses.dataclass
class EventChanges:
    new: list = dataclasses.field(default_factory=list)  # parsed events
    changed: list = dataclasses.field(default_factory=list)  # parsed events (content or validity changed)
    reappeared: list = dataclasses.field(default_factory=list)  # withdrawn, now listed again
    unchanged: list = dataclasses.field(default_factory=list)
    withdrawn: list[StoredEvent] = dataclasses.field(default_factory=list)

    @property
    def touched_symbols(self) -> set[str]:
        """Symbols whose factors must be recomputed."""
        events = [*self.new, *self.changed, *self.reappeared, *self.withdrawn]
        return {e.symbol for e in events}

    def summary(self, kind: str) -> dict[str, list[str]]:
        def label(e) -> str:
            return f"{e.symbol} {kind} {e.provider_id}"

        return {
            "new": [label(e) for e in self.new],
            "changed": [label(e) for e in [*self.changed, *self.reappeared]],
            "withdrawn": [label(e) for e in self.withdrawn],
        }


def diff_events(
    stored: Mapping[tuple[str, str], StoredEvent],
    seen: Iterable,
    complete_symbols: Iterable[str] = (),
) -> EventChanges:
    """Classify `seen` (parsed Split/Dividend events) against `stored`, keyed by (symbol, provider_id)."""
    changes = EventChanges()
    seen_keys = set()
    for event in seen:
        key = (event.symbol, event.provider_id)
        if key in seen_keys:
            continue  # the same row twice in one read (overlapping pages)
        seen_keys.add(key)
        old = stored.get(key)
        if old is None:
            changes.new.append(event)
        elif old.status == "withdrawn":
            changes.reappeared.append(event)
        elif old.content != event.content() or (old.status == "invalid") != (event.status == "invalid"):
            changes.changed.append(event)
        else:
            changes.unchanged.append(event)
    complete = set(complete_symbols)
    for key, old in stored.items():
        if old.symbol in complete and key not in seen_keys and old.status != "withdrawn":
            changes.withdrawn.append(old)
    return changes
