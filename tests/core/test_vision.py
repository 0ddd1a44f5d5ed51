"""Vision encoders: pretrained offline EfficientNet-Lite0, frozen backbones, ternary student,
DINOv2 (+LoRA) from a config and from a local path, shared torch-free preprocessing, ONNX."""

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from bitgen_core.image_preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess, preprocess_batch
from bitgen_core.quant import set_export_mode
from bitgen_core.vision import (DINOv2Encoder, EfficientNetLite0Encoder, LoRALinear, TernaryConv2d,
                                TernaryStudentEncoder, adaptive_pool_matrix, build_vision_encoder,
                                export_vision_onnx, load_efficientnet_lite0, merge_lora)

torch.set_num_threads(1)
D = 32
MILITARY_UNIFORM, DAISY = 652, 985  # ImageNet-1k class indices


@pytest.fixture(scope="module")
def lite0():
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.manual_seed(0)
    return EfficientNetLite0Encoder(D, n_tokens=16)


def _photo(name: str) -> np.ndarray:
    if name == "grace_hopper.jpg":
        cbook = pytest.importorskip("matplotlib.cbook")
        return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_sample_image(name)


def _tiny_dinov2_config():
    from transformers import Dinov2Config
    return Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=56, patch_size=14)


def _ort_session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------- preprocessing
def test_preprocess_module_never_imports_torch():
    code = "import sys, bitgen_core.image_preprocess; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.getcwd()).returncode == 0


def test_preprocess_uses_tf_lite_normalisation_and_layout():
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 127, 255, 0
    x = preprocess(img, size=8)
    assert x.shape == (3, 8, 8) and x.dtype == np.float32
    # (pixel - 127) / 128, channel-first, RGB order kept
    np.testing.assert_allclose(x[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(x[1], 128 / 128, atol=1e-6)
    np.testing.assert_allclose(x[2], -127 / 128, atol=1e-6)


def test_preprocess_resize_is_pillow_bilinear_and_drops_alpha():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (50, 70, 4), dtype=np.uint8)
    want = np.asarray(Image.fromarray(np.ascontiguousarray(rgba[..., :3])).resize((32, 32), Image.BILINEAR, reducing_gap=1.0))
    want = (want.astype(np.float32) / 255 - 127 / 255) / (128 / 255)
    np.testing.assert_allclose(preprocess(rgba, 32), want.transpose(2, 0, 1), atol=1e-5)
    batch = preprocess_batch([rgba[..., :3], rgba[:10, :10, :3]], 32)
    assert batch.shape == (2, 3, 32, 32)
    x = preprocess(rgba, 32, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    np.testing.assert_allclose(x[0], (want[..., 0] * 128 / 255 + 127 / 255 - 0.485) / 0.229, atol=1e-4)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                 np.zeros((8, 8, 2), np.uint8), np.zeros((0, 8, 3), np.uint8), [[1, 2, 3]]])
def test_preprocess_rejects_malformed_frames(bad):
    with pytest.raises(ValueError):
        preprocess(bad)


