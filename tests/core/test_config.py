"""BitGenConfig: presets of the seeds, validation, JSON/YAML round trips."""
import pytest

from bitgen_core.config import PRESETS, BitGenConfig
from bitgen_core.errors import InputError


@pytest.mark.parametrize("name,d,layers", [("nano", 64, 2), ("tiny", 128, 4), ("small", 256, 6)])
def test_presets_match_the_seeds(name, d, layers):
    cfg = BitGenConfig.preset(name)
    assert (cfg.d_model, cfg.n_layers, cfg.name) == (d, layers, name)
    assert cfg.d_model % cfg.n_heads == 0 and cfg.head_dim % 2 == 0
    # cross-attention to the image lives in the upper half of the layers
    assert cfg.cross_attn_layers == list(range(layers // 2, layers))
    assert cfg.reasoning_max_steps == 8 and cfg.n_sink == 4


def test_preset_overrides_and_unknown_preset():
    cfg = BitGenConfig.preset("tiny", window=256, ponder_weight=0.05)
    assert cfg.window == 256 and cfg.ponder_weight == 0.05 and cfg.d_model == 128
    with pytest.raises(InputError, match="unknown preset"):
        BitGenConfig.preset("huge")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_round_trip(tmp_path, suffix):
    cfg = BitGenConfig.preset("small", cross_attn_layers=[1, 5], extra={"data": "gen-v1"})
    path = tmp_path / f"config{suffix}"
    cfg.save(path)
    again = BitGenConfig.load(path)
    assert again == cfg
    assert again.cross_attn_layers == [1, 5] and again.extra == {"data": "gen-v1"}


def test_string_round_trips():
    cfg = BitGenConfig.preset("nano")
    assert BitGenConfig.from_json(cfg.to_json()) == cfg
    assert BitGenConfig.from_yaml(cfg.to_yaml()) == cfg


def test_yaml_file_may_name_a_preset(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: nano\nwindow: 200\n")
    cfg = BitGenConfig.load(path)
    assert cfg.d_model == 64 and cfg.window == 200 and cfg.name == "nano"


@pytest.mark.parametrize("bad,match", [
    (dict(d_model=100, n_heads=3), "divisible"),
    (dict(cross_attn_layers=[7]), "out of range"),
    (dict(vision_kind="resnet"), "vision_kind"),
    (dict(window=8), "exceed the sink cache"),
    (dict(halting_eps=1.5), "halting_eps"),
    (dict(bogus=1), "unknown BitGen config keys"),
    (dict(memory_address_dims=200), "memory_address_dims"),
    (dict(memory_address_dims=8), "memory_address_dims"),     # fewer than the 32 slots
])
def test_invalid_configs_are_refused_with_a_reason(bad, match):
    with pytest.raises(InputError, match=match):
        BitGenConfig.from_dict({**BitGenConfig.preset("tiny").to_dict(), **bad})


def test_derived_sizes():
    cfg = BitGenConfig.preset("tiny")
    assert cfg.prompt_len == 1 + cfg.n_memory_tokens + cfg.max_task_tokens + 1
    assert cfg.cache_len == cfg.n_sink + cfg.window
    assert cfg.ffn_hidden % 16 == 0 and cfg.ffn_hidden >= 2 * cfg.d_model
    assert set(PRESETS) == {"nano", "tiny", "small"}


def test_yaml_scalars_are_cast_to_their_field_types(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny\nmemory_obs_noise: 1e-6\nponder_weight: 1\n")
    cfg = BitGenConfig.load(path)
    assert cfg.memory_obs_noise == 1e-6 and isinstance(cfg.ponder_weight, float)
    with pytest.raises(InputError, match="d_model must be int"):
        BitGenConfig.preset("tiny", d_model="wide")
