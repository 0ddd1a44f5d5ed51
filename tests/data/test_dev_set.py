"""The hand-written dev set validates and was not produced by the generator."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitgen_core.catalog import RobotCatalog
from bitgen_core.data.generate import Generator
from bitgen_core.data.loaders import load_task_records
from bitgen_core.data.render import DEV_SEED_BASE, render_scene

DEV = Path(__file__).resolve().parents[2] / "data" / "dev"


@pytest.fixture(scope="module")
def dev():
    return load_task_records(DEV / "tasks.jsonl")


def test_dev_tasks_validate(dev):
    assert len(dev) >= 150
    assert {k for r in dev for k in r["robots"]} == set(RobotCatalog.load().keys)
    assert all(1 <= len(r["robots"]) <= 3 for r in dev)
    assert len({r["task"] for r in dev if not r["image_decides"]}) == sum(not r["image_decides"] for r in dev)
    img = [r for r in dev if r["image_decides"]]
    assert len(img) >= 40
    for r in img:
        assert Path(r["image"]).is_file() and r["env"] not in Path(r["image"]).name
        assert r["scene"]["seed"] >= DEV_SEED_BASE      # never a training scene
    # the same image-decides sentence gets different gold sets with different scenes
    by_text = {}
    for r in img:
        by_text.setdefault(r["task"], set()).add(tuple(r["robots"]))
    assert sum(len(g) > 1 for g in by_text.values()) >= 8


def test_dev_images_are_the_documented_renders(dev):
    for r in [r for r in dev if r["image_decides"]][:6]:
        on_disk = np.asarray(Image.open(r["image"]).convert("RGB"))
        assert np.array_equal(on_disk, render_scene(r["scene"]["family"], r["scene"]["seed"]).image)


def test_memory_cases_validate():
    cat = RobotCatalog.load()
    cases = [json.loads(l) for l in (DEV / "memory_cases.jsonl").read_text().splitlines() if l.strip()]
    assert len(cases) >= 30
    for c in cases:
        for k in ("robots_before", "robots_after", "unrelated_robots"):
            assert 1 <= len(c[k]) <= 3 and all(cat.index(r) >= 0 for r in c[k])
        assert c["robots_before"] != c["robots_after"]
        assert c["fact"]["key"] and c["fact"]["text"] and c["fact_paraphrase"] != c["fact"]["text"]
        assert c["task_paraphrase"] != c["task"] and c["unrelated_task"] != c["task"]


def test_no_dev_task_appears_in_a_generated_corpus(dev):
    gen = Generator(seed=0)
    generated = set()
    for split, n in (("train", 20000), ("heldout", 1000)):
        generated |= {gen.record(split, i, images=True)["task"].lower() for i in range(n)}
    clash = [r["task"] for r in dev if r["task"].lower() in generated]
    assert not clash, clash
