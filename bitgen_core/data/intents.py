"""Intents: what a task asks for, before it is put into words.

An intent is an action in a place of some environment family, with its object, payload
weight and stated conditions. The rules decide its gold robots; phrasing.py words it.
Sampling is seeded through the `random.Random` passed in. Torch-free.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache

from bitgen_core.data import phrasing
from bitgen_core.data.rules import Decision, RuleBook
from bitgen_core.data.world import SLOT_FILLERS, World

# Conditions a task may state, and the families where stating them makes sense.
CONDITION_FAMILIES = {
    "urgent": None,  # anywhere
    "high_wind": {"aerial", "water_surface", "rubble", "rough", "road", "desert", "snow", "farm", "industrial"},
    "crowd": {"indoor", "warehouse", "road", "stairs", "industrial"},
    "obstacles": {"indoor", "warehouse", "road", "industrial", "farm"},
}
IMAGE_PLACE = "the place in the image"


@dataclass(frozen=True)
class Intent:
    action: str
    env: str
    verb: str
    obj: str
    place: str                       # with its preposition ("under the old pier")
    needs: tuple[str, ...]
    conditions: tuple[str, ...] = ()
    image_decides: bool = False

    @property
    def vp(self) -> str:
        return phrasing.verb_phrase(self.verb, self.obj)


def needs_of(world: World, action: str, weight: str | None) -> tuple[str, ...]:
    a = world.actions[action]
    first = f"{weight}_load" if a.need == "carry" else a.need
    return (first, *a.also)


def _object(world: World, action: str, env: str, rng: random.Random, image: bool) -> tuple[str, str | None]:
    a = world.actions[action]
    if a.slot == "place_only":
        return "", None
    if a.slot == "target":
        pool = world.phrasing["image_safe"]["target"] if image else world.families[env].targets
        return rng.choice(pool), None
    if a.slot == "payload":
        weight = rng.choice(sorted(world.payloads))
        return rng.choice(world.payloads[weight]), weight
    return rng.choice(world.fillers[SLOT_FILLERS[a.slot]]), None


@lru_cache(maxsize=8)
def image_actions(world: World, book: RuleBook) -> tuple[str, ...]:
    """Actions whose gold set depends on the environment: only these make image-decides tasks."""
    out = []
    for key, a in world.actions.items():
        golds = set()
        for env in a.families:
            loads = ("light_load", "medium_load", "heavy_load")
            for n in (loads if a.need == "carry" else (a.need,)):
                golds.add(book.decide(env, (n, *a.also)).robots)
        if len(golds) > 2:
            out.append(key)
    return tuple(out)


def sample_intent(world: World, book: RuleBook, rng: random.Random, image_decides: bool = False,
                  p_condition: float = 0.3, env: str | None = None, place: str | None = None) -> tuple[Intent, Decision]:
    """A random feasible intent and its decision; `env`/`place` pin the setting if given."""
    actions = image_actions(world, book) if image_decides else tuple(world.actions)
    for _ in range(200):
        action = rng.choice(actions)
        a = world.actions[action]
        fam = env if env is not None else rng.choice(a.families)
        if fam not in a.families:
            continue
        obj, weight = _object(world, action, fam, rng, image_decides)
        conds: tuple[str, ...] = ()
        if rng.random() < p_condition:
            allowed = [c for c, fams in CONDITION_FAMILIES.items() if fams is None or fam in fams]
            conds = (rng.choice(allowed),)
        where = place if place is not None else (IMAGE_PLACE if image_decides else rng.choice(world.families[fam].places))
        if a.need == "carry" and not image_decides:
            where = phrasing.delivery_place(where)
        intent = Intent(action, fam, rng.choice(a.verbs), obj, where, needs_of(world, action, weight), conds, image_decides)
        d = book.decide(fam, intent.needs, conds)
        if d.feasible:
            return intent, d
    raise RuntimeError(f"no feasible intent found for env={env!r}; check the rules and vocabulary")


def with_env(intent: Intent, env: str) -> Intent:
    return replace(intent, env=env)
