"""Loaders: COCO captions and JSON/JSONL task records, with clear errors naming the line."""
import json

import pytest

from bitgen_core.data.loaders import LoadReport, load_coco_captions, load_task_records
from bitgen_core.errors import InputError


def test_coco_captions(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "a  dog on a  beach"},
                            {"id": 11, "image_id": 2, "caption": "a drone over a roof"},
                            {"id": 12, "image_id": 1, "caption": "sand and sea"}]}
    p = tmp_path / "captions.json"
    p.write_text(json.dumps(data))
    pairs = load_coco_captions(p, tmp_path / "imgs")
    assert pairs == [(str(tmp_path / "imgs" / "a.png"), "a dog on a beach"),
                     (str(tmp_path / "imgs" / "b.png"), "a drone over a roof"),
                     (str(tmp_path / "imgs" / "a.png"), "sand and sea")]
    data["annotations"].append({"id": 13, "image_id": 99, "caption": "ghost"})
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"annotations\[3\].*unknown image_id 99"):
        load_coco_captions(p)
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_coco_captions(p)


def _jsonl(tmp_path, lines):
    p = tmp_path / "tasks.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_jsonl_good_records_resolve_names_and_images(tmp_path):
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    p = _jsonl(tmp_path, [
        json.dumps({"task": "survey the roof", "robots": ["Drone"]}),
        "",
        json.dumps({"task": "inspect the area shown", "robots": ["quadruped", "uav"], "image": "img.png",
                    "image_decides": True}),
    ])
    recs = load_task_records(p)
    assert [r["robots"] for r in recs] == [["drone"], ["legged", "drone"]]
    assert recs[1]["image"] == str(tmp_path / "img.png") and recs[1]["image_decides"]
    assert recs[0]["facts"] == [] and recs[0]["image"] is None


@pytest.mark.parametrize("bad,msg", [
    ('{"task": "x", "robots": ["submarine tank"]}', "line 2: unknown robot"),
    ('{"task": "", "robots": ["drone"]}', "line 2: 'task' must be"),
    ('{"task": "x", "robots": []}', "line 2: 'robots' must list 1 to 3"),
    ('{"task": "x", "robots": ["drone", "uav"]}', "line 2: robot 'uav' is listed twice"),
    ('{"task": "x", "robots": ["drone"], "image": "missing.png"}', "line 2: image file not found"),
    ('{"task": "x", "robots": ["drone"]', "line 2: not valid JSON"),
])
def test_jsonl_bad_lines_name_the_line(tmp_path, bad, msg):
    p = _jsonl(tmp_path, [json.dumps({"task": "ok", "robots": ["wheeled"]}), bad])
    with pytest.raises(InputError, match=msg):
        load_task_records(p)
    report = LoadReport()
    recs = load_task_records(p, skip_bad=True, report=report)
    assert len(recs) == 1 and report.loaded == 1 and len(report.skipped) == 1 and "line 2" in report.skipped[0]


def test_json_list_names_the_record(tmp_path):
    p = tmp_path / "tasks.json"
    p.write_text(json.dumps([{"task": "a", "robots": "humanoid"}, {"task": "b", "robots": ["nobody"]}]))
    with pytest.raises(InputError, match="record 1: unknown robot"):
        load_task_records(p)
    assert load_task_records(p, skip_bad=True)[0]["robots"] == ["humanoid"]
