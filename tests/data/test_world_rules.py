"""The world's rules: gold sets are 1-3 robots, consistent with the rules, with rationales
whose `selected` matches the gold; the design's headline examples come out as stated."""
import random

import pytest

from bitgen_core.data.generate import Generator
from bitgen_core.data.intents import sample_intent
from bitgen_core.data.rules import RuleBook, parse_rationale
from bitgen_core.data.world import World


@pytest.fixture(scope="module")
def book():
    return RuleBook.load()


@pytest.mark.parametrize("env,needs,conds,gold", [
    ("rubble", ["search"], [], ("legged", "drone")),                   # search and rescue
    ("warehouse", ["heavy_load"], [], ("wheeled",)),                  # heavy pallet across a warehouse
    ("underwater", ["manipulation"], [], ("underwater",)),           # fix a valve under the pier
    ("indoor", ["manipulation"], [], ("humanoid",)),                 # open doors, hand tools in an office
    ("aerial", ["overview"], [], ("drone",)),                        # survey a tall building's roof
    ("stairs", ["heavy_load", "manipulation"], [], ("legged", "humanoid")),  # heavy up stairs + hands
    ("road", ["light_load"], ["urgent"], ("drone", "wheeled")),      # urgency puts the fastest first
    ("aerial", ["overview"], ["high_wind"], ("legged",)),            # grounded drone -> walk the roof
    ("rubble", ["search", "manipulation"], [], ("legged", "drone", "humanoid")),
])
def test_design_examples(book, env, needs, conds, gold):
    assert book.decide(env, needs, conds).robots == gold


def test_conditions_and_availability_exclude_robots(book):
    assert "drone" not in book.decide("rough", ["inspection"], ["high_wind"]).robots
    assert "wheeled" not in book.decide("warehouse", ["heavy_load"], ["obstacles"]).robots
    assert book.decide("rough", ["inspection"], unavailable=["legged"]).robots == ("drone",)
    assert not book.decide("underwater", ["inspection"], unavailable=["underwater"]).feasible


def test_generated_records_are_consistent_with_the_rules(book):
    world = World.load()
    gen = Generator(seed=3)
    for i in range(400):
        rec = gen.record("train", i, images=True)
        assert 1 <= len(rec["robots"]) <= 3 and len(set(rec["robots"])) == len(rec["robots"])
        parsed = parse_rationale(rec["rationale"])
        assert parsed is not None, rec["rationale"]
        assert parsed["selected"] == rec["robots"]
        assert parsed["family"] == book.families[rec["env"]]["label"]
        assert set(rec["robots"]) <= set(parsed["capable"])
    for i in range(300):  # the intents behind records re-decide to the same gold
        intent, d = sample_intent(world, book, random.Random(i))
        assert book.decide(intent.env, intent.needs, intent.conditions).robots == d.robots
        assert all(r in book.families[intent.env]["mobility"] for r in d.robots)


def test_parse_rationale_rejects_malformed_traces():
    assert parse_rationale("selected: Drone") is None
    assert parse_rationale("environment: x → y; needs: a → Drone; selected: Submarine Tank") is None
    ok = parse_rationale("environment: the roof → rooftops; needs: aerial overview → Drone; selected: Drone")
    assert ok["selected"] == ["drone"]


def test_world_is_rich():
    s = World.load().sizes()
    assert s["families"] >= 14 and s["places"] >= 250 and s["objects"] >= 250 and s["verbs"] >= 150
    assert s["templates_heldout"] >= 10
