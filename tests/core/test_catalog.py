"""The fleet catalog is data: loading, lookup by key/name/alias, a 6th robot by catalog edit."""
import pytest
import yaml

from bitgen_core.catalog import DEFAULT_CATALOG_PATH, Robot, RobotCatalog
from bitgen_core.errors import InputError


def test_default_catalog_has_the_five_design_robots():
    cat = RobotCatalog.load()
    assert cat.names == ["Drone", "Underwater Robot", "Humanoid", "Robot with Wheels", "Robot with Legs"]
    assert all(len(r.description) > 40 for r in cat)
    assert "aerial" in cat.get("drone").text().lower()


def test_lookup_by_key_name_and_alias():
    cat = RobotCatalog.load()
    assert cat.index("legged") == cat.index("Robot with Legs") == cat.index("quadruped") == 4
    assert cat.multi_hot(["drone", "Humanoid"]) == [1.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(InputError, match="unknown robot"):
        cat.index("submarine tank")


def test_sixth_robot_is_a_catalog_edit(tmp_path):
    data = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())
    data["robots"].append({"key": "arm", "name": "Robotic Arm",
                           "description": "A fixed industrial arm for pick and place on a workcell."})
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    cat = RobotCatalog.load(p)
    assert len(cat) == 6 and cat.keys[-1] == "arm"
    assert cat.fingerprint() != RobotCatalog.load().fingerprint()
    same = RobotCatalog.load().with_robot(Robot("arm", "Robotic Arm", "A fixed industrial arm."))
    assert same.keys == cat.keys


@pytest.mark.parametrize("text,msg", [
    ("robots: []", "empty"),
    ("robots: [{key: a, name: A}]", "lacks description"),
    ("robots:\n - {key: a, name: A, description: x}\n - {key: a, name: B, description: y}", "duplicate"),
    ("[1, 2", "unreadable"),
])
def test_bad_catalogs_are_refused_clearly(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=msg):
        RobotCatalog.load(p)


def test_missing_catalog_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        RobotCatalog.load(tmp_path / "nope.yaml")
