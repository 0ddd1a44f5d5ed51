"""memory_probe: each fact's coefficient and read share per query kind, on the exported nano model."""
import json

from training import memory_probe

CASE = {"id": "m1", "kind": "flooded", "fact": {"key": "zone-B-flooded", "text": "zone B of the warehouse is flooded"},
        "task": "check the racking in zone B of the warehouse", "robots_before": ["wheeled"],
        "robots_after": ["underwater"], "task_paraphrase": "inspect the warehouse's zone B racks",
        "unrelated_task": "check the racking in zone D of the warehouse", "unrelated_robots": ["wheeled"]}


def test_probe_reports_coefficients_and_shares_per_query_kind(exported, tmp_path, capsys):
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(CASE) + "\n" + json.dumps({**CASE, "id": "m2", "fact": {
        "key": "drone-status", "text": "the drone is grounded"}}) + "\n")
    out = tmp_path / "probe.json"
    assert memory_probe.main(["--model-dir", str(exported.directory), "--memory-cases", str(cases),
                              "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["gate"] > 0 and len(res["rows"]) == 6
    assert {r["query"] for r in res["rows"]} == {"task", "paraphrase", "unrelated"}
    assert {r["fact"] for r in res["rows"]} == {"site", "availability"}
    for r in res["rows"]:
        assert 0 <= r["share"] <= 1       # gated: the share is sigmoid(k (a - t))
    assert res["summary"]["all/task"]["n"] == 2 and res["summary"]["site/unrelated"]["n"] == 1
    # the fixture's scope: "zone b" names the place, so the zone-D job is out of the fact's scope
    site = {r["query"]: r["scope"] for r in res["rows"] if r["fact"] == "site"}
    assert site["unrelated"] < 0.01 and site["task"] > 0.5 and site["paraphrase"] > 0.5
    assert "all/unrelated" in capsys.readouterr().out
