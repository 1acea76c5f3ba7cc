"""The online template miner: masked tokens in, a learned template out, one line at a time.

Candidates are the templates with the same number of tokens and the same first literal word at
the same position (tokens holding placeholders before it do not count), as in Drain's fixed-depth
tree. The best candidate is the one that agrees with the line at the most positions (equal tokens,
or two tokens that are one parameter, see template.py); when it agrees at fewer than
MIN_SIMILARITY of them the line starts a template of its own.

What Drain lacks, and why it matters for sampling:

* Words are the message. A line that differs from its template at a literal word ("Failed none
  for ..." against "Failed password for ...", "VM Paused" against "VM Started") becomes a *variant*
  of that template instead of wildcarding the word: a rare statement is not swallowed by a frequent
  one, and the ids stamped on either stay theirs. Where the template or the line holds a value
  instead (placeholders: "(<HOST>)" against "()"), the template widens at once.
* Parameters found late. When the variants of one template that differ at the same positions reach
  PARAMETER_VALUES distinct values, those positions were a parameter after all: the variants merge
  back into their template, which now has a wildcard there. Enumerations with fewer values (on/off,
  HTTP/SOCKS) stay apart; so do combinations at several positions that enumerations of that size
  could make ("from NEW to RUNNING").
* First words that vary. Drain keys on the first word, so "com.apple.A: job ..." and
  "com.apple.B: job ..." never meet. Here a line that finds no candidate looks for a template that
  is the same but for its first word; it becomes that template's variant, and the same
  PARAMETER_VALUES rule turns the first word into a parameter ("<*>: job ..."). "Accepted password"
  and "Failed password" stay two templates.

Templates are bounded by `max_templates`. Eviction is CLOCK (second chance), an approximation of
least-recently-used whose cost on a hit is one counter increment: a template whose line count moved
since the hand last passed survives one more sweep; one that did not is forgotten.

Ids are minted once, when a template is created: the hash of its first text, values as <*> (see
`minted_id` and `_mint`). A template that generalises keeps its id; only its text changes. When two
templates turn out to be one statement (variants merging back, or a template that generalised into
the text of another), one survives and the other is retired into it: a bounded alias map sends the
retired id to the survivor (`resolve`), and `merges` counts these.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Final

from .masking import token_kind
from .model import Pattern, pattern_id
from .template import (
    MIN_SIMILARITY,
    BucketKey,
    RestSignature,
    Template,
    anchor_of,
    bucket_key,
    generalise,
    rest_signature,
)

PARAMETER_VALUES: Final = 4


class TemplateMiner:
    def __init__(self, max_templates: int) -> None:
        if max_templates < 1:
            raise ValueError("max_templates must be at least 1")
        self.max_templates = max_templates
        self.evictions = 0
        self.merges = 0
        self._serial = 0
        self._buckets: dict[BucketKey, list[Template]] = {}
        self._rests: dict[RestSignature, list[Template]] = {}
        self._by_id: dict[str, Template] = {}
        self._by_text: dict[str, Template] = {}
        self._clock: OrderedDict[int, Template] = OrderedDict()
        self._aliases: OrderedDict[str, Template] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clock)

    def templates(self) -> Iterator[Template]:
        """Live templates, least recently inserted into the clock first."""
        return iter(self._clock.values())

    def aliases(self) -> Iterator[tuple[str, Template]]:
        return iter(self._aliases.items())

    # ---- looking up ----

    def _best(self, tokens: list[str], kinds: list[int]) -> Template | None:
        bucket = self._buckets.get(bucket_key(tokens, kinds))
        if not bucket:
            return None
        best: Template | None = None
        best_agree = -1
        for candidate in bucket:
            agree = candidate.agreement(tokens, kinds)
            if agree > best_agree or (
                agree == best_agree and best is not None and candidate.size > best.size
            ):
                best, best_agree = candidate, agree
        if best_agree < MIN_SIMILARITY * len(tokens):
            return None
        return best

    def _same_but_first_word(self, tokens: list[str], kinds: list[int]) -> Template | None:
        signature = rest_signature(tokens, kinds, anchor_of(kinds))
        group = self._rests.get(signature) if signature is not None else None
        return group[0] if group else None

    def lookup(self, tokens: list[str], kinds: list[int]) -> Template | None:
        """The template that would take this line as it is, without learning anything."""
        best = self._best(tokens, kinds) or self._same_but_first_word(tokens, kinds)
        if best is None or best.mismatches(tokens, kinds):
            return None
        return best

    def resolve(self, pattern_id: str) -> Template | None:
        """The live template that an id (current or retired) stands for now, if still remembered."""
        template = self._by_id.get(pattern_id) or self._aliases.get(pattern_id)
        while template is not None and not template.alive:
            template = template.successor
        return template

    # ---- learning ----

    def learn(self, tokens: list[str], kinds: list[int]) -> Template:
        """Take one masked line into account and return the template it belongs to now."""
        best = self._best(tokens, kinds)
        if best is None:
            relative = self._same_but_first_word(tokens, kinds)
            if relative is not None:
                return self._learn_variant(relative, tokens, kinds)
            return self._insert(Template(tokens, kinds, self._next_serial()))
        mismatched = best.mismatches(tokens, kinds)
        if mismatched and not best.values_only(tokens, kinds, mismatched):
            return self._learn_variant(best, tokens, kinds)
        return self._absorb(best, tokens, kinds)

    def _learn_variant(self, best: Template, tokens: list[str], kinds: list[int]) -> Template:
        root = best.parent if best.parent is not None else best
        positions = root.mismatches(tokens, kinds)
        if not positions:
            return self._absorb(root, tokens, kinds)
        siblings = [v for v in root.variants if root.mismatches(v.tokens, v.kinds) == positions]
        for sibling in siblings:
            if not sibling.mismatches(tokens, kinds):
                return self._absorb(sibling, tokens, kinds)
        # enumerations of up to PARAMETER_VALUES - 1 values per position stay apart, also jointly
        if len(siblings) + 2 > (PARAMETER_VALUES - 1) ** len(positions):
            return self._merge_parameter(root, siblings, positions, tokens, kinds)
        variant_tokens = list(root.tokens)
        variant_kinds = list(root.kinds)
        for index in positions:
            variant_tokens[index] = tokens[index]
            variant_kinds[index] = kinds[index]
        variant = Template(
            variant_tokens, variant_kinds, self._next_serial(), parent=root, anchor=root.anchor
        )
        inserted = self._insert(variant)
        if inserted is variant:
            root.variants.append(variant)
        return inserted

    def _merge_parameter(
        self,
        root: Template,
        siblings: list[Template],
        positions: list[int],
        tokens: list[str],
        kinds: list[int],
    ) -> Template:
        for index in positions:
            merged = generalise([root.tokens[index], tokens[index], *(s.tokens[index] for s in siblings)])
            root.tokens[index] = merged
            root.kinds[index] = token_kind(merged)
        for sibling in siblings:
            root.size += sibling.size
            self._retire(sibling, successor=root)
        return self._absorb(self._retemplate(root), tokens, kinds)

    def _absorb(self, template: Template, tokens: list[str], kinds: list[int]) -> Template:
        changed = template.absorb(tokens, kinds)
        return self._retemplate(template) if changed else template

    def _retemplate(self, template: Template) -> Template:
        """Give a changed template its new text (its id stays) and place; fold it into a live twin
        that already has that text."""
        text = " ".join(template.tokens)
        if text == template.pattern.template:
            return template
        self._unindex(template)
        template.pattern = Pattern(template.pattern.id, text)
        template.key = bucket_key(template.tokens, template.kinds)
        twin = self._by_text.get(text)
        if twin is not None and twin is not template:
            twin.size += template.size
            self._retire(template, successor=twin)
            return twin
        self._index(template)
        for variant in list(template.variants):
            # a variant that differed only where the template now has a parameter is the template
            if not template.mismatches(variant.tokens, variant.kinds):
                template.size += variant.size
                self._retire(variant, successor=template)
        return template

    # ---- bookkeeping ----

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _insert(self, template: Template) -> Template:
        twin = self._by_text.get(template.pattern.template)
        if twin is not None:
            # a line can rebuild the exact text of a template that lives in another bucket
            twin.size += template.size
            return twin
        while len(self._clock) >= self.max_templates:
            self._evict_one(spare=template.parent)
        template.pattern = self._mint(template.pattern)
        self._clock[template.serial] = template
        self._index(template)
        return template

    def _mint(self, pattern: Pattern) -> Pattern:
        """The id a new template keeps for good: the one it was born with, unless a live template,
        or an alias that still leads to one, holds that id (a template that widened away from this
        very text); then the hash of the text with a counter. The same lines in the same order mint
        the same ids; a statement that returns after its template was evicted gets its old id."""
        minted = pattern.id
        for salt in range(1, len(self._by_id) + len(self._aliases) + 2):  # bounded by the ids held
            if minted not in self._by_id:
                if minted not in self._aliases:
                    break
                if self.resolve(minted) is None:
                    del self._aliases[minted]  # an alias that leads nowhere frees its id
                    break
            minted = pattern_id(f"{pattern.template}\x00{salt}")
        return pattern if minted == pattern.id else Pattern(minted, pattern.template)

    def _index(self, template: Template) -> None:
        """Make a live template findable: by bucket, by id, by text, and (roots) by everything but the
        first word."""
        self._buckets.setdefault(template.key, []).append(template)
        self._by_id[template.pattern.id] = template
        self._by_text[template.pattern.template] = template
        if template.parent is None:
            template.rest = template.rest_signature()
            if template.rest is not None:
                self._rests.setdefault(template.rest, []).append(template)

    def _unindex(self, template: Template) -> None:
        bucket = self._buckets.get(template.key)
        if bucket is not None and template in bucket:
            bucket.remove(template)
            if not bucket:
                del self._buckets[template.key]
        if self._by_id.get(template.pattern.id) is template:
            del self._by_id[template.pattern.id]
        if self._by_text.get(template.pattern.template) is template:
            del self._by_text[template.pattern.template]
        self._unindex_rest(template)

    def _unindex_rest(self, template: Template) -> None:
        rest = template.rest
        group = self._rests.get(rest) if rest is not None else None
        if rest is not None and group is not None and template in group:
            group.remove(template)
            if not group:
                del self._rests[rest]
        template.rest = None

    def _evict_one(self, spare: Template | None) -> None:
        # bounded: after one full sweep every survivor has had its second chance cleared
        for _ in range(2 * len(self._clock) + 2):
            _, victim = self._clock.popitem(last=False)
            if victim.size != victim.swept_size or victim is spare:
                victim.swept_size = victim.size
                self._clock[victim.serial] = victim
                continue
            self._retire(victim, successor=None)
            self.evictions += 1
            return

    def _retire(self, template: Template, successor: Template | None) -> None:
        template.alive = False
        template.successor = successor
        self._unindex(template)
        self._clock.pop(template.serial, None)
        if successor is not None:
            self.merges += 1
            self._alias(template.pattern.id, successor)
        parent = template.parent
        if parent is not None and template in parent.variants:
            parent.variants.remove(template)
        for child in template.variants:
            if successor is None or child is successor or successor.parent is not None:
                self._make_root(child)
            else:
                child.parent = successor
                successor.variants.append(child)
        template.release()

    def _make_root(self, template: Template) -> None:
        template.parent = None
        if template.alive and template.rest is None:
            template.rest = template.rest_signature()
            if template.rest is not None:
                self._rests.setdefault(template.rest, []).append(template)

    def _alias(self, old_id: str, template: Template) -> None:
        self._aliases[old_id] = template
        self._aliases.move_to_end(old_id)
        while len(self._aliases) > self.max_templates:
            self._aliases.popitem(last=False)

    # ---- persistence support ----

    def restore(self, tokens: list[str], size: int, anchor: int | None, saved_id: str | None) -> Template:
        """Re-create a saved template with its saved id (None: the hash of its text, as in files of
        version 1). Returns the live template that has this text, which holds another id when
        the file listed the text twice."""
        kinds = [token_kind(token) for token in tokens]
        if anchor is not None and not -1 <= anchor < len(tokens):
            anchor = None
        template = Template(tokens, kinds, self._next_serial(), size=size, anchor=anchor)
        text = template.pattern.template
        template.pattern = Pattern.of(text) if saved_id is None else Pattern(saved_id, text)
        return self._insert(template)

    def holds_id(self, pattern_id: str) -> bool:
        return pattern_id in self._by_id or pattern_id in self._aliases

    def link_variant(self, child: Template, parent: Template) -> None:
        if (
            child is not parent
            and child.alive
            and parent.alive
            and child.parent is None
            and parent.parent is None
        ):
            self._unindex_rest(child)
            child.parent = parent
            parent.variants.append(child)

    def restore_alias(self, old_id: str, template: Template) -> None:
        if old_id != template.pattern.id:
            self._alias(old_id, template)
