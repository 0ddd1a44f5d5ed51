"""Drafting the capable list (runtime/constrained.py RuleDraft, engine._decode): the draft
is what the rules write after the labels the trace has written, in the form the trace uses;
feeding it ahead changes no trace and no probability -- drafts the decoder agrees with save
passes, drafts it does not are dropped from the cache again."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from bitgen_core.catalog import RobotCatalog
from bitgen_core.data.rules import RuleBook, parse_rationale
from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.constrained import SELECTED_MARKER, RuleDraft

TASKS = ["inspect the cracked chimney on the roof", "carry crates across the warehouse",
         "search the collapsed garage for people", "check the ferry hull below the waterline",
         "deliver a first-aid kit up the stairs", "open the valve in the pump room"]


@pytest.fixture(scope="module")
def drafter(tokenizer):
    return RuleDraft.for_catalog(tokenizer, RobotCatalog.load())


def _traces(key_form: bool):
    """Rules' rationales up to "selected:", with the capable list in key form (what stage 2
    trains, training/stage2.py compact_trace) or in catalog names (RuleBook.rationale)."""
    book = RuleBook.load()
    conds = [()] + [(c,) for c in book.conditions]
    unavail = [()] + [(r,) for r in book.catalog.keys]
    needs = [(n,) for n in book.needs] + list(itertools.combinations(["inspection", "light_load",
                                                                      "manipulation"], 2))
    combos = list(itertools.product(book.families, needs, conds, unavail))
    for env, need, cond, gone in combos[::5]:      # every family, need and condition; 1/5 of the mixes
        d = book.decide(env, need, cond, gone)
        if not d.feasible:
            continue
        text = book.rationale(d, "the north yard")
        if key_form:
            p = parse_rationale(text, book.catalog)
            head = text.split(" → ", 2)
            text = f"{head[0]} → {head[1]} → {', '.join(p['capable'])}; selected: x"
        yield text[:text.index(SELECTED_MARKER) + len(SELECTED_MARKER)]


@pytest.mark.parametrize("key_form", [True, False])
def test_the_draft_is_the_rest_of_the_rules_capable_list(tokenizer, drafter, key_form):
    drafts = full = 0
    names = {tokenizer.decode(tokenizer.encode(r.name)) for r in RobotCatalog.load().robots}
    keys = set(RobotCatalog.load().keys)
    for text in _traces(key_form):
        ids = tokenizer.encode(text)
        needs_end = len(tokenizer.encode(text[:text.index(" → ", text.index("needs:"))]))
        for cut in range(needs_end - 1, len(ids)):
            draft = drafter.draft(ids[:cut])
            written = tokenizer.decode(ids[:cut])
            listed = written.rsplit(" → ", 1)[-1].rstrip(",").split(", ")
            # a name written in full that is no key ("drone" is both; "underwater" a key, or
            # the start of "underwater robot"): the trace has shown its form
            names_begun = written.count(" → ") == 2 and listed[-1] in names and \
                any(n in names and n not in keys for n in listed)
            if key_form or names_begun:
                # keys (what stage 2 trains) from the labels on; names once the trace wrote one
                assert draft in ([], ids[cut:]), (text, written)
            drafts += draft == ids[cut:]
        full += drafter.draft(ids[:needs_end]) == ids[needs_end:]
    assert drafts > 300
    if key_form:     # the whole list, drafted right after the labels
        assert full > 100


def test_no_draft_inside_a_label_a_name_or_outside_the_needs(tokenizer, drafter):
    for text in ["environment: pier → underwater; needs: close",                 # inside a label
                 "environment: pier → underwater; needs: close inspection → robot with",  # inside a name
                 "environment: pier → underwater",                                # before the needs
                 "environment: pier → moon base; needs: close inspection",        # no such family
                 "habitat: pier → underwater; needs: close inspection"]:
        assert drafter.draft(tokenizer.encode(text)) == [], text


def test_after_two_place_words_the_arrow_is_drafted(tokenizer, drafter):
    """compact_trace keeps the place's last two words, so "→" is proposed after two."""
    arrow = tokenizer.encode("→")
    assert drafter.draft(tokenizer.encode("environment: north yard")) == arrow
    assert drafter.draft(tokenizer.encode("environment: pier")) == []
    assert drafter.draft(tokenizer.encode("environment: the north yard")) == []


def test_no_rules_for_an_edited_fleet_means_no_draft(tokenizer):
    cat = RobotCatalog.load()
    edited = RobotCatalog([r for r in cat.robots if r.key != "drone"])
    assert RuleDraft.for_catalog(tokenizer, edited) is None


class _CountingStep:
    """Wraps the runtime's numpy step: counts passes and tokens fed."""

    def __init__(self, rt):
        self.passes = self.tokens = 0
        make = rt._stepper

        def stepper(prompt, cache=None):
            inner = make(prompt, cache)
            outer = self

            class Step:
                drafts = True

                def __call__(self, toks, all_states=False):
                    outer.passes += 1
                    outer.tokens += len(toks)
                    return inner(toks, all_states)

                room, rewind = inner.room, inner.rewind
            return Step()
        rt._stepper = stepper


def _oracle(rt, traces):
    """A drafter that proposes the trace's own continuation (every draft accepted)."""
    class Oracle:
        def draft(self, ids):
            for full in traces:
                if full[:len(ids)] == list(ids) and len(full) > len(ids):
                    return full[len(ids):len(ids) + 6]
            return []
    return Oracle()


class _Wrong:
    """A drafter whose drafts the decoder never takes (every draft rewound)."""

    def __init__(self, rt):
        self.tok = rt.tokenizer.encode("zebra zebra zebra")

    def draft(self, ids):
        return self.tok


def _scripted_place(rt):
    """The first picks after "environment:" are scripted ("tunnel →"): a random model would
    not write a place and "→" on its own, and the grammar (and the drafts) start after them."""
    real = rt._next_token

    def next_token(state, allowed=None):
        if allowed is None and rt._script:
            return rt._script.pop(0)
        return real(state, allowed)
    rt._next_token = next_token
    return rt


def _select(rt, task, image):
    rt._script = rt.tokenizer.encode("tunnel →")
    return rt.select(task, image, max_trace_tokens=48)


def test_drafts_change_no_trace_taken_or_not(exported):
    plain = _scripted_place(BitGenRuntime.load(exported.directory, trace_draft=False))
    assert plain._drafter is None
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) if i % 2 else None for i in range(len(TASKS))]
    ref = [_select(plain, t, im) for t, im in zip(TASKS, images)]
    assert all(s.reasoning.startswith("environment: tunnel → ") for s in ref)
    ref_ids = [plain.tokenizer.encode(s.reasoning) for s in ref]
    counted = {}
    for name, make in (("rules", None), ("oracle", lambda rt: _oracle(rt, ref_ids)), ("wrong", _Wrong)):
        rt = _scripted_place(BitGenRuntime.load(exported.directory))
        assert rt._drafter is not None
        if make is not None:
            rt._drafter = make(rt)
        counted[name] = _CountingStep(rt)
        for task, im, want in zip(TASKS, images, ref):
            got = _select(rt, task, im)
            assert got.reasoning == want.reasoning, name
            assert got.robots == want.robots and got.confidences == want.confidences
    base = _CountingStep(plain)
    for task, im in zip(TASKS, images):
        _select(plain, task, im)
    # taken drafts save passes; refused ones cost tokens fed, never a different trace
    assert counted["oracle"].passes < base.passes
    assert counted["wrong"].tokens > base.tokens and counted["wrong"].passes == base.passes
