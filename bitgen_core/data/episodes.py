"""Memory-fact episodes: facts written at run time that change the right answer.

Two kinds of fact, both from resources/facts.yaml:
- availability ("the drone is grounded for high winds"): the robot is out everywhere;
- site conditions ("zone B of the warehouse is flooded"): one zone's environment family
  changes (flooded -> underwater, elevator out -> stairs, icy -> snow, collapsed -> rubble,
  washed out -> rough) or gains a condition (blocked -> obstacles, crowded, windy).
An episode holds a fact, a task it affects (gold before and after, by the rules), a
paraphrase of each, and an unrelated task whose gold the fact must not change (locality).
Forgetting the fact must restore `robots_before`. Torch-free.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bitgen_core.data import phrasing
from bitgen_core.data.intents import Intent, sample_intent
from bitgen_core.data.rules import RuleBook
from bitgen_core.data.world import RESOURCES, World


@dataclass(frozen=True)
class Fact:
    key: str
    text: str
    robot: str | None = None        # availability: the robot taken out
    zone_place: str | None = None   # site: "in zone B of the warehouse"
    to_env: str | None = None
    add: str | None = None

    def applies(self, place: str) -> bool:
        return self.robot is not None or (self.zone_place is not None and place == self.zone_place)


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

    def to_json(self) -> dict:
        return asdict(self)


def apply_fact(book: RuleBook, fact: Fact | None, intent: Intent):
    """The rules' decision for `intent` with `fact` in force (None = no fact)."""
    env, conds, unavailable = intent.env, tuple(intent.conditions), ()
    if fact is not None and fact.applies(intent.place):
        if fact.robot:
            unavailable = (fact.robot,)
        if fact.to_env:
            env = fact.to_env
        if fact.add and fact.add not in conds:
            conds = conds + (fact.add,)
    return book.decide(env, intent.needs, conds, unavailable)


def rationale_with_fact(book: RuleBook, fact: Fact | None, intent: Intent) -> str:
    d = apply_fact(book, fact, intent)
    place = intent.place
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

    def _availability(self, rng: random.Random, idx: int) -> Episode | None:
        robot = rng.choice(sorted(self.spec["availability"]))
        written, para = self._split_phrases(self.spec["availability"][robot])
        fact = Fact(key=f"{robot}-status", text=rng.choice(written), robot=robot)
        for _ in range(60):
            intent, d = sample_intent(self.world, self.book, rng, p_condition=0.15)
            if d.robots[0] != robot:
                continue
            after = apply_fact(self.book, fact, intent)
            if after.feasible:
                other, od = sample_intent(self.world, self.book, rng, p_condition=0.15)
                if robot in od.robots:
                    continue
                return self._episode(idx, "availability", fact, rng.choice(para), intent, other, rng)
        return None

    def _site(self, rng: random.Random, idx: int) -> Episode | None:
        kind = rng.choice(sorted(self.spec["site"]))
        spec = self.spec["site"][kind]
        base_env = rng.choice(spec["base"])
        site = rng.choice(self.spec["sites"][base_env])
        zone, other_zone = rng.sample(self.spec["zones"], 2)
        where, elsewhere = f"in {zone} of the {site}", f"in {other_zone} of the {site}"
        written, para = self._split_phrases(spec["phrases"])
        fill = lambda p: p.format(zone=zone, site=site)
        fact = Fact(key=f"{zone.replace(' ', '-')}-{kind}", text=fill(rng.choice(written)), zone_place=where,
                    to_env=spec.get("to_env"), add=spec.get("add"))
        for _ in range(60):
            intent, d = sample_intent(self.world, self.book, rng, p_condition=0.1, env=base_env, place=where)
            after = apply_fact(self.book, fact, intent)
            if not after.feasible or d.robots[0] in after.robots:
                continue
            other, _ = sample_intent(self.world, self.book, rng, p_condition=0.1, env=base_env, place=elsewhere)
            return self._episode(idx, kind, fact, fill(rng.choice(para)), intent, other, rng)
        return None

    def _episode(self, idx, kind, fact: Fact, fact_para: str, intent: Intent, other: Intent, rng) -> Episode:
        before = self.book.decide(intent.env, intent.needs, intent.conditions)
        after = apply_fact(self.book, fact, intent)
        unrelated = apply_fact(self.book, fact, other)
        assert unrelated.robots == self.book.decide(other.env, other.needs, other.conditions).robots
        task = self._word(intent, rng)
        para = task
        for _ in range(10):
            para = self._word(intent, rng)
            if para != task:
                break
        return Episode(id=f"mem-{idx:06d}", fact={"key": fact.key, "text": fact.text}, fact_paraphrase=fact_para,
                       task=task, task_paraphrase=para, robots_before=list(before.robots),
                       robots_after=list(after.robots), unrelated_task=self._word(other, rng),
                       unrelated_robots=list(unrelated.robots), kind=kind,
                       rationale_before=rationale_with_fact(self.book, None, intent),
                       rationale_after=rationale_with_fact(self.book, fact, intent),
                       rationale_unrelated=rationale_with_fact(self.book, fact, other))


def episode_records(ep: Episode, split: str) -> list[dict]:
    """Training records of one episode: the task with and without its fact, the paraphrases,
    and the unrelated task with the fact in force (so the model learns locality too)."""
    fact = [ep.fact]
    para_fact = [{"key": ep.fact["key"], "text": ep.fact_paraphrase}]
    base = {"image": None, "env": None, "image_decides": False, "split": split}
    return [
        {**base, "id": f"{ep.id}-a", "task": ep.task, "robots": ep.robots_after, "facts": fact, "rationale": ep.rationale_after},
        {**base, "id": f"{ep.id}-b", "task": ep.task, "robots": ep.robots_before, "facts": [], "rationale": ep.rationale_before},
        {**base, "id": f"{ep.id}-p", "task": ep.task_paraphrase, "robots": ep.robots_after, "facts": para_fact, "rationale": ep.rationale_after},
        {**base, "id": f"{ep.id}-u", "task": ep.unrelated_task, "robots": ep.unrelated_robots, "facts": fact, "rationale": ep.rationale_unrelated},
    ]