# ----------------------------------------------------------------- EfficientNet-Lite0
def test_pretrained_lite0_recognises_real_photos_through_shared_preprocess():
    """Offline ImageNet weights + our preprocessing give the right labels on real photos; the
    flower is only 'daisy' with the TF normalisation (ImageNet stats give 'honeycomb')."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    net = load_efficientnet_lite0().eval()
    photos = {"grace_hopper.jpg": MILITARY_UNIFORM, "flower.jpg": DAISY}
    for name, label in photos.items():
        x = torch.from_numpy(preprocess(_photo(name)))[None]
        with torch.no_grad():
            probs = net(x).softmax(-1)[0]
        assert int(probs.argmax()) == label, name
    x_imagenet = torch.from_numpy(preprocess(_photo("flower.jpg"), mean=IMAGENET_MEAN, std=IMAGENET_STD))[None]
    with torch.no_grad():
        assert int(net(x_imagenet).argmax()) != DAISY


def test_lite0_encoder_features_are_pretrained_and_deterministic(lite0):
    x = torch.from_numpy(preprocess_batch([_photo("flower.jpg"), _photo("china.jpg")]))
    f1, f2 = lite0.features(x), lite0.features(x)
    assert f1.shape == (2, 1280, 7, 7)
    assert torch.equal(f1, f2)
    reference = load_efficientnet_lite0().eval()
    with torch.no_grad():
        assert torch.equal(f1, reference.extract_features(x))
    random_init = EfficientNetLite0Encoder(D, pretrained=False)
    fr = random_init.features(x)
    cos = F.cosine_similarity(f1.flatten(1), fr.flatten(1), dim=1)
    assert (cos < 0.9).all()
    # pretrained features separate the two photos far more than their pixel statistics would
    assert F.cosine_similarity(f1[0].flatten(), f1[1].flatten(), dim=0) < 0.8


def test_frozen_backbone_gets_no_gradient_and_keeps_bn_in_eval(lite0):
    parent = nn.ModuleDict({"vision": lite0, "head": nn.Linear(D, 1)})
    parent.train()
    assert lite0.training and not lite0.backbone.training
    bns = [m for m in lite0.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    lite0.zero_grad(set_to_none=True)
    out = parent["head"](lite0(torch.randn(2, 3, 224, 224) * 2)).sum()
    out.backward()
    assert all(p.grad is None and not p.requires_grad for p in lite0.backbone.parameters())
    assert lite0.pool.proj.weight.grad is not None and lite0.pool.proj.weight.grad.abs().sum() > 0
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, bns))


def test_unfrozen_lite0_trains_its_backbone():
    enc = EfficientNetLite0Encoder(D, n_tokens=4, frozen=False).train()
    assert enc.backbone.training
    enc(torch.randn(2, 3, 64, 64)).sum().backward()
    assert enc.backbone._conv_stem.weight.grad is not None


# ----------------------------------------------------------------- shared pieces
@pytest.mark.parametrize("hw,out", [((7, 7), 4), ((14, 14), 4), ((5, 9), 3), ((4, 4), 2)])
def test_pool_matrix_equals_adaptive_avg_pool(hw, out):
    x = torch.randn(2, 3, *hw)
    got = (x.flatten(2) @ adaptive_pool_matrix(*hw, out, out).t()).view(2, 3, out, out)
    torch.testing.assert_close(got, F.adaptive_avg_pool2d(x, out), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_tokens", [16, 9])
def test_every_kind_maps_images_to_tokens(n_tokens):
    encoders = {
        "efficientnet_lite0": (build_vision_encoder("efficientnet_lite0", D, n_tokens), 224),
        "ternary_student": (build_vision_encoder("ternary_student", D, n_tokens), 96),
        "dinov2": (build_vision_encoder("dinov2", D, n_tokens, config=_tiny_dinov2_config()), 56),
    }
    for kind, (enc, size) in encoders.items():
        out = enc(torch.randn(3, 3, size, size))
        assert out.shape == (3, n_tokens, D), kind
        assert torch.isfinite(out).all(), kind


def test_factory_rejects_unknown_kind_and_bad_token_count():
    with pytest.raises(ValueError, match="unknown vision encoder"):
        build_vision_encoder("resnet", D, 16)
    with pytest.raises(ValueError, match="perfect square"):
        TernaryStudentEncoder(D, n_tokens=10)


# ----------------------------------------------------------------- ternary student
def test_student_convs_are_ternary_and_ste_reaches_latent_weights():
    enc = TernaryStudentEncoder(D)
    conv = next(m for m in enc.modules() if isinstance(m, TernaryConv2d))
    from bitgen_core.quant import weight_quant
    w = weight_quant(conv.weight.detach())
    gamma = conv.weight.detach().abs().mean()
    assert set(torch.unique(torch.round(w / gamma)).tolist()) <= {-1.0, 0.0, 1.0}
    enc(torch.randn(2, 3, 64, 64)).pow(2).mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_student_distills_from_pretrained_teacher(lite0):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    photos = [_photo("flower.jpg"), _photo("china.jpg"), _photo("grace_hopper.jpg")]
    crops = [p[y:y + 160, x:x + 160] for p in photos for y, x in rng.integers(0, 200, (4, 2))]
    images = torch.from_numpy(preprocess_batch(crops, 96))
    lite0.eval()
    with torch.no_grad():
        teacher = lite0(images)
    student = TernaryStudentEncoder(D)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = student.distill_loss(student(images), teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError):
        student.distill_loss(torch.zeros(2, 16, D), torch.zeros(2, 9, D))


def test_distill_loss_never_moves_the_teacher():
    t = torch.randn(2, 4, D, requires_grad=True)
    s = torch.randn(2, 4, D, requires_grad=True)
    TernaryStudentEncoder.distill_loss(s, t).backward()
    assert t.grad is None and s.grad is not None
    assert TernaryStudentEncoder.distill_loss(3 * t.detach() + 1, t.detach()) < 1e-6  # scale-free


# ----------------------------------------------------------------- DINOv2 + LoRA
def test_dinov2_from_config_and_from_saved_local_path(tmp_path):
    torch.manual_seed(0)
    enc = DINOv2Encoder(D, config=_tiny_dinov2_config())
    enc.backbone.save_pretrained(tmp_path / "dino")
    os.environ["HF_HUB_OFFLINE"] = "1"
    loaded = build_vision_encoder("dinov2", D, 16, model_path=str(tmp_path / "dino"))
    loaded.pool.load_state_dict(enc.pool.state_dict())
    x = torch.randn(2, 3, 56, 56)
    assert loaded.image_size == 56 and loaded.preprocess_mean == IMAGENET_MEAN
    torch.testing.assert_close(loaded(x), enc(x), atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in loaded.backbone.parameters())
    with pytest.raises(FileNotFoundError):
        DINOv2Encoder(D, model_path=str(tmp_path / "missing"))


def test_lora_at_init_equals_base_and_only_lora_trains_in_backbone():
    torch.manual_seed(0)
    base = DINOv2Encoder(D, config=_tiny_dinov2_config())
    lora = DINOv2Encoder(D, config=_tiny_dinov2_config(), lora_rank=4, lora_alpha=8)
    lora.backbone.load_state_dict(base.backbone.state_dict(), strict=False)
    lora.pool.load_state_dict(base.pool.state_dict())
    # base weights live at <name>.base.* inside the LoRA wrappers
    for name, m in lora.backbone.named_modules():
        if isinstance(m, LoRALinear):
            src = base.backbone.get_submodule(name)
            m.base.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 56, 56)
    assert torch.equal(lora(x), base(x))

    trainable = [n for n, p in lora.backbone.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 2 * 2  # (A, B) x (query, value) x 2 layers
    assert all(n.endswith(("lora_a", "lora_b")) for n in trainable)

    lora.train()
    assert not lora.backbone.training
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    lora(x).pow(2).mean().backward()
    assert all(p.grad is None for n, p in lora.backbone.named_parameters() if "lora" not in n)
    opt.step()
    lora.eval()
    with torch.no_grad():
        trained = lora(x)
        assert not torch.allclose(trained, base(x))
        merged = merge_lora(lora)
        assert not any(isinstance(m, LoRALinear) for m in merged.modules())
        torch.testing.assert_close(merged(x), trained, atol=1e-5, rtol=0)


# ----------------------------------------------------------------- ONNX
class _TokensAndFeatures(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x):
        fmap = self.enc.features(x)
        return self.enc.pool(fmap), fmap


def test_lite0_encoder_onnx_matches_torch(lite0, tmp_path):
    """The exported graph reproduces torch. Checked as a chain because BitLinear rounds
    activations to int8: a 1e-6 backbone difference (different conv kernels) can move one value
    across a rounding boundary and shift a token by one quantisation step (~7e-4), so the
    projection is compared on onnxruntime's own backbone output."""
    path = export_vision_onnx(lite0, str(tmp_path / "vision.onnx"))
    assert ort.InferenceSession(path).get_inputs()[0].shape[1:] == [3, 224, 224]
    lite0.eval()
    wrapped = _TokensAndFeatures(lite0).eval()
    both = str(tmp_path / "both.onnx")
    torch.onnx.export(wrapped, (torch.zeros(1, 3, 224, 224),), both, input_names=["images"],
                      output_names=["tokens", "fmap"], dynamic_axes={"images": {0: "b"}}, opset_version=17,
                      dynamo=False)
    x = torch.from_numpy(preprocess_batch([_photo("flower.jpg"), _photo("china.jpg")]))
    tokens, fmap = _ort_session(both).run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(fmap, lite0.features(x).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(tokens, lite0.pool(torch.from_numpy(fmap)).numpy(), atol=1e-4, rtol=0)
        # and the shipped single-output graph computes the same tokens
        single = _ort_session(path).run(None, {"images": x.numpy()})[0]
        np.testing.assert_allclose(single, tokens, atol=1e-6, rtol=0)


def _export_chain(enc, path):
    wrapped = _TokensAndFeatures(enc).eval()
    size = enc.image_size
    torch.onnx.export(wrapped, (torch.zeros(1, 3, size, size),), path, input_names=["images"],
                      output_names=["tokens", "fmap"], dynamic_axes={"images": {0: "b"}}, opset_version=17,
                      dynamo=False)
    return _ort_session(path)


@pytest.mark.parametrize("export_mode", [False, True])
def test_student_and_dinov2_onnx_match_torch(tmp_path, export_mode):
    torch.manual_seed(0)
    encoders = {"student": TernaryStudentEncoder(D),
                "dinov2": DINOv2Encoder(D, config=_tiny_dinov2_config(), lora_rank=2)}
    for name, enc in encoders.items():
        enc.train()
        enc(torch.randn(4, 3, enc.image_size, enc.image_size))  # move BN running stats off init
        set_export_mode(enc, export_mode)
        export_vision_onnx(enc, str(tmp_path / f"{name}.onnx"))
        x = torch.randn(3, 3, enc.image_size, enc.image_size)
        with torch.no_grad():
            tokens, fmap = _export_chain(enc, str(tmp_path / f"{name}_chain.onnx")).run(None, {"images": x.numpy()})
            np.testing.assert_allclose(fmap, enc.eval().features(x).numpy(), atol=1e-4, rtol=0, err_msg=name)
            np.testing.assert_allclose(tokens, enc.pool(torch.from_numpy(fmap)).numpy(), atol=1e-4, rtol=0,
                                       err_msg=name)
            single = _ort_session(str(tmp_path / f"{name}.onnx")).run(None, {"images": x.numpy()})[0]
            np.testing.assert_allclose(single, tokens, atol=1e-6, rtol=0, err_msg=name)


def test_ternary_conv_graph_is_bit_exact_in_onnxruntime(tmp_path):
    """conv on integer codes, rescaled after: torch and onnxruntime agree to float rounding."""
    torch.manual_seed(1)
    conv = TernaryConv2d(8, 16, 3, padding=1, bias=False).eval()
    path = str(tmp_path / "conv.onnx")
    torch.onnx.export(conv, (torch.zeros(1, 8, 12, 12),), path, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        want = conv(x).numpy()
    got = _ort_session(path).run(None, {"x": x[:1].numpy()})[0]
    np.testing.assert_allclose(got, want[:1], atol=1e-6, rtol=1e-6)
