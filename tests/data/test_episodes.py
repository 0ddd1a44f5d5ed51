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
        texts = {ep.fact["text"], ep.fact_paraphrase}
        with_fact = [r for r in recs if any(f["text"] in texts for f in r["facts"])
                     and r["task"] in (ep.task, ep.task_paraphrase)]
        without = [r for r in recs if not r["facts"]]
        assert len(with_fact) >= 3 and all(r["robots"] == ep.robots_after for r in with_fact)
        assert [r["robots"] for r in without] == [ep.robots_before]
        # facts about something else (a distractor, the robot back in service) change nothing
        other = [r for r in recs if r["facts"] and not any(f["text"] in texts for f in r["facts"])
                 and r["task"] == ep.task]
        assert all(r["robots"] == ep.robots_before for r in other)
    assert "availability" in kinds and len(kinds) >= 5


def test_site_fact_holds_for_every_wording_of_its_location_and_for_deliveries():
    book = RuleBook.load()
    flooded = Fact("zone-B-flooded", "the warehouse's zone B is flooded", zone_place="in zone B of the warehouse",
                   to_env="underwater", aliases=("zone B of the warehouse", "the warehouse's zone B", "zone B at the warehouse"))
    for place in ("in the warehouse's zone B", "in zone B at the warehouse", "at zone B of the warehouse"):
        task = Intent("inspect", "warehouse", "inspect", "the racking", place, ("inspection",))
        assert apply_fact(book, flooded, task).robots == ("underwater",), place
    lift = Fact("lift", "the lift to level 5 of the hospital is broken", zone_place="in level 5 of the hospital",
                to_env="stairs")
    delivery = Intent("deliver", "indoor", "bring", "a toolbox", "to level 5 of the hospital", ("medium_load",))
    assert apply_fact(book, lift, delivery).robots == ("legged", "humanoid")
    elsewhere = Intent("deliver", "indoor", "bring", "a toolbox", "to level 1 of the hospital", ("medium_load",))
    assert apply_fact(book, lift, elsewhere).robots == book.decide("indoor", ("medium_load",)).robots


def test_episodes_carry_distractors_and_restorations_that_keep_the_original_answer():
    world, book = World.load(), RuleBook.load()
    maker = EpisodeMaker(world, book)
    eps = [maker.make(random.Random(100 + i), i) for i in range(80)]
    assert sum(ep.distractor is not None for ep in eps) >= 60
    avail = [ep for ep in eps if ep.kind == "availability"]
    assert avail and all(ep.restore_text for ep in avail)
    for ep in eps:
        recs = {r["id"].rsplit("-", 1)[1]: r for r in episode_records(ep, "train")}
        if ep.distractor is not None:
            assert recs["d"]["robots"] == ep.robots_after and len(recs["d"]["facts"]) == 2
            assert recs["x"]["robots"] == ep.robots_before and [{k: f[k] for k in ("key", "text")}
                                                                       for f in recs["x"]["facts"]] == [ep.distractor]
            assert ep.distractor["key"] != ep.fact["key"]
        if ep.restore_text is not None:
            assert recs["r"]["robots"] == ep.robots_before and recs["r"]["facts"][0]["key"] == ep.fact["key"]


def test_record_facts_say_whether_they_concern_the_task():
    """`applies` labels the read's relevance target: the episode's fact (and its paraphrase,
    its restoration) concerns its task; on the unrelated task only an availability fact does;
    a distractor only if it is another robot's availability."""
    from bitgen_core.data.episodes import is_availability_key
    world, book = World.load(), RuleBook.load()
    maker = EpisodeMaker(world, book)
    seen = {"u_site": 0, "u_avail": 0, "distractor_site": 0}
    for i in range(60):
        ep = maker.make(random.Random(i), i)
        recs = {r["id"].rsplit("-", 1)[1]: r for r in episode_records(ep, "train")}
        for tag in ("a", "p", "q", "r"):
            if tag in recs:
                assert all(f["applies"] is True for f in recs[tag]["facts"]), tag
        (u_fact,) = recs["u"]["facts"]
        assert u_fact["applies"] is (ep.kind == "availability")
        seen["u_avail" if ep.kind == "availability" else "u_site"] += 1
        if ep.distractor is not None:
            dis, own = recs["d"]["facts"]
            assert own["applies"] is True and dis["text"] == ep.distractor["text"]
            assert dis["applies"] is is_availability_key(ep.distractor["key"])
            assert recs["x"]["facts"][0]["applies"] is dis["applies"]
            seen["distractor_site"] += not dis["applies"]
    assert all(v > 0 for v in seen.values()), seen


