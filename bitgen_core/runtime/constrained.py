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

import re
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

    def drafts(self) -> bool:
        """Inside the grammar past its "environment:" prefix (the place included): where a
        RuleDraft may propose a continuation."""
        return self.mode != _OFF and (self.mode != _FREE or self.seen >= len(self.g.prefix))

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


# ----------------------------------------------------------------------------------------
# Drafting the capable list: a speculative continuation the decoder verifies.
#
# Inside the grammar most decoder passes go to the capable list: after "needs: <labels>" the
# decoder picks "," or "→", then a robot, then "," or ";", one pass per pick ("legged" ->
# "," -> "drone" -> ...). The rules say what that list is for the family and labels the
# decoder has just written (RuleBook.rationale, in the compact key form stage 2 trains on,
# training/stage2.py compact_trace), and the model mostly writes exactly that (147 of 190
# dev traces of the shipped model; 154 of v4c's). So the runtime feeds the draft to the decoder in the same pass as the pending
# tokens, with the state after every draft token (decode_np.step_many all_states), and takes
# draft tokens only while they equal its own greedy picks; at the first difference the rest
# of the draft leaves the cache again (SinkKVCache.rewind). The trace is the one greedy
# decoding writes without a draft -- the draft only saves passes, it never picks a token.
# The same goes for the "→" after a two-word place (compact_trace keeps the place's last two
# words). Measured by scripts/trace_grammar_check.py on the shipped model: decoder passes
# 10.7 -> 5.8 per dev selection, traces identical on all 190.


def _label_runs(text: str, labels: Sequence[str]) -> tuple[list[str], bool] | None:
    """Split `text` ("a, b, c") into known labels (labels may contain ", " themselves).
    Returns (labels, ends_complete) or None if it is not a run of labels (plus, at the end,
    a label's beginning, then ends_complete is False)."""
    out: list[str] = []
    i = 0
    while True:
        best = max((lab for lab in labels if text.startswith(lab, i)
                    and (i + len(lab) == len(text) or text.startswith(", ", i + len(lab)))),
                   key=len, default=None)
        if best is None:
            return (out, False) if any(lab.startswith(text[i:]) for lab in labels) else None
        out.append(best)
        i += len(best)
        if i == len(text):
            return out, True
        i += 2
        if i == len(text):
            return out, False   # "a, " -- the next label not begun (not a grammar position)


class RuleDraft:
    """draft(trace_ids) -> token ids the trace would continue with up to "selected:" if it
    keeps to the rules, or [] where there is nothing useful to draft.

        d = RuleDraft.for_catalog(tokenizer, catalog)   # None if the rules do not fit the catalog
        d.draft(ids)       # at a pick after the needs labels or inside the capable list
    """

    _HEAD = re.compile(r"^environment: .+? → (?P<family>[^;]+); needs: (?P<rest>.*)$", re.S)

    def __init__(self, tokenizer, catalog, rulebook):
        self.tok, self.rules = tokenizer, rulebook
        enc = lambda s: list(tokenizer.encode(s))   # noqa: E731
        self._arrow, self._comma, self._selected = enc("→"), enc(","), enc("; selected:")
        self._family = {spec["label"]: k for k, spec in rulebook.families.items()}
        self._parts: dict[str, tuple[str, str]] = {}
        for k, spec in rulebook.needs.items():
            self._parts[spec["label"]] = ("need", k)
        for k, spec in rulebook.conditions.items():
            self._parts[spec["label"]] = ("condition", k)
        self._robot: dict[str, str] = {}     # every written form (decoded, lower case) -> key
        for r in catalog.robots:
            for form in (r.key, r.name, *r.aliases):
                self._robot[tokenizer.decode(tokenizer.encode(form))] = r.key
        for form, key in list(self._robot.items()):
            self._parts[f"{form} unavailable"] = ("unavailable", key)
        self._part_labels = list(self._parts)
        self._names = sorted(self._robot, key=len, reverse=True)
        self._enc_key = {r.key: enc(r.key) for r in catalog.robots}
        self._enc_name = {r.key: enc(r.name) for r in catalog.robots}

    @classmethod
    def for_catalog(cls, tokenizer, catalog) -> "RuleDraft | None":
        """From the package's rules; None when they name robots the catalog lacks (an edited
        fleet): then there is no draft and decoding is unchanged."""
        from bitgen_core.data.rules import RuleBook
        from bitgen_core.errors import InputError
        try:
            return cls(tokenizer, catalog, RuleBook.load(catalog=catalog))
        except InputError:
            return None

    def capable(self, family: str, parts: Sequence[str]) -> list[str]:
        """Robot keys the rules list after these labels (RuleBook.rationale's capable list)."""
        kinds: dict[str, list[str]] = {"need": [], "condition": [], "unavailable": []}
        for p in parts:
            kind, key = self._parts[p]
            kinds[kind].append(key)
        return self.rules.capable(family, kinds["need"], kinds["condition"], kinds["unavailable"])

    _PLACE = re.compile(r"^environment: \S+ \S+$")

    def draft(self, ids: Sequence[int]) -> list[int]:
        text = self.tok.decode(ids)
        if self._PLACE.match(text):
            # the place is the task's last two words in the traces stage 2 trains on
            # (compact_trace), so after two words comes "→" (the decoder still decides)
            return list(self._arrow)
        m = self._HEAD.match(text)
        if m is None or m["family"] not in self._family:
            return []
        rest = m["rest"]
        labels_text, sep, names_text = rest.partition(" → ")
        if not sep and rest.endswith(" →"):
            labels_text, sep = rest[:-2], " →"
        parsed = _label_runs(labels_text, self._part_labels)
        if parsed is None or not parsed[1] or not any(self._parts[p][0] == "need" for p in parsed[0]):
            return []                                 # inside a label, or no need written
        capable = self.capable(self._family[m["family"]], parsed[0])
        if not sep:                                   # "needs: close inspection" + "→ …"
            return self._arrow + self._tail(capable, self._enc_key, False) if capable else []
        after_comma = names_text.endswith(",")
        body = names_text[:-1] if after_comma else names_text
        names = _label_runs(body, self._names) if body else ([], True)
        if names is None or not names[1]:
            return []                                 # inside a robot's name
        written = names[0]
        # the form the trace already uses: keys (what stage 2 trains) unless it wrote names
        enc = self._enc_name if any(self._robot[n] != n for n in written) else self._enc_key
        left = [r for r in capable if r not in {self._robot[n] for n in written}]
        if body and not after_comma:                  # "→ legged" + ", drone, …; selected:"
            return self._tail(left, enc, True)
        return self._tail(left, enc, False) if left else []

    def _tail(self, keys: list[str], enc: dict, lead_comma: bool) -> list[int]:
        """", "-joined names (led by one if lead_comma), then "; selected:"."""
        out: list[int] = []
        for i, k in enumerate(keys):
            if i or lead_comma:
                out += self._comma
            out += enc[k]
        return out + self._selected
