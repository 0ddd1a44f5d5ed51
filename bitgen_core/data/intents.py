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

    @property
    def anchor(self) -> str:
        """What tells the environment: the place, or the landmark when no place is named."""
        return self.place or self.obj


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


# Prepositions a place-only verb drops when it takes the location as its object
# ("get an overview of the bay", not "... of out in the bay").
_OBJECT_PREPS = {"in", "at", "on", "across", "along", "over", "around", "inside", "through", "out"}
_DEFECT_VERBS = {"inspect", "check", "examine", "look over", "assess", "go over", "scrutinise",
                 "eyeball", "look at", "take a close look at", "get eyes on", "do a visual check of"}


def _place_as_object(place: str) -> str:
    """"out on the reservoir" -> "the reservoir"; places without a leading preposition stay."""
    words = place.split(" ")
    i = 0
    while i < len(words) - 1 and words[i] in _OBJECT_PREPS:
        i += 1
    return " ".join(words[i:])


def sample_intent(world: World, book: RuleBook, rng: random.Random, image_decides: bool = False,
                  p_condition: float = 0.3, env: str | None = None, place: str | None = None,
                  p_landmark: float = 0.0, p_family_verb: float = 0.0,
                  p_defect: float = 0.0, p_route: float = 0.0) -> tuple[Intent, Decision]:
    """A random feasible intent and its decision; `env`/`place` pin the setting if given.

    With an unpinned, named place: `p_landmark` makes a target-slot job about one of the
    family's landmarks with no place named ("check the church spire"), `p_family_verb` takes
    the verb from the family's own verbs ("fly up and inspect"), `p_defect` adds what to look
    for to an inspection ("... for cracks"), and place-only verbs that take an object get the
    location without its preposition ("survey the reservoir")."""
    actions = image_actions(world, book) if image_decides else tuple(world.actions)
    for _ in range(200):
        action = rng.choice(actions)
        a = world.actions[action]
        fam = env if env is not None else rng.choice(a.families)
        if fam not in a.families:
            continue
        obj, weight = _object(world, action, fam, rng, image_decides)
        free = not image_decides and place is None
        family = world.families[fam]
        landmark = (free and a.slot == "target" and family.landmarks and p_landmark > 0
                    and rng.random() < p_landmark)
        if landmark:
            obj = rng.choice(family.landmarks)
        verb = rng.choice(a.verbs)
        if free and family.verbs.get(action) and p_family_verb > 0 and rng.random() < p_family_verb:
            verb = rng.choice(family.verbs[action])
        if (free and action == "inspect" and verb in _DEFECT_VERBS and p_defect > 0
                and rng.random() < p_defect):
            obj = f"{obj} for {rng.choice(world.phrasing['defects'])}"
        conds: tuple[str, ...] = ()
        if rng.random() < p_condition:
            allowed = [c for c, fams in CONDITION_FAMILIES.items() if fams is None or fam in fams]
            conds = (rng.choice(allowed),)
        where = place if place is not None else (IMAGE_PLACE if image_decides else rng.choice(world.families[fam].places))
        if landmark:
            where = ""
        elif a.need == "carry" and not image_decides:
            start = None
            if free and p_route > 0 and rng.random() < p_route:
                start = rng.choice(family.places)
            where = phrasing.delivery_place(where)
            if start is not None and _place_as_object(start) not in where:
                where = f"from {_place_as_object(start)} {where}"
        elif free and a.slot == "place_only" and verb.endswith((" of", " over")):
            where = _place_as_object(where)
        intent = Intent(action, fam, verb, obj, where, needs_of(world, action, weight), conds, image_decides)
        d = book.decide(fam, intent.needs, conds)
        if d.feasible:
            return intent, d
    raise RuntimeError(f"no feasible intent found for env={env!r}; check the rules and vocabulary")


def with_env(intent: Intent, env: str) -> Intent:
    return replace(intent, env=env)
