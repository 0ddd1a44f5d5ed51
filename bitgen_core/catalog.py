"""The fleet catalog: which robot types exist and what their descriptions say.

The catalog is data (YAML). The selector builds each robot's embedding from its
`description`, so a new robot type is a new catalog entry, not a code change.
Torch-free: the runtime, the CLI and the data generator all read it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from bitgen_core.errors import InputError

DEFAULT_CATALOG_PATH = Path(__file__).with_name("resources") / "fleet_catalog.yaml"
_REQUIRED = ("key", "name", "description")


@dataclass(frozen=True)
class Robot:
    key: str
    name: str
    description: str
    aliases: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()

    def text(self) -> str:
        """The text the model reads for this robot (name + description)."""
        return f"{self.name}. {self.description}"


@dataclass
class RobotCatalog:
    robots: list[Robot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.robots:
            raise InputError("fleet catalog is empty: add at least one robot entry")
        keys = [r.key for r in self.robots]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise InputError(f"fleet catalog has duplicate robot keys: {sorted(dup)}")
        self._by_key = {r.key: i for i, r in enumerate(self.robots)}
        self._by_name = {r.name.lower(): i for i, r in enumerate(self.robots)}

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> "RobotCatalog":
        if not isinstance(data, dict) or not isinstance(data.get("robots"), list):
            raise InputError("fleet catalog must be a mapping with a 'robots' list")
        robots = []
        for i, entry in enumerate(data["robots"]):
            if not isinstance(entry, dict):
                raise InputError(f"fleet catalog entry {i} is not a mapping")
            missing = [k for k in _REQUIRED if not str(entry.get(k, "")).strip()]
            if missing:
                raise InputError(f"fleet catalog entry {i} lacks {', '.join(missing)}")
            robots.append(Robot(
                key=str(entry["key"]).strip(),
                name=str(entry["name"]).strip(),
                description=" ".join(str(entry["description"]).split()),
                aliases=tuple(entry.get("aliases") or ()),
                capabilities=tuple(entry.get("capabilities") or ()),
                limitations=tuple(entry.get("limitations") or ()),
                environments=tuple(entry.get("environments") or ()),
            ))
        return cls(robots)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RobotCatalog":
        """Load a catalog from YAML (or JSON); None loads the default 5-robot fleet."""
        p = Path(path) if path is not None else DEFAULT_CATALOG_PATH
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"fleet catalog not found: {p}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise InputError(f"fleet catalog {p} is unreadable: {e}".splitlines()[0]) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return {"version": 1, "robots": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(r).items()}
            for r in self.robots]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def with_robot(self, robot: Robot) -> "RobotCatalog":
        """A new catalog with one more robot type (the catalog edit of the issue)."""
        return RobotCatalog([*self.robots, robot])

    # --- lookup -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.robots)

    def __iter__(self):
        return iter(self.robots)

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.robots]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.robots]

    def texts(self) -> list[str]:
        return [r.text() for r in self.robots]

    def index(self, key_or_name: str) -> int:
        """Index of a robot by key, name (any case) or alias."""
        s = key_or_name.strip()
        if s in self._by_key:
            return self._by_key[s]
        if s.lower() in self._by_name:
            return self._by_name[s.lower()]
        for i, r in enumerate(self.robots):
            if s.lower() in (a.lower() for a in r.aliases):
                return i
        raise InputError(f"unknown robot {key_or_name!r}; catalog has {', '.join(self.keys)}")

    def get(self, key_or_name: str) -> Robot:
        return self.robots[self.index(key_or_name)]

    def multi_hot(self, keys: Iterable[str]) -> list[float]:
        y = [0.0] * len(self.robots)
        for k in keys:
            y[self.index(k)] = 1.0
        return y

    def fingerprint(self) -> str:
        """sha256 of the canonical catalog: a model trained on one catalog can tell."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
