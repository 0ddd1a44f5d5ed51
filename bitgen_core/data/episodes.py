"""Memory-fact episodes: facts written at run time that change the right answer.

Two kinds of fact, both from resources/facts.yaml:
- availability ("the drone is grounded for high winds"): the robot is out everywhere;
- site conditions ("zone B of the warehouse is flooded"): one zone's environment family
  changes (flooded -> underwater, elevator out -> stairs, icy -> snow, collapsed -> rubble,
  washed out -> rough) or gains a condition (blocked -> obstacles, crowded, windy).
An episode holds a fact, a task it affects (gold before and after, by the rules), a
paraphrase of each (the paraphrased task may word the location differently: "zone B of the
warehouse" / "the warehouse's zone B"), an unrelated task whose gold the fact must not change
(locality), a distractor fact that must not change the task's answer (facts about other robots
or other zones sit in the same memory at run time), and for availability a restoration ("the
drone is back in service", the same key rewritten). Forgetting the fact must restore
`robots_before`. Torch-free.

Each fact in a training record carries `applies`: whether it concerns that record's task
(an availability fact concerns every task, the robot is out everywhere; a site fact only
tasks in its zone). Stage 2 trains the memory read's coefficient of each fact towards it, so
the read is selective (training/stage2.py, relevance loss). Locality tasks are mostly the
same site in another zone (`SAME_SITE_LOCALITY`), the hard case: a shared site name.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from bitgen_core.data import phrasing
from bitgen_core.data.intents import Intent, sample_intent
from bitgen_core.data.rules import RuleBook
from bitgen_core.data.world import RESOURCES, World

SAME_SITE_LOCALITY = 0.75   # share of site locality tasks in another zone of the same site
# The generator's human-wording knobs (see intents.sample_intent) for unpinned episode tasks.
HUMAN_WORDING = {"p_landmark": 0.25, "p_family_verb": 0.2, "p_defect": 0.2, "p_route": 0.25}


@dataclass(frozen=True)
class Fact:
    key: str
    text: str
    robot: str | None = None        # availability: the robot taken out
    zone_place: str | None = None   # site: "in zone B of the warehouse"
    to_env: str | None = None
    add: str | None = None
    aliases: tuple[str, ...] = ()   # other wordings of the same location ("the warehouse's zone B")

    def applies(self, place: str) -> bool:
        if self.robot is not None:
            return True
        where = location_key(place)
        return self.zone_place is not None and (where == location_key(self.zone_place) or where in self.aliases)


def location_key(place: str) -> str:
    """The location without its leading preposition: a delivery "to zone B of the warehouse"
    happens in the zone a fact names as "in zone B of the warehouse"."""
    head, _, rest = place.partition(" ")
    return rest if head in _PREPOSITIONS else place


_PREPOSITIONS = {"in", "at", "on", "to", "into", "inside", "across", "along", "over", "around", "through"}


@dataclass
class Episode:
    id: str
    fact: dict                       # {"key", "text"}
    fact_paraphrase: str
    task: str
    task_paraphrase: str
    robots_before: list[str]
    robots_after: list[str]
    unrelated_task: str
    unrelated_robots: list[str]
    kind: str                        # "availability" or the site condition name
    rationale_before: str
    rationale_after: str
    rationale_unrelated: str
    distractor: dict | None = None   # {"key", "text"}: a fact that leaves this task's answer alone
    restore_text: str | None = None  # availability: the robot back in service (same key)
    # site: the same task moved to another zone of the same site (the fact does not apply
    # there, the answer stays robots_before), worded twice (the first is trained on): the
    # minimal pair for locality
    nearby_tasks: list[str] | None = None
    rationale_nearby: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def apply_fact(book: RuleBook, fact: Fact | None, intent: Intent):
    """The rules' decision for `intent` with `fact` in force (None = no fact)."""
    return apply_facts(book, [] if fact is None else [fact], intent)


def apply_facts(book: RuleBook, facts, intent: Intent):
    """The rules' decision for `intent` with every fact in `facts` in force."""
    env, conds, unavailable = intent.env, tuple(intent.conditions), ()
    for fact in facts:
        if not fact.applies(intent.place):
            continue
        if fact.robot and fact.robot not in unavailable:
            unavailable = unavailable + (fact.robot,)
        if fact.to_env:
            env = fact.to_env
        if fact.add and fact.add not in conds:
            conds = conds + (fact.add,)
    return book.decide(env, intent.needs, conds, unavailable)


