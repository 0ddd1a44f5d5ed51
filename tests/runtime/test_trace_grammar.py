"""The trace grammar (runtime/constrained.py TraceGrammar): every rationale the rules can
write is inside it, a trace that leaves it is decoded freely, and inside it the runtime picks
without the output head -- the same picks as the torch model's generate path."""
from __future__ import annotations

import itertools

import pytest
import torch

from bitgen_core.catalog import RobotCatalog
from bitgen_core.data.rules import RuleBook, parse_rationale
from bitgen_core.model import BitGenModel
from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.constrained import SELECTED_MARKER, TraceGrammar, chosen_robots

PLACES = ["the north yard", "zone b of the depot (zone b is flooded)", "pier 4"]


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return TraceGrammar.for_catalog(tokenizer, RobotCatalog.load())


def _rationales():
    book = RuleBook.load()
    conds = [()] + [(c,) for c in book.conditions]
    unavail = [()] + [(r,) for r in book.catalog.keys]
    needs = [(n,) for n in book.needs] + list(itertools.combinations(["inspection", "light_load",
                                                                      "manipulation"], 2))
    for i, (env, need, cond, gone) in enumerate(itertools.product(book.families, needs, conds, unavail)):
        d = book.decide(env, need, cond, gone)
        if d.feasible:
            yield book.rationale(d, PLACES[i % len(PLACES)])


def test_every_rationale_of_the_rules_is_in_the_grammar(tokenizer, grammar):
    marker = tokenizer.encode(SELECTED_MARKER)
    n = 0
    for text in _rationales():
        ids = tokenizer.encode(text)
        head, tail = text.split(" → ", 1)
        free = len(tokenizer.encode(head)) - 2 + 1      # the place after "environment:", and "→"
        cut = next(i for i in range(len(ids)) if ids[i - len(marker) + 1:i + 1] == marker) + 1
        cur, constrained = grammar.start(), 0
        for tok in ids[:cut]:
            allowed = cur.allowed()
            if allowed is not None:
                assert tok in allowed, (text, tokenizer.decode([tok]))
                constrained += 1
            cur.advance(tok)
        # only the place (and the arrow closing it) was free: the prefix, family, needs and robots were all constrained
        assert constrained == cut - free, text
        assert cur.allowed() is None               # the "selected:" clause is the selector's
        n += 1
    assert n > 500


def test_robot_keys_and_aliases_are_names_too(tokenizer, grammar):
    """The shipped model writes keys ("legged") in the capable list; the catalog accepts them."""
    ids = tokenizer.encode("environment: pier → underwater; needs: mapping → legged, rov, drone; selected:")
    cur = grammar.start()
    for tok in ids:
        allowed = cur.allowed()
        assert allowed is None or tok in allowed
        cur.advance(tok)


@pytest.mark.parametrize("trace", ["environment: pier; underwater → drone",          # ";" in the place
                                   "environment: pier → moon base; needs: search",     # no such family
                                   "habitat: pier → underwater"])                      # not the prefix
def test_a_trace_that_leaves_the_grammar_is_decoded_freely(tokenizer, grammar, trace):
    cur = grammar.start()
    for tok in tokenizer.encode(trace):
        cur.advance(tok)
    assert cur.allowed() is None
    for tok in tokenizer.encode("; needs: search → drone"):
        cur.advance(tok)
        assert cur.allowed() is None


def test_grammar_rejects_ambiguous_labels(tokenizer):
    with pytest.raises(ValueError, match="prefix"):
        TraceGrammar(tokenizer, ["drone"], ["water", "water; needs: search"], ["search"])


PLACE = "tunnel →"


class _PlaceHead(torch.nn.Module):
    """The real tied head, but the place tokens (calls 2 and 3, after "environment:") are
    scripted: a random model would not write a place and "→" on its own."""

    def __init__(self, head, place_ids):
        super().__init__()
        self.head, self.place, self.i = head, place_ids, 0

    def forward(self, h):
        out = self.head(h)
        if 2 <= self.i < 2 + len(self.place):
            out = out.clone()
            out[..., self.place[self.i - 2]] = 1e4
        self.i += 1
        return out


class _CountingSession:
    def __init__(self, sess):
        self.sess, self.calls = sess, 0

    def run(self, *a, **kw):
        self.calls += 1
        return self.sess.run(*a, **kw)


def test_runtime_picks_inside_the_grammar_without_the_head_as_torch_does(exported):
    torch.set_num_threads(1)
    rt = BitGenRuntime.load(exported.directory)
    place = rt.tokenizer.encode(PLACE)
    head = rt._s["head"] = _CountingSession(rt._s["head"])
    real, calls = rt._next_token, itertools.count()

    def next_token(state, allowed=None):
        i = next(calls)
        return place[i] if i < len(place) else real(state, allowed)   # "environment:" is forced
    rt._next_token = next_token
    task = "search the collapsed tunnel for survivors"
    sel = rt.select(task, max_trace_tokens=48)
    assert head.calls == 0                          # every pick was the grammar's or the script's
    assert sel.reasoning.startswith("environment: tunnel → ")
    words = rt.tokenizer.encode(sel.reasoning)
    cur = rt._grammar.start()
    for tok in words:                               # the whole trace stayed in the grammar
        assert cur.allowed() is None or tok in cur.allowed()
        cur.advance(tok)
    if SELECTED_MARKER in sel.reasoning:
        assert parse_rationale(sel.reasoning, rt.catalog) is not None
    model = BitGenModel.load(exported.checkpoint).eval()
    model.lm_head = _PlaceHead(model.lm_head, place)
    out = model.select(task, trace_tokens=48)
    assert out["reasoning"] == sel.reasoning
    assert chosen_robots(out["robots"], out["confidences"]) == chosen_robots(sel.robots, sel.confidences)


def test_grammar_off_is_the_free_decoder(exported):
    rt = BitGenRuntime.load(exported.directory, trace_grammar=False)
    head = rt._s["head"] = _CountingSession(rt._s["head"])
    sel = rt.select("search the collapsed tunnel for survivors", max_trace_tokens=8)
    assert head.calls >= 1 and rt._grammar is None and sel.reasoning
