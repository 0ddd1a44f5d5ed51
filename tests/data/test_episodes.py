"""Memory episodes: facts change the gold answer as the rules say; without them the original
answer holds; unrelated tasks keep theirs."""
import random

from bitgen_core.data.episodes import EpisodeMaker, Fact, apply_fact, episode_records
from bitgen_core.data.intents import Intent
from bitgen_core.data.rules import RuleBook
from bitgen_core.data.world import World


def test_site_and_availability_facts_follow_the_rules():
    book = RuleBook.load()
    task = Intent("inspect", "warehouse", "inspect", "the racking", "in zone B of the warehouse", ("inspection",))
    assert apply_fact(book, None, task).robots == ("wheeled",)
    flooded = Fact("zone-B-flooded", "zone B of the warehouse is flooded", zone_place="in zone B of the warehouse",
                   to_env="underwater")
    assert apply_fact(book, flooded, task).robots == ("underwater",)
    other_zone = Intent("inspect", "warehouse", "inspect", "the racking", "in zone D of the warehouse", ("inspection",))
    assert apply_fact(book, flooded, other_zone).robots == ("wheeled",)
    lift = Intent("deliver", "indoor", "bring", "a toolbox", "to level 5 of the hospital", ("medium_load",))
    out = Fact("lift", "the lifts to level 5 of the hospital are out", zone_place="to level 5 of the hospital", to_env="stairs")
    assert apply_fact(book, out, lift).robots == ("legged", "humanoid")
    grounded = Fact("drone-status", "the drone is grounded for high winds", robot="drone")
    roof = Intent("survey", "aerial", "survey", "", "on the roof of the tower block", ("overview",))
    assert apply_fact(book, grounded, roof).robots == ("legged",)


def test_generated_episodes_change_then_restore_the_answer():
    world, book = World.load(), RuleBook.load()
    maker = EpisodeMaker(world, book)
    kinds = set()
    for i in range(60):
        ep = maker.make(random.Random(i), i)
        kinds.add(ep.kind)
        assert ep.robots_before and ep.robots_after and ep.unrelated_robots
        assert ep.robots_before[0] not in ep.robots_after          # the fact matters
        assert ep.task_paraphrase != ep.task and ep.fact_paraphrase != ep.fact["text"]
        recs = episode_records(ep, "train")
        with_fact = [r for r in recs if r["facts"] and r["task"] in (ep.task, ep.task_paraphrase)]
        without = [r for r in recs if not r["facts"]]
        assert all(r["robots"] == ep.robots_after for r in with_fact)
        assert [r["robots"] for r in without] == [ep.robots_before]
    assert "availability" in kinds and len(kinds) >= 5