def rationale_with_fact(book: RuleBook, fact: Fact | None, intent: Intent) -> str:
    d = apply_fact(book, fact, intent)
    place = intent.anchor
    if fact is not None and fact.zone_place is not None and fact.applies(intent.place):
        place = f"{place} ({fact.text})"
    return book.rationale(d, place)


class EpisodeMaker:
    """Builds episodes whose fact provably changes the top answer (before[0] not in after)."""

    def __init__(self, world: World, book: RuleBook, facts_path: str | Path | None = None,
                 template_split: str = "train"):
        self.world, self.book = world, book
        self.spec = yaml.safe_load(Path(facts_path or RESOURCES / "facts.yaml").read_text(encoding="utf-8"))
        self.templates = phrasing.template_families(world, template_split)

    def _word(self, intent: Intent, rng: random.Random) -> str:
        return phrasing.fill(self.world, rng.choice(self.templates), intent.vp, intent.place, intent.conditions, rng)

    def _split_phrases(self, phrases: list[str]) -> tuple[list[str], list[str]]:
        h = len(phrases) // 2
        return phrases[:h], phrases[h:]

    def make(self, rng: random.Random, idx: int) -> Episode:
        for _ in range(100):
            ep = self._availability(rng, idx) if rng.random() < 0.5 else self._site(rng, idx)
            if ep is not None:
                return ep
        raise RuntimeError("could not build a memory episode; check facts.yaml against the rules")

    # -- availability: a robot out everywhere ------------------------------------------------
    def _robot_phrase(self, robot: str, rng: random.Random, paraphrase: bool) -> str:
        short = self.spec.get("short_availability")
        if short and rng.random() < short["p"]:
            own, common = (self._split_phrases(list(x)) for x in (short["own_states"][robot], short["states"]))
            states = own[paraphrase] + common[paraphrase]
            return f"{rng.choice(short['names'][robot])} {rng.choice(states)}"
        return rng.choice(self._split_phrases(self.spec["availability"][robot])[paraphrase])

    def _robot_fact(self, robot: str, rng: random.Random) -> tuple[Fact, str]:
        text = self._robot_phrase(robot, rng, paraphrase=False)
        return Fact(key=f"{robot}-status", text=text, robot=robot), self._robot_phrase(robot, rng, paraphrase=True)

    def _availability(self, rng: random.Random, idx: int) -> Episode | None:
        robot = rng.choice(sorted(self.spec["availability"]))
        fact, fact_para = self._robot_fact(robot, rng)
        for _ in range(60):
            intent, d = sample_intent(self.world, self.book, rng, p_condition=0.15, **HUMAN_WORDING)
            if d.robots[0] != robot:
                continue
            after = apply_fact(self.book, fact, intent)
            if after.feasible:
                other, od = sample_intent(self.world, self.book, rng, p_condition=0.15, **HUMAN_WORDING)
                if robot in od.robots:
                    continue
                restore = rng.choice(self.spec["restored"][robot])
                return self._episode(idx, "availability", fact, fact_para, intent, intent, other, rng,
                                     restore_text=restore)
        return None

    # -- site conditions: one zone of one site changes ----------------------------------------
    def _locations(self, zone: str, site: str) -> list[str]:
        bare = zone[4:] if zone.startswith("the ") else zone
        return [form.format(zone=zone, site=site, bare=bare) for form in self.spec["locations"]]

    def _zones(self, env: str) -> list[str]:
        return list(self.spec["zones"]) + list(self.spec.get("family_zones", {}).get(env, ()))

    def _zone_pair(self, env: str, rng: random.Random) -> tuple[str, str]:
        """The fact's zone and the locality zone: from the lists, or built from a head word and
        an identifier (facts.yaml `built_zones`), often sharing the head ("level 7" / "level 2")."""
        built = self.spec.get("built_zones")
        if not built or rng.random() >= built["p"]:
            zone, other = rng.sample(self._zones(env), 2)
            return zone, other
        numbered = rng.random() < 0.5
        heads = built["numbered_heads"] if numbered else built["named_heads"]
        ids = built["ids"] if numbered else built["qualifiers"]
        make = (lambda h, i: f"{h} {i}") if numbered else (lambda h, i: f"the {i} {h}")   # noqa: E731
        head = rng.choice(heads)
        other_head = head if rng.random() < built["same_head"] else rng.choice([h for h in heads if h != head])
        i = rng.choice(ids)
        j = rng.choice([x for x in ids if x != i or other_head != head])
        return make(head, i), make(other_head, j)

    def _fact_text(self, phrase: str, loc: str, rng: random.Random) -> str:
        """A site phrase filled with its location, sometimes with a reason or a time after it."""
        text = phrase.format(loc=loc)
        reasons = self.spec.get("site_reasons")
        if reasons and rng.random() < reasons["p"]:
            text = f"{text} {rng.choice(reasons['reasons'])}"
        return text

    def _site(self, rng: random.Random, idx: int) -> Episode | None:
        kind = rng.choice(sorted(self.spec["site"]))
        spec = self.spec["site"][kind]
        base_env = rng.choice(spec["base"])
        site = rng.choice(self.spec["sites"][base_env])
        sites = self.spec["sites"][base_env]
        if len(sites) > 1 and rng.random() < self.spec.get("p_site_wide", 0.0):
            # the whole site: jobs anywhere there change, the same job at another site does not
            zone, label = None, site
            locs, other_locs = [f"the {site}"], [f"the {rng.choice([x for x in sites if x != site])}"]
            distractor_zone = None
        else:
            zone, other_zone = self._zone_pair(base_env, rng)
            label = zone[4:] if zone.startswith("the ") else zone
            locs, other_locs = self._locations(zone, site), self._locations(other_zone, site)
            distractor_zone = (other_zone, site, base_env)
        # the task may name the zone without its site ("in level 7"); the fact always names it
        word = lambda: (zone if zone and rng.random() < self.spec.get("p_bare", 0.0) else rng.choice(locs))  # noqa: E731
        loc, fact_loc, para_loc = word(), rng.choice(locs), word()
        written, para = self._split_phrases(spec["phrases"])
        fill = lambda p: self._fact_text(p, fact_loc if p in written else rng.choice(locs), rng)   # noqa: E731
        fact = Fact(key=f"{label.replace(' ', '-')}-{kind}", text=fill(rng.choice(written)), zone_place=f"in {loc}",
                    to_env=spec.get("to_env"), add=spec.get("add"), aliases=(*locs, *([zone] if zone else [])))
        for _ in range(60):
            intent, d = sample_intent(self.world, self.book, rng, p_condition=0.1, env=base_env, place=f"in {loc}")
            after = apply_fact(self.book, fact, intent)
            if not after.feasible or d.robots[0] in after.robots:
                continue
            head = intent.place.partition(" ")[0]
            para_intent = replace(intent, place=f"{head} {para_loc}")
            # locality: the same site elsewhere, or any other job of that kind of place
            if rng.random() < SAME_SITE_LOCALITY:
                where = f"in {rng.choice(other_locs)}"
                other, _ = sample_intent(self.world, self.book, rng, p_condition=0.1, env=base_env, place=where)
            else:
                other, _ = sample_intent(self.world, self.book, rng, p_condition=0.1, env=base_env)
            if fact.applies(other.place):
                continue
            # the minimal pair: this very job in another zone of the same site (or at another site)
            moved = replace(intent, place=f"{head} {rng.choice(other_locs)}")
            if fact.applies(moved.place) or apply_fact(self.book, fact, moved).robots != d.robots:
                continue
            return self._episode(idx, kind, fact, fill(rng.choice(para)), intent, para_intent, other, rng,
                                 distractor_zone=distractor_zone, nearby=moved)
        return None

    def _distractor(self, rng, intent: Intent, facts: list[Fact], zone_site) -> Fact | None:
        """A second fact that leaves `intent`'s answer as `facts` make it: another robot out
        (not one the answer uses) or a condition in another zone of the same site."""
        want = apply_facts(self.book, facts, intent).robots
        for _ in range(20):
            if zone_site is not None and rng.random() < 0.5:
                zone, site, env = zone_site
                kind = rng.choice([k for k, v in sorted(self.spec["site"].items()) if env in v["base"]])
                loc = rng.choice(self._locations(zone, site))
                text = self._fact_text(rng.choice(self.spec["site"][kind]["phrases"]), loc, rng)
                spec = self.spec["site"][kind]
                bare = zone[4:] if zone.startswith("the ") else zone
                cand = Fact(key=f"{bare.replace(' ', '-')}-{kind}", text=text, zone_place=f"in {loc}",
                            to_env=spec.get("to_env"), add=spec.get("add"),
                            aliases=(*self._locations(zone, site), zone))
            else:
                robot = rng.choice(sorted(self.spec["availability"]))
                if any(f.robot == robot for f in facts):
                    continue
                cand, _ = self._robot_fact(robot, rng)
            if cand.key not in {f.key for f in facts} and apply_facts(self.book, facts + [cand], intent).robots == want \
                    and apply_facts(self.book, [cand], intent).robots == apply_facts(self.book, [], intent).robots:
                return cand
        return None

    def _episode(self, idx, kind, fact: Fact, fact_para: str, intent: Intent, para_intent: Intent,
                 other: Intent, rng, restore_text: str | None = None, distractor_zone=None,
                 nearby: Intent | None = None) -> Episode:
        before = self.book.decide(intent.env, intent.needs, intent.conditions)
        after = apply_fact(self.book, fact, intent)
        unrelated = apply_fact(self.book, fact, other)
        assert unrelated.robots == self.book.decide(other.env, other.needs, other.conditions).robots
        assert apply_fact(self.book, fact, para_intent).robots == after.robots
        task = self._word(intent, rng)
        para = task
        for _ in range(10):
            para = self._word(para_intent, rng)
            if para != task:
                break
        distractor = self._distractor(rng, intent, [fact], distractor_zone)
        nearby_tasks = None if nearby is None else [self._word(nearby, rng), self._word(nearby, rng)]
        return Episode(id=f"mem-{idx:06d}", fact={"key": fact.key, "text": fact.text}, fact_paraphrase=fact_para,
                       task=task, task_paraphrase=para, robots_before=list(before.robots),
                       robots_after=list(after.robots), unrelated_task=self._word(other, rng),
                       unrelated_robots=list(unrelated.robots), kind=kind,
                       rationale_before=rationale_with_fact(self.book, None, intent),
                       rationale_after=rationale_with_fact(self.book, fact, intent),
                       rationale_unrelated=rationale_with_fact(self.book, fact, other),
                       distractor=None if distractor is None else {"key": distractor.key, "text": distractor.text},
                       restore_text=restore_text, nearby_tasks=nearby_tasks,
                       rationale_nearby=None if nearby is None else rationale_with_fact(self.book, fact, nearby))


