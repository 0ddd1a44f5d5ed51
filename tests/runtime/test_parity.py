"""The torch model and the torch-free runtime agree: >= 200 varied inputs, same top-1 on >= 99%,
every robot probability within 0.02 (tasks with and without an image, with and without
memory facts), and the same greedy reasoning trace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bitgen_core.model import BitGenModel
from bitgen_core.runtime import BitGenRuntime

VERBS = ["inspect", "carry", "search", "deliver", "photograph", "patrol", "repair", "map", "clean", "monitor"]
OBJECTS = ["the roof", "three crates", "the collapsed tunnel", "medicine", "the ship hull", "the fence",
           "a leaking pipe", "the flooded basement", "the stairwell", "the solar panels", "the reef"]
PLACES = ["in the warehouse", "across the river", "on the third floor", "under the bridge", "at night",
          "in the forest", "near the harbour", "before the storm", "", "through the rubble"]
FACTS = [("drone_grounded", "the drone is grounded for maintenance"),
         ("zone_b_flooded", "zone B is flooded up to the knees"),
         ("stairs_blocked", "the stairs of building C are blocked")]


def _inputs(n: int):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        task = " ".join(w for w in (rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)) if w)
        image = None
        if i % 2:
            h, w = int(rng.integers(32, 300)), int(rng.integers(32, 300))
            image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        out.append((task, image, int(rng.integers(0, len(FACTS) + 1))))
    return out


@pytest.fixture(scope="module")
def pair(exported):
    torch.set_num_threads(1)
    return BitGenModel.load(exported.checkpoint).eval(), BitGenRuntime.load(exported.directory)


def test_probabilities_and_top1_match_on_200_inputs(pair):
    model, rt = pair
    n_facts_state = None
    agree, worst, n = 0, 0.0, 0
    for task, image, n_facts in sorted(_inputs(200), key=lambda x: x[2]):
        if n_facts != n_facts_state:    # same facts in both memories
            mem = model.new_memory()
            for key in [k for k, _ in FACTS]:
                rt.memory.forget(key)
            for key, text in FACTS[:n_facts]:
                model.write_fact(mem, key, text)
                assert rt.memory.write(key, text).success
            n_facts_state = n_facts
        ref = model.select(task, image, memory=mem if n_facts else None)
        sel = rt.select(task, image, max_trace_tokens=0)
        got = dict(zip(sel.robots, sel.confidences))
        worst = max(worst, max(abs(ref["probabilities"][k] - got[k]) for k in got))
        agree += ref["robots"][0] == sel.robots[0]
        n += 1
    assert n == 200
    assert agree / n >= 0.99, f"top-1 agreement {agree}/{n}"
    assert worst <= 0.02, f"max probability difference {worst:.4f}"


def test_reasoning_trace_matches_the_torch_greedy_decode(pair):
    model, rt = pair
    for key, _ in FACTS:
        rt.memory.forget(key)
    same = 0
    inputs = _inputs(10)
    for task, image, _ in inputs:
        # model.select forces the "selected:" clause exactly as the runtime does
        ref = model.select(task, image, trace_tokens=12)["reasoning"]
        same += ref == rt.select(task, image, max_trace_tokens=12).reasoning
    assert same >= 9, f"{same}/10 traces identical"
