"""Loaders for real data in standard formats, so users train on their own data with the
same scripts: COCO-style caption JSON (stage 1) and JSON/JSONL task records (stage 2).

Task records follow docs/ARCHITECTURE.md "Data records"; only `task` and `robots` are
required. Robots may be given as catalog keys, names or aliases and come back as keys.
Every error names the file and the line (JSONL) or list index (JSON) of the bad record.
Torch-free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bitgen_core.catalog import RobotCatalog
from bitgen_core.errors import InputError

MAX_ROBOTS = 3


def load_coco_captions(json_path: str | Path, image_root: str | Path | None = None) -> list[tuple[str, str]]:
    """(image_path, caption) pairs from a COCO captions file (`images` + `annotations`).

    One pair per annotation; image paths are `image_root / file_name` (image_root defaults
    to the JSON file's directory). Annotations naming an unknown image id are an error.
    """
    path = Path(json_path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"caption file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InputError(f"{path}: a COCO caption file needs 'images' and 'annotations' lists")
    files = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise InputError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        files[im["id"]] = str(root / im["file_name"])
    pairs = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not str(ann.get("caption", "")).strip():
            raise InputError(f"{path}: annotations[{i}] needs 'image_id' and a non-empty 'caption'")
        if ann["image_id"] not in files:
            raise InputError(f"{path}: annotations[{i}] names unknown image_id {ann['image_id']!r}")
        pairs.append((files[ann["image_id"]], " ".join(str(ann["caption"]).split())))
    return pairs


@dataclass
class LoadReport:
    """What `load_task_records(..., skip_bad=True)` left out, and why."""
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)   # one message per bad record

    def __str__(self) -> str:
        head = f"{self.loaded} records loaded, {len(self.skipped)} skipped"
        return "\n".join([head, *self.skipped])


def normalise_record(rec, where: str, catalog: RobotCatalog, base: Path) -> dict:
    """Validate one record and return it in the canonical form (robot keys, resolved image)."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: a task record must be a JSON object")
    task = rec.get("task")
    if not isinstance(task, str) or not task.strip():
        raise InputError(f"{where}: 'task' must be a non-empty string")
    robots = rec.get("robots")
    if isinstance(robots, str):
        robots = [robots]
    if not isinstance(robots, list) or not 1 <= len(robots) <= MAX_ROBOTS:
        raise InputError(f"{where}: 'robots' must list 1 to {MAX_ROBOTS} robots")
    keys = []
    for r in robots:
        if not isinstance(r, str):
            raise InputError(f"{where}: robot entries must be strings, got {r!r}")
        try:
            k = catalog.robots[catalog.index(r)].key
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        if k in keys:
            raise InputError(f"{where}: robot {r!r} is listed twice")
        keys.append(k)
    image = rec.get("image")
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: 'image' must be a path string or null")
        p = Path(image)
        image = str(p if p.is_absolute() else base / p)
        if not Path(image).is_file():
            raise InputError(f"{where}: image file not found: {image}")
    facts = rec.get("facts") or []
    if not isinstance(facts, list) or not all(isinstance(f, dict) and isinstance(f.get("key"), str)
                                               and isinstance(f.get("text"), str) for f in facts):
        raise InputError(f"{where}: 'facts' must be a list of {{\"key\", \"text\"}} objects")
    out = dict(rec)
    out.update(task=" ".join(task.split()), robots=keys, image=image, facts=facts,
               image_decides=bool(rec.get("image_decides", False)))
    for k in ("id", "env", "rationale", "split"):
        out.setdefault(k, None)
    if out["image_decides"] and image is None:
        raise InputError(f"{where}: 'image_decides' is true but there is no image")
    return out


def load_task_records(path: str | Path, catalog: RobotCatalog | None = None, skip_bad: bool = False,
                      report: LoadReport | None = None) -> list[dict]:
    """Task records from a JSON list or a JSONL file.

    With skip_bad=False (default) the first bad record raises InputError naming its line;
    with skip_bad=True bad records are left out and listed in `report` (pass a LoadReport).
    Image paths are resolved relative to the file and must exist.
    """
    p = Path(path)
    cat = catalog or RobotCatalog.load()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"task record file not found: {p}") from None
    report = report if report is not None else LoadReport()
    items: list[tuple[str, object]] = []
    stripped = text.lstrip()
    if p.suffix.lower() == ".json" or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(data, list):
            raise InputError(f"{p}: a JSON task file must hold a list of records")
        items = [(f"{p} record {i}", rec) for i, rec in enumerate(data)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                items.append((f"{p} line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                msg = f"{p} line {n}: not valid JSON ({e.msg})"
                if not skip_bad:
                    raise InputError(msg) from None
                report.skipped.append(msg)
    out = []
    for where, rec in items:
        try:
            out.append(normalise_record(rec, where, cat, p.parent))
        except InputError as e:
            if not skip_bad:
                raise
            report.skipped.append(str(e))
    report.loaded = len(out)
    return out
