"""Turning an intent into words: verb phrases, place phrases and template families.

A template family is one way of wording a request (imperative, question, polite, terse,
descriptive with irrelevant detail...). Families marked `split: heldout` in phrasing.yaml
are never used for training records, so they measure generalisation to unseen phrasings.
Torch-free; randomness comes only from the `random.Random` passed in (seeded upstream).
"""
from __future__ import annotations

import random
import re

from bitgen_core.data.world import World

# Leading prepositions that become "to" when something is delivered there.
_TO = {"in": "to", "at": "to", "on": "to", "across": "to", "along": "to", "over": "to",
       "around": "to", "inside": "into", "through": "to"}


def delivery_place(place: str) -> str:
    head, _, rest = place.partition(" ")
    return f"{_TO[head]} {rest}" if head in _TO else place


def setting_hint(world: World, env: str, rng: random.Random) -> str:
    """A sentence about the setting that names no place ("It sits about 30 metres up.")."""
    hint = rng.choice(world.families[env].hints)
    return hint.format(n=rng.choice(world.phrasing["hint_numbers"]))


def add_hint(text: str, hint: str, rng: random.Random) -> str:
    """The hint before or after the request."""
    if rng.random() < 0.5:
        return f"{text} {hint}"
    return f"{hint} {text[:1].upper() + text[1:]}"


def verb_phrase(verb: str, obj: str) -> str:
    return f"{verb} {obj}".strip()


def template_families(world: World, split: str, image: bool = False) -> list[str]:
    table = world.phrasing["image_templates" if image else "templates"]
    return [k for k, t in table.items() if t["split"] == split]


def condition_text(world: World, conditions, rng: random.Random) -> tuple[str, str]:
    """(sentence form, terse form) for the conditions a task states."""
    table = world.phrasing["conditions"]
    sent = " ".join(rng.choice(table[c]["sentence"]) for c in conditions)
    terse = "".join(rng.choice(table[c]["terse"]) for c in conditions)
    return sent, terse


def fill(world: World, family: str, vp: str, place: str, conditions, rng: random.Random,
         image: bool = False) -> str:
    """Word one request with a form of template `family`; every stated condition appears."""
    table = world.phrasing["image_templates" if image else "templates"]
    forms = table[family]["forms"]
    if not place:       # a landmark job names no place: forms that open with the place do not fit
        forms = [f for f in forms if "{Place}" not in f] or ["{vp}.{mods}"]
    form = rng.choice(forms)
    sent, terse = condition_text(world, conditions, rng)
    has_slot = any(s in form for s in ("{mods}", "{mods_pre}", "{mods_terse}"))
    detail = rng.choice(world.phrasing["detail"])
    text = form.format(
        vp=vp, place=place, Place=place[:1].upper() + place[1:],
        mods=(" " + sent) if sent else "", mods_pre=(sent + " ") if sent else "",
        mods_terse=terse, detail=detail, detail_lc=detail[:1].lower() + detail[1:])
    if sent and not has_slot:
        text = f"{text} {sent}"
    text = re.sub(r"\s+", " ", text).strip()
    if not place:
        text = re.sub(r" ([.,?!:])", r"\1", text)
    style = table[family].get("style")
    if style == "terse" and rng.random() < 0.5:
        return text.lower()
    return text[:1].upper() + text[1:]
