"""Save and restore a miner's templates as JSON, so a restart keeps its ids.

The document lists the templates in eviction order (oldest first) with their ids, tokens, line
counts and variant links, plus the alias map. Version 2 keeps each template's id as minted (a
template keeps its id when its text generalises, see miner.py). Version 1 files, written when an id
was the hash of the template text, still load: their ids are recomputed from the text and must match
what the file says, which catches a corrupt or hand-edited file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final

import orjson

from ..errors import PatternStoreError
from ..files import write_atomically
from .miner import TemplateMiner
from .template import Template

FORMAT: Final = "lipservice-patterns"
VERSION: Final = 2
_TEXT_HASH_IDS: Final = 1  # the version whose ids are the hash of the template text
_ID = re.compile(r"^[0-9a-f]{16}$")


def save(miner: TemplateMiner, path: str | os.PathLike[str]) -> None:
    templates = list(miner.templates())
    index = {id(template): position for position, template in enumerate(templates)}
    aliases: dict[str, int] = {}
    for old_id, _ in miner.aliases():
        live = miner.resolve(old_id)
        if live is not None and id(live) in index and old_id != live.pattern.id:
            aliases[old_id] = index[id(live)]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "templates": [
            {
                "id": t.pattern.id,
                "template": t.pattern.template,
                "tokens": t.tokens,
                "size": t.size,
                "anchor": t.anchor,
                "parent": index.get(id(t.parent)) if t.parent is not None else None,
            }
            for t in templates
        ],
        "aliases": aliases,
    }
    _write_atomically(Path(path), orjson.dumps(document))


def _write_atomically(target: Path, data: bytes) -> None:
    try:
        write_atomically(target, data)
    except OSError as exc:
        raise PatternStoreError(f"cannot write {target}: {exc.strerror or exc}") from exc


def load_into(miner: TemplateMiner, path: str | os.PathLike[str]) -> None:
    source = Path(path)
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise PatternStoreError(f"{source}: no such pattern state file") from None
    except OSError as exc:
        raise PatternStoreError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PatternStoreError(f"{source}: not valid JSON: {exc}") from None
    try:
        _restore(miner, document)
    except _Invalid as exc:
        raise PatternStoreError(f"{source}: {exc}") from None


class _Invalid(Exception):
    pass


def _field(entry: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = entry.get(name)
    # bool is an int in Python; a count of True is not a count
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Invalid(
            f"{where}.{name}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value


def _restore(miner: TemplateMiner, document: Any) -> None:
    version, entries, aliases = _checked_document(document)
    # the newest templates are the ones worth keeping when the file holds more than fit
    first_kept = max(0, len(entries) - miner.max_templates)
    restored: dict[int, Template] = {}
    parents: dict[int, int] = {}
    for position in range(first_kept, len(entries)):
        where = f"templates[{position}]"
        entry = entries[position]
        if not isinstance(entry, dict):
            raise _Invalid(f"{where}: expected an object")
        tokens, size, anchor, parent = _checked_entry(entry, version, len(entries), where)
        if parent is not None:
            parents[position] = parent
        restored[position] = _restored_template(miner, entry, version, (tokens, size, anchor), where)
    for child, parent in parents.items():
        if parent in restored:
            miner.link_variant(restored[child], restored[parent])
    _restore_aliases(miner, aliases, restored)


def _checked_document(document: Any) -> tuple[int, list[Any], dict[Any, Any]]:
    """The document's version, template entries and aliases, once its outline is what save writes."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _Invalid(f'not a pattern state file (expected "format": "{FORMAT}")')
    version = document.get("version")
    if version not in (_TEXT_HASH_IDS, VERSION) or isinstance(version, bool):
        raise _Invalid(f"unsupported version {version!r} (this build reads {_TEXT_HASH_IDS} and {VERSION})")
    entries = document.get("templates")
    if not isinstance(entries, list):
        raise _Invalid("templates: expected a list")
    aliases = document.get("aliases", {})
    if not isinstance(aliases, dict):
        raise _Invalid("aliases: expected an object")
    return version, entries, aliases


def _checked_entry(
    entry: dict[str, Any], version: int, count: int, where: str
) -> tuple[list[str], int, int | None, int | None]:
    """A template entry's tokens, size, anchor and parent index, each checked."""
    tokens = _field(entry, "tokens", list, where)
    if not tokens or not all(isinstance(token, str) and token.strip() for token in tokens):
        raise _Invalid(f"{where}.tokens: expected a non-empty list of non-blank strings")
    size = _field(entry, "size", int, where)
    if size < 1:
        raise _Invalid(f"{where}.size: must be at least 1")
    if version == _TEXT_HASH_IDS:
        _field(entry, "pinned", bool, where)  # version 1's young/stable flag, no longer used
    parent = entry.get("parent")
    if parent is not None and (
        isinstance(parent, bool) or not isinstance(parent, int) or not 0 <= parent < count
    ):
        raise _Invalid(f"{where}.parent: expected null or the index of another template")
    anchor = entry.get("anchor")
    if anchor is not None and (isinstance(anchor, bool) or not isinstance(anchor, int)):
        raise _Invalid(f"{where}.anchor: expected null or a token position")
    return tokens, size, anchor, parent


def _restored_template(
    miner: TemplateMiner,
    entry: dict[str, Any],
    version: int,
    shape: tuple[list[str], int, int | None],
    where: str,
) -> Template:
    """The entry's template, restored into `miner` under its id (version 1: recomputed and compared)."""
    tokens, size, anchor = shape
    if version == _TEXT_HASH_IDS:
        template = miner.restore(list(tokens), size, anchor, saved_id=None)
        if entry.get("id") is not None and entry["id"] != template.pattern.id:
            raise _Invalid(f"{where}.id: {entry['id']!r} is not the id of its template")
        return template
    saved_id = _field(entry, "id", str, where)
    if not _ID.match(saved_id):
        raise _Invalid(f"{where}.id: {saved_id!r} is not a pattern id")
    if miner.holds_id(saved_id):
        raise _Invalid(f"{where}.id: {saved_id!r} is listed twice")
    template = miner.restore(list(tokens), size, anchor, saved_id=saved_id)
    if template.pattern.id != saved_id:
        raise _Invalid(f"{where}.tokens: the same template as another entry")
    return template


def _restore_aliases(miner: TemplateMiner, aliases: dict[Any, Any], restored: dict[int, Template]) -> None:
    for old_id, position in aliases.items():
        if not isinstance(old_id, str) or not _ID.match(old_id):
            raise _Invalid(f"aliases: {old_id!r} is not a pattern id")
        if isinstance(position, bool) or not isinstance(position, int):
            raise _Invalid(f"aliases.{old_id}: expected a template index")
        if position in restored:
            miner.restore_alias(old_id, restored[position])
