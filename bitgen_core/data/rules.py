"""Capability rules: from (environment, needs, conditions, facts) to a gold robot set.

The rules are the single source of truth for labels and rationales, so a rationale can
never disagree with its label. The algorithm, in the order an operator would reason:

1. Who can operate in the environment family (mobility rank 1 home, 2 works, 3 only if
   nothing better covers a need), minus robots excluded by conditions (high winds and
   crowds ground the drone, obstacles stop the wheeled robot) or by availability facts.
2. The primary need: among operable robots that satisfy it, keep those with the best
   mobility rank, in the need's order of preference. A `team` need (search) also takes the
   next robot of rank <= 2, as real search parties pair an aerial and a ground robot.
3. Urgency puts an operable, capable drone (rank <= 2) first: it is the fastest.
4. Each secondary need (payload, manipulation) not covered by the robots so far adds its
   best robot.
At most three robots; an empty result means the task is infeasible and is never emitted.
Torch-free.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from bitgen_core.catalog import RobotCatalog
from bitgen_core.errors import InputError

RULES_PATH = Path(__file__).with_name("resources") / "rules.yaml"
MAX_ROBOTS = 3


@dataclass(frozen=True)
class Decision:
    robots: tuple[str, ...]          # gold set, best first; empty = infeasible
    env: str
    needs: tuple[str, ...]
    conditions: tuple[str, ...]
    unavailable: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return bool(self.robots)


@dataclass(eq=False)
class RuleBook:
    families: dict
    needs: dict
    conditions: dict
    catalog: RobotCatalog = field(default_factory=RobotCatalog.load)

    @classmethod
    def load(cls, path: str | Path | None = None, catalog: RobotCatalog | None = None) -> "RuleBook":
        data = yaml.safe_load(Path(path or RULES_PATH).read_text(encoding="utf-8"))
        book = cls(data["families"], data["needs"], data["conditions"], catalog or RobotCatalog.load())
        known = set(book.catalog.keys)
        for fam, spec in book.families.items():
            if set(spec["mobility"]) - known:
                raise InputError(f"rules family {fam!r} names robots not in the catalog: "
                                 f"{sorted(set(spec['mobility']) - known)}")
        for need, spec in book.needs.items():
            if set(spec["robots"]) - known:
                raise InputError(f"rules need {need!r} names robots not in the catalog")
        return book

    # --- the rules -----------------------------------------------------------------------
    def operable(self, env: str, conditions=(), unavailable=()) -> dict[str, int]:
        if env not in self.families:
            raise InputError(f"unknown environment family {env!r}; known: {', '.join(self.families)}")
        out = dict(self.families[env]["mobility"])
        for c in conditions:
            for r in self.conditions[c].get("exclude", ()):
                out.pop(r, None)
        for r in unavailable:
            out.pop(r, None)
        return out

    def _candidates(self, need: str, mob: dict[str, int]) -> list[str]:
        """Robots satisfying `need` and able to operate, best mobility first, then need order."""
        order = self.needs[need]["robots"]
        cands = [r for r in order if r in mob]
        return sorted(cands, key=lambda r: (mob[r], order.index(r)))

    def decide(self, env: str, needs, conditions=(), unavailable=()) -> Decision:
        needs = tuple(needs)
        if not needs:
            raise InputError("a task needs at least one need")
        for n in needs:
            if n not in self.needs:
                raise InputError(f"unknown need {n!r}")
        mob = self.operable(env, conditions, unavailable)
        primary = self._candidates(needs[0], mob)
        chosen: list[str] = []
        if primary:
            best = mob[primary[0]]
            chosen = [r for r in primary if mob[r] == best]
            if self.needs[needs[0]].get("team") and len(chosen) == 1:
                chosen += [r for r in primary if r not in chosen and mob[r] <= 2][:1]
            order = self.needs[needs[0]]["robots"]
            chosen.sort(key=order.index)
            if "urgent" in conditions and "drone" in primary and mob["drone"] <= 2:
                chosen = ["drone"] + [r for r in chosen if r != "drone"]
        extra: list[str] = []
        for n in needs[1:]:
            if any(r in self.needs[n]["robots"] for r in chosen + extra):
                continue
            cands = self._candidates(n, mob)
            if not cands:
                chosen = []
                break
            extra.append(cands[0])
        if not chosen:
            return Decision((), env, needs, tuple(conditions), tuple(unavailable))
        robots = (chosen[:MAX_ROBOTS - len(extra)] + extra)[:MAX_ROBOTS]
        return Decision(tuple(robots), env, needs, tuple(conditions), tuple(unavailable))

    def capable(self, env: str, needs, conditions=(), unavailable=()) -> list[str]:
        """The rationale's capable list: for each need in turn, the robots that satisfy it and
        can operate here, best mobility first (runtime/constrained.py RuleDraft drafts it)."""
        mob = self.operable(env, conditions, unavailable)
        out: list[str] = []
        for n in needs:
            out += [r for r in self._candidates(n, mob) if r not in out]
        return out

    # --- rationales ------------------------------------------------------------------------
    def rationale(self, d: Decision, place: str) -> str:
        """The step-form rationale: environment → family; needs → robots; selected."""
        env = f"environment: {place} → {self.families[d.env]['label']}"
        parts = [self.needs[n]["label"] for n in d.needs]
        parts += [self.conditions[c]["label"] for c in d.conditions]
        parts += [f"{self.catalog.get(r).name} unavailable" for r in d.unavailable]
        capable = self.capable(d.env, d.needs, d.conditions, d.unavailable)
        name = lambda keys: ", ".join(self.catalog.get(r).name for r in keys)
        return f"{env}; needs: {', '.join(parts)} → {name(capable)}; selected: {name(d.robots)}"


_RATIONALE = re.compile(r"^environment: (?P<place>.+?) → (?P<family>[^;]+); "
                        r"needs: (?P<needs>.+?) → (?P<capable>[^;]+); selected: (?P<selected>.+)$")


def parse_rationale(text: str, catalog: RobotCatalog | None = None) -> dict | None:
    """Parse a step-form rationale; None when it is not well-formed.

    Returns {"place", "family", "needs", "capable", "selected"} with `selected` as catalog
    keys. Stage 2's trace reward and the evaluation use this to check that a trace is
    well-formed and agrees with the chosen robots.
    """
    m = _RATIONALE.match(text.strip())
    if not m:
        return None
    cat = catalog or _default_catalog()
    try:
        selected = [cat.robots[cat.index(s)].key for s in m["selected"].split(",") if s.strip()]
        capable = [cat.robots[cat.index(s)].key for s in m["capable"].split(",") if s.strip()]
    except InputError:
        return None
    if not selected:
        return None
    return {"place": m["place"], "family": m["family"].strip(), "needs": m["needs"],
            "capable": capable, "selected": selected}


@lru_cache(maxsize=1)
def _default_catalog() -> RobotCatalog:
    return RobotCatalog.load()


@lru_cache(maxsize=1)
def default_rulebook() -> RuleBook:
    return RuleBook.load()


def trace_labels(path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """The closed sets a rationale is written from (see RuleBook.rationale): the environment
    families' labels, and the needs' and conditions' labels. Read from the YAML alone, without
    the catalog check of RuleBook.load, so an edited catalog does not stop the runtime."""
    data = yaml.safe_load(Path(path or RULES_PATH).read_text(encoding="utf-8"))
    return ([spec["label"] for spec in data["families"].values()],
            [spec["label"] for spec in data["needs"].values()]
            + [spec["label"] for spec in data["conditions"].values()])
