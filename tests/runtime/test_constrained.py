"""The trace's "selected:" clause is the selector's choice (runtime/constrained.py): after the
decoder writes the marker, the chosen robots' names and [EOS] are forced, in the runtime and
in the torch model's generate path alike, so the two still give the same traces.

The decoder's own picks are scripted here (a random nano model never writes "selected:" on
its own): the runtime's output head and the torch model's lm_head return a fixed token
sequence, everything else -- prefill, selector, decode steps, the forcing -- runs for real."""
from __future__ import annotations

import pytest
import torch

from bitgen_core.model import BitGenModel
from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.constrained import SelectionClause, chosen_robots

TASK = "search the collapsed tunnel for survivors"
FREE = "environment: tunnel → rubble and collapsed buildings; needs: search → drone; selected:"
TAIL = " humanoid humanoid humanoid humanoid humanoid"   # what the decoder would write on


def test_chosen_robots_is_threshold_at_least_one_at_most_three():
    keys = ["drone", "legged", "humanoid", "wheeled", "underwater"]
    assert chosen_robots(keys, [0.9, 0.7, 0.6, 0.55, 0.1]) == ["drone", "legged", "humanoid"]
    assert chosen_robots(keys, [0.4, 0.3, 0.2, 0.1, 0.0]) == ["drone"]
    assert chosen_robots(keys, [0.8, 0.5, 0.2, 0.1, 0.0]) == ["drone", "legged"]


def test_clause_marker_and_forced_names(exported):
    rt = BitGenRuntime.load(exported.directory)
    clause = SelectionClause(rt.tokenizer, rt.catalog)
    ids = rt.tokenizer.encode("needs: search → drone; selected:")
    assert clause.marker_ends_at(ids) and not clause.marker_ends_at(ids[:-1])
    forced = clause.forced_ids(["legged", "drone"])
    assert forced[-1] == rt.tokenizer.eos_id
    assert rt.tokenizer.decode(forced) == "robot with legs, drone"


@pytest.fixture(scope="module")
def script(exported):
    rt = BitGenRuntime.load(exported.directory)
    return rt.tokenizer.encode(FREE + TAIL)


def test_runtime_forces_the_selection_after_the_marker(exported, script, monkeypatch):
    rt = BitGenRuntime.load(exported.directory, trace_grammar=False)   # every pick scripted
    picks = iter(script)
    monkeypatch.setattr(rt, "_next_token", lambda state, allowed=None: next(picks))
    steps = []
    make = rt._stepper
    monkeypatch.setattr(rt, "_stepper", lambda prompt, cache=None: (lambda f: lambda toks: steps.extend(toks) or f(toks))(make(prompt, cache)))
    sel = rt.select(TASK, max_trace_tokens=40)
    chosen = chosen_robots(sel.robots, sel.confidences)
    names = ", ".join(rt.catalog.get(k).name for k in chosen).lower()
    assert sel.reasoning == f"{FREE} {names}"
    # a step feeds a pick to get the next state; from the marker on nothing is picked, so
    # the steps end with the token before the marker's last (forced tokens cost no step)
    assert steps == rt.tokenizer.encode(FREE)[:-1]
    # without the marker nothing is forced: the scripted tail comes through (a trace that
    # leaves the grammar, ";" in the place, is decoded freely)
    ids = rt.tokenizer.encode("environment: tunnel; rubble;" + TAIL)
    free = iter(ids)
    monkeypatch.setattr(rt, "_next_token", lambda state, allowed=None: next(free))
    assert rt.select(TASK, max_trace_tokens=len(ids)).reasoning.endswith("humanoid humanoid")


class _ScriptedHead(torch.nn.Module):
    """Logits with the next scripted token on top, shaped like the real head's output."""

    def __init__(self, ids, vocab):
        super().__init__()
        self.ids, self.vocab, self.i = list(ids), vocab, 0

    def forward(self, h):
        out = torch.full(h.shape[:-1] + (self.vocab,), -10.0)
        out[..., self.ids[min(self.i, len(self.ids) - 1)]] = 10.0
        self.i += 1
        return out


def test_torch_generate_path_forces_the_same_clause(exported, script):
    torch.set_num_threads(1)
    model = BitGenModel.load(exported.checkpoint).eval()
    rt = BitGenRuntime.load(exported.directory, trace_grammar=False)
    model.lm_head = _ScriptedHead(script, model.config.vocab_size)
    out = model.select(TASK, trace_tokens=40)
    chosen = chosen_robots(out["robots"], out["confidences"])
    picks = iter(script)
    rt._next_token = lambda state, allowed=None: next(picks)
    sel = rt.select(TASK, max_trace_tokens=40)
    assert out["reasoning"] == sel.reasoning
    assert out["reasoning"].endswith("selected: " + ", ".join(rt.catalog.get(k).name for k in chosen).lower())
    # the sampling path (GRPO) is free unless it asks for the clause
    model.lm_head = _ScriptedHead(script, model.config.vocab_size)
    free = model.generate_trace(TASK, max_new_tokens=len(script))["texts"][0]
    assert free.endswith("humanoid humanoid")
