"""The trace's closing clause is the selection, by construction (constrained decoding).

A BitGen trace reads "environment: … → …; needs: … → …; selected: <robots>". The decoder
writes it freely, so its last clause could name robots the selector did not choose (the
shipped model's dev traces agreed with the selection only 55% of the time). Once the decoder
has written the `selected:` marker, the rest is therefore not sampled: the chosen robots'
names are forced token by token, then [EOS]. The trace's reasoning stays the model's own, and
its conclusion is the selection the caller receives.

Torch-free: the runtime (engine.py) and the torch model's generate path (model.py) share
this, so the two produce the same traces.

    clause = SelectionClause(tokenizer, catalog)
    chosen = chosen_robots(keys_best_first, probs_best_first)      # p >= 0.5, 1..3 robots
    forced = clause.forced_ids(chosen)                              # names, then [EOS]
    clause.marker_ends_at(generated_ids)                            # True right after "selected:"
"""
from __future__ import annotations

from typing import Sequence

SELECTED_MARKER = "selected:"
CHOSEN_THRESHOLD = 0.5   # what training/metrics.py and GRPO count as the selector's choice
CHOSEN_MAX = 3


def chosen_robots(robots: Sequence[str], confidences: Sequence[float],
                  threshold: float = CHOSEN_THRESHOLD, max_k: int = CHOSEN_MAX) -> list[str]:
    """The robots the selector commits to, from robots ranked best first with their
    confidences: p >= threshold, at least the top-1, at most max_k, best first."""
    picked = [r for r, p in zip(robots, confidences) if p >= threshold][:max_k]
    return picked or list(robots[:1])


class SelectionClause:
    def __init__(self, tokenizer, catalog):
        self.tokenizer, self.catalog = tokenizer, catalog
        self.marker = tuple(tokenizer.encode(SELECTED_MARKER))
        self.eos = tokenizer.eos_id

    def marker_ends_at(self, ids: Sequence[int]) -> bool:
        """True when `ids` (the trace so far) ends with the `selected:` marker."""
        m = len(self.marker)
        return len(ids) >= m and tuple(ids[-m:]) == self.marker

    def forced_ids(self, chosen_keys: Sequence[str]) -> list[int]:
        """Token ids of the chosen robots' catalog names (", "-separated), then [EOS]."""
        names = ", ".join(self.catalog.get(k).name for k in chosen_keys)
        return list(self.tokenizer.encode(names)) + [self.eos]


# ----------------------------------------------------------------------------------------
# The whole trace, not only its last clause: grammar-constrained greedy decoding.
#
# Every part of a trace but the place is drawn from a closed set: the environment family's
# label, the needs / conditions / "<robot> unavailable" labels, the capable robots' names
# (rules.yaml and the catalog; bitgen_core.data.rules.RuleBook.rationale writes them). So
# once the decoder has written "environment: <place> →", the next tokens can only continue
# one of a handful of token sequences. There the decoder does not need the 30,522-word
# output head: where one token is possible it is forced (no head at all), where a few are
# possible the greedy pick is the exact float32 argmax over just those rows. That is the
# same pick as the full head whenever the model's own argmax is a valid continuation
# (188 of 190 dev traces identical, scripts/trace_grammar_check.py), and otherwise the best valid one -- the
# trace stays well-formed by construction. The place (free text, possibly with a zone
# fact) still gets the full head. A trace that leaves the grammar (a ";" inside the place,
# a pick outside the allowed set) turns it off and decodes freely, as before.

_FREE, _FAMILY, _PARTS, _NAMES, _OFF = range(5)


def _trie(seqs) -> dict:
    """Token-sequence trie; a node maps token -> child, and key None -> the sequence's tag."""
    root: dict = {}
    for seq, tag in seqs:
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
        node[None] = tag
    return root


class TraceGrammar:
    """The step-form trace as token tries (torch-free; the runtime and the torch generate
    path share it).

        g = TraceGrammar(tokenizer, robot_names, family_labels, part_labels)
        cur = g.start()
        cur.allowed()       # None: any token (the head decides); else the valid token ids
        cur.advance(tok)    # after each emitted token
    """

    def __init__(self, tokenizer, robot_names, family_labels, part_labels):
        """robot_names: every way a robot may be named (names, keys, aliases: the shipped
        model writes keys such as "legged" in the capable list, which the catalog accepts)."""
        enc = lambda s: tuple(tokenizer.encode(s))   # noqa: E731
        self.prefix = enc("environment:")
        self.arrow = enc("→")
        self.semicolon = enc(";")
        comma, needs, selected = enc(","), enc("; needs:"), enc("; selected:")
        names = sorted({enc(n) for n in robot_names})
        parts = sorted({enc(p) for p in part_labels} | {n + enc("unavailable") for n in names})
        self.families = _trie([(enc(f) + needs, _PARTS) for f in family_labels])
        self.parts = _trie([(p + comma, _PARTS) for p in parts] + [(p + self.arrow, _NAMES) for p in parts])
        self.names = _trie([(n + comma, _NAMES) for n in names] + [(n + selected, _OFF) for n in names])
        for t in (self.families, self.parts, self.names):
            _check_prefix_free(t)
        self.tokens = sorted({tok for t in (self.families, self.parts, self.names) for tok in _tokens(t)}
                             | set(self.prefix))

    @classmethod
    def for_catalog(cls, tokenizer, catalog) -> "TraceGrammar":
        """The labels of the package's capability rules and the names of `catalog`'s robots."""
        from bitgen_core.data.rules import trace_labels
        families, parts = trace_labels()
        names = [n for r in catalog.robots for n in (r.name, r.key, *r.aliases)]
        return cls(tokenizer, names, families, parts)

    def start(self) -> "GrammarCursor":
        return GrammarCursor(self)


def _tokens(node: dict):
    for tok, child in node.items():
        if tok is not None:
            yield tok
            yield from _tokens(child)


def _check_prefix_free(node: dict) -> None:
    """A complete sequence must not continue into another one (its tag would be ambiguous)."""
    if None in node and len(node) > 1:
        raise ValueError("trace grammar: one label sequence is a prefix of another")
    for tok, child in node.items():
        if tok is not None:
            _check_prefix_free(child)


class GrammarCursor:
    """Where one trace is in the grammar."""

    __slots__ = ("g", "mode", "node", "seen")

    def __init__(self, g: TraceGrammar):
        self.g, self.mode, self.node, self.seen = g, _FREE, None, 0

    def allowed(self) -> tuple[int, ...] | None:
        if self.mode == _FREE:
            return (self.g.prefix[self.seen],) if self.seen < len(self.g.prefix) else None
        if self.mode == _OFF:
            return None
        return tuple(t for t in self.node if t is not None)

    def advance(self, tok: int) -> None:
        g = self.g
        if self.mode == _FREE:
            if self.seen < len(g.prefix):
                self.mode = _FREE if tok == g.prefix[self.seen] else _OFF
            elif tok == g.semicolon[0]:
                self.mode = _OFF                     # a ";" inside the place: not our grammar
            elif tok == g.arrow[0]:
                self.mode = _FAMILY if self.seen > len(g.prefix) else _OFF   # place not empty
                self.node = g.families
            self.seen += 1
            return
        if self.mode == _OFF:
            return
        child = self.node.get(tok)
        if child is None:
            self.mode = _OFF                         # a pick outside the grammar (not greedy)
            return
        if None in child:                            # a label sequence is complete
            self.mode = child[None]
            self.node = {_PARTS: g.parts, _NAMES: g.names}.get(self.mode)
        else:
            self.node = child