def is_availability_key(key: str) -> bool:
    """Availability facts are keyed "<robot>-status"; site facts "<zone>-<condition>"."""
    return key.endswith("-status")


def episode_records(ep: Episode, split: str) -> list[dict]:
    """Training records of one episode: the task with and without its fact, the paraphrases
    (task and fact), the unrelated task with the fact in force (locality), the task with a
    distractor fact beside its fact and alone (facts about other things change nothing), and
    the robot back in service (the same key rewritten: the original answer returns).
    Every fact gets `applies` (does it concern this record's task): the episode's own fact
    and its restoration do; on the unrelated task only an availability fact does; a
    distractor does if it is an availability fact (another robot out, everywhere) and not if
    it is a condition in another zone. Site episodes add the minimal pair for locality: the
    same job in another zone of the same site with the fact in force (it does not apply; the
    answer is the one without the fact)."""
    flag = lambda f, applies: {**f, "applies": bool(applies)}   # noqa: E731
    fact = [flag(ep.fact, True)]
    para_fact = [flag({"key": ep.fact["key"], "text": ep.fact_paraphrase}, True)]
    unrelated_fact = [flag(ep.fact, ep.kind == "availability")]
    distractor = (None if ep.distractor is None
                  else flag(ep.distractor, is_availability_key(ep.distractor["key"])))
    base = {"image": None, "env": None, "image_decides": False, "split": split}
    rec = lambda tag, task, robots, facts, rationale: {   # noqa: E731
        **base, "id": f"{ep.id}-{tag}", "task": task, "robots": robots, "facts": facts, "rationale": rationale}
    out = [
        rec("a", ep.task, ep.robots_after, fact, ep.rationale_after),
        rec("b", ep.task, ep.robots_before, [], ep.rationale_before),
        rec("p", ep.task_paraphrase, ep.robots_after, para_fact, ep.rationale_after),
        rec("q", ep.task, ep.robots_after, para_fact, ep.rationale_after),
        rec("u", ep.unrelated_task, ep.unrelated_robots, unrelated_fact, ep.rationale_unrelated),
    ]
    if distractor is not None:
        out.append(rec("d", ep.task_paraphrase, ep.robots_after, [distractor] + fact, ep.rationale_after))
        out.append(rec("x", ep.task, ep.robots_before, [distractor], ep.rationale_before))
    if ep.nearby_tasks:      # the same job in another zone: the fact changes nothing (one record:
        # v4b's two, fact as written and reworded, made site facts too timid, reports/retrain_v4)
        out.append(rec("m", ep.nearby_tasks[0], ep.robots_before, [flag(ep.fact, False)], ep.rationale_nearby))
    if ep.restore_text is not None:
        out.append(rec("r", ep.task, ep.robots_before,
                       [flag({"key": ep.fact["key"], "text": ep.restore_text}, True)], ep.rationale_before))
    return out