def test_site_locality_tasks_are_mostly_the_same_site_elsewhere():
    """Hard negatives: most site episodes' unrelated task is at the fact's site, another zone."""
    from bitgen_core.data.episodes import SAME_SITE_LOCALITY
    world, book = World.load(), RuleBook.load()
    maker = EpisodeMaker(world, book)
    sites = sorted({s for v in maker.spec["sites"].values() for s in v}, key=len, reverse=True)
    bare = lambda s: s[4:] if s.startswith("the ") else s   # noqa: E731
    same, n, wide = 0, 0, []
    for i in range(300):
        ep = maker._site(random.Random(f"loc:{i}"), i)
        if ep is None:
            continue
        site = next(bare(s) for s in sites if bare(s) in ep.fact["text"].lower())
        label = ep.fact["key"][:-len(ep.kind) - 1].replace("-", " ")
        if label == site:        # a site-wide fact: its locality tasks are at other sites
            wide.append(site not in ep.unrelated_task.lower() and site not in ep.nearby_tasks[0].lower())
            continue
        n += 1
        same += site in ep.unrelated_task.lower()
    assert n >= 100
    assert same / n >= SAME_SITE_LOCALITY - 0.1, (same, n)
    assert len(wide) >= 30 and all(wide)


def test_built_zones_give_minimal_pairs_that_differ_only_in_the_identifier():
    """Half the site episodes name a built zone ("level 7", "the west yard"); most of those
    move the minimal-pair job to a zone with the same head, so only the identifier differs."""
    maker = EpisodeMaker(World.load(), RuleBook.load())
    built = maker.spec["built_zones"]
    maker.spec = {**maker.spec, "built_zones": {**built, "p": 1.0}}     # every pair built
    head = lambda z: z.split(" ", 2)[2] if z.startswith("the ") else z.rsplit(" ", 1)[0]  # noqa: E731
    same_head, n = 0, 0
    for i in range(400):
        zone, other = maker._zone_pair("warehouse", random.Random(f"zone:{i}"))
        assert zone != other and head(zone) in built["numbered_heads"] + built["named_heads"]
        n += 1
        same_head += head(zone) == head(other)
    assert n >= 100 and same_head / n >= built["same_head"] - 0.1, (same_head, n)


def test_some_availability_facts_are_short_with_no_reason_and_name_their_robot():
    """'the drone is grounded' style facts: written forms from the first half of the states,
    paraphrases from the second, each naming its own robot."""
    maker = EpisodeMaker(World.load(), RuleBook.load())
    short = maker.spec["short_availability"]
    written_states, para_states = (set(), set())
    for robot in short["names"]:
        own, common = (maker._split_phrases(list(x)) for x in (short["own_states"][robot], short["states"]))
        written_states |= set(own[0] + common[0])
        para_states |= set(own[1] + common[1])
    assert not written_states & para_states
    seen = {"written": 0, "para": 0, "long": 0}
    rng = random.Random(5)
    for _ in range(400):
        robot = rng.choice(sorted(short["names"]))
        fact, para = maker._robot_fact(robot, rng)
        assert fact.robot == robot and fact.key == f"{robot}-status" and para != fact.text
        for text, states, tag in ((fact.text, written_states, "written"), (para, para_states, "para")):
            name = next((n for n in short["names"][robot] if text.startswith(n + " ")), None)
            if name is not None and text[len(name) + 1:] in written_states | para_states:
                assert text[len(name) + 1:] in states, text
                seen[tag] += 1
            else:
                seen["long"] += 1
    # about p = 0.3 of facts are short, the rest the long phrases with a reason
    assert 0.2 < seen["written"] / 400 < 0.4 and 0.2 < seen["para"] / 400 < 0.4
    assert "the drone is grounded" in {f"{n} {s}" for n in short["names"]["drone"] for s in written_states}
