"""Generate the robot-task corpus: JSONL records (+ PNG scenes) from the world and rules.

    python -m bitgen_core.data.generate --out DIR --n 20000 --seed 0 [--images]

Writes, in DIR:
  train.jsonl     training records (train template families; includes memory records)
  val.jsonl       same template families, disjoint draws, for early stopping
  heldout.jsonl   held-out template families only: phrasings never seen in training
  memory_cases.jsonl   memory episodes (fact, task, gold before/after, paraphrases, locality)
  captions.json   COCO-style captions of the rendered scenes (with --images), for stage 1
  images/*.png    rendered scenes (with --images)
  stats.json      sizes, label distribution, speed
Every record follows docs/ARCHITECTURE.md "Data records". Same seed -> identical bytes.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

from bitgen_core.data import phrasing
from bitgen_core.data.episodes import EpisodeMaker, episode_records
from bitgen_core.data.intents import sample_intent
from bitgen_core.data.render import DEV_SEED_BASE, render_scene, save_png
from bitgen_core.data.rules import RuleBook, default_rulebook
from bitgen_core.data.world import World, default_world


class Generator:
    """Seeded record factory. Image-bearing records carry `scene` = {family, seed}, so a
    trainer can re-render on the fly instead of reading the PNG."""

    def __init__(self, seed: int = 0, world: World | None = None, book: RuleBook | None = None,
                 p_image: float = 0.3, p_image_decides: float = 0.15, p_condition: float = 0.3,
                 p_landmark: float = 0.25, p_family_verb: float = 0.2, p_defect: float = 0.2,
                 p_hint: float = 0.2, p_route: float = 0.25):
        self.world = world or default_world()
        self.book = book or default_rulebook()
        self.seed = seed
        self.p_image, self.p_image_decides, self.p_condition = p_image, p_image_decides, p_condition
        # the world's human-wording knobs (landmark jobs with no place, family verbs, what to
        # look for, setting hints); never applied to image-decides tasks
        self.p_landmark, self.p_family_verb, self.p_defect, self.p_hint = p_landmark, p_family_verb, p_defect, p_hint
        self.p_route = p_route

    def _rng(self, split: str, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{split}:{i}")

    def scene_seed(self, split: str, i: int) -> int:
        return random.Random(f"scene:{self.seed}:{split}:{i}").randrange(DEV_SEED_BASE)

    def record(self, split: str, i: int, images: bool) -> dict:
        """Record i of `split` ("train", "val" or "heldout")."""
        rng = self._rng(split, i)
        tsplit = "heldout" if split == "heldout" else "train"
        decides = images and rng.random() < self.p_image_decides
        intent, d = sample_intent(self.world, self.book, rng, image_decides=decides, p_condition=self.p_condition,
                                  p_landmark=self.p_landmark, p_family_verb=self.p_family_verb,
                                  p_defect=self.p_defect, p_route=self.p_route)
        family = rng.choice(phrasing.template_families(self.world, tsplit, image=decides))
        task = phrasing.fill(self.world, family, intent.vp, intent.place, intent.conditions, rng, image=decides)
        if not decides and self.world.families[intent.env].hints and rng.random() < self.p_hint:
            task = phrasing.add_hint(task, phrasing.setting_hint(self.world, intent.env, rng), rng)
        rec = {"id": f"{split}-{i:07d}", "task": task, "robots": list(d.robots), "image": None, "env": intent.env,
               "image_decides": decides, "facts": [], "rationale": self.book.rationale(d, intent.anchor),
               "split": split, "template": family, "action": intent.action}
        if decides or (images and rng.random() < self.p_image):
            rec["scene"] = {"family": intent.env, "seed": self.scene_seed(split, i)}
            rec["image"] = f"images/{rec['id']}.png"
        return rec


def write_corpus(out: Path, n: int, seed: int = 0, images: bool = False, val_frac: float = 0.05,
                 heldout_frac: float = 0.05, memory_frac: float = 0.3, n_memory_cases: int = 200,
                 progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    gen = Generator(seed)
    n_mem = int(n * memory_frac)                          # records from memory episodes
    n_plain = n - n_mem
    sizes = {"train": n_plain, "val": max(1, int(n * val_frac)), "heldout": max(1, int(n * heldout_frac))}
    maker = EpisodeMaker(gen.world, gen.book)
    stats: dict = {"seed": seed, "n": n, "labels": {}, "vocabulary": gen.world.sizes()}
    t0 = time.perf_counter()
    img_time, n_img = 0.0, 0
    captions = {"images": [], "annotations": []}
    if images:
        (out / "images").mkdir(exist_ok=True)
    for split, size in sizes.items():
        recs = [gen.record(split, i, images) for i in _bar(range(size), f"{split} records", progress)]
        if split == "train":
            mem, e = [], 0
            while len(mem) < n_mem:      # 5-8 records per episode; the last one is cut to size
                mem += episode_records(maker.make(random.Random(f"{seed}:memtrain:{e}"), e), "train")
                e += 1
            recs += mem[:n_mem]
        for rec in recs:
            if images and rec.get("scene"):
                t = time.perf_counter()
                scene = render_scene(rec["scene"]["family"], rec["scene"]["seed"])
                save_png(scene.image, out / rec["image"])
                img_time += time.perf_counter() - t
                n_img += 1
                cid = len(captions["images"])
                captions["images"].append({"id": cid, "file_name": rec["image"], "family": scene.family})
                captions["annotations"].append({"id": cid, "image_id": cid, "caption": scene.caption})
        _write_jsonl(out / f"{split}.jsonl", recs)
        stats["labels"][split] = label_distribution(recs)
    cases = [maker.make(random.Random(f"{seed}:memcase:{e}"), e).to_json() for e in range(n_memory_cases)]
    _write_jsonl(out / "memory_cases.jsonl", cases)
    if images:
        (out / "captions.json").write_text(json.dumps(captions), encoding="utf-8")
    total = time.perf_counter() - t0
    stats["seconds"] = round(total, 2)
    stats["records_per_s"] = round(sum(sizes.values()) / max(total - img_time, 1e-9), 1)
    stats["images"] = n_img
    stats["images_per_s_incl_png"] = round(n_img / img_time, 1) if n_img else None
    (out / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    return stats


def label_distribution(recs: list[dict]) -> dict:
    top1 = Counter(r["robots"][0] for r in recs)
    member = Counter(k for r in recs for k in r["robots"])
    size = Counter(len(r["robots"]) for r in recs)
    return {"top1": dict(sorted(top1.items())), "in_gold": dict(sorted(member.items())),
            "set_size": {str(k): v for k, v in sorted(size.items())},
            "image_decides": sum(r["image_decides"] for r in recs), "with_facts": sum(bool(r["facts"]) for r in recs)}


def _write_jsonl(path: Path, recs: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _bar(it, desc: str, on: bool):
    if not on:
        return it
    try:
        from tqdm import tqdm
        return tqdm(it, desc=desc, leave=False)
    except ImportError:
        return it


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Generate the robot-task corpus (JSONL + optional PNG scenes).")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=20000, help="number of train-split records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", action="store_true", help="render scene PNGs and image-decides records")
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--heldout-frac", type=float, default=0.05)
    ap.add_argument("--memory-frac", type=float, default=0.3, help="share of train records from memory episodes")
    ap.add_argument("--memory-cases", type=int, default=200)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    stats = write_corpus(a.out, a.n, a.seed, a.images, a.val_frac, a.heldout_frac, a.memory_frac,
                         a.memory_cases, progress=not a.quiet)
    print(json.dumps({k: stats[k] for k in ("seconds", "records_per_s", "images", "images_per_s_incl_png")}))
    print(json.dumps(stats["labels"]["train"]))


if __name__ == "__main__":
    main()
