"""BitGenConfig: every size and knob of the model, as data (torch-free).

A config is a flat dataclass so it round-trips through JSON/YAML unchanged and can be
written next to a checkpoint or an exported model. Presets follow the seeds:
nano / tiny / small = 64 / 128 / 256 dims with 2 / 4 / 6 layers.

    cfg = BitGenConfig.preset("tiny", window=256)
    cfg.save("config.yaml"); BitGenConfig.load("config.yaml") == cfg
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from bitgen_core.errors import InputError

# BERT / all-MiniLM-L6-v2 WordPiece vocabulary (ids kept identical so MiniLM's embedding
# rows can seed ours one for one).
MINILM_VOCAB_SIZE = 30522

VISION_KINDS = ("efficientnet_lite0", "ternary_student", "dinov2", "none")


@dataclass
class BitGenConfig:
    # --- backbone -----------------------------------------------------------------------
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_mult: float = 8 / 3          # SwiGLU hidden = ffn_mult * d (LLaMA/BitNet b1.58 choice)
    vocab_size: int = MINILM_VOCAB_SIZE
    rope_base: float = 10000.0
    dropout: float = 0.0
    tie_embeddings: bool = True      # output head shares the (MiniLM-seeded) embedding matrix
    # --- sequence / streaming -----------------------------------------------------------
    max_task_tokens: int = 48        # task text after tokenisation (longer tasks are cut)
    max_trace_tokens: int = 48       # reasoning trace length used in training
    n_sink: int = 4                  # StreamingLLM attention-sink tokens kept forever
    window: int = 128                # rolling KV window behind the sinks
    # --- episodic memory (Larimar) ------------------------------------------------------
    n_memory_slots: int = 32         # K
    memory_dim: int = 128            # C (fact/query encoding size)
    n_memory_tokens: int = 4         # prefix tokens produced from one memory read
    memory_obs_noise: float = 1e-6   # variance added on write (keeps the LS solve regular)
    # RMSNorm the memory read before the prefix projection (BitLinear's usual input norm).
    # True only for checkpoints trained before it existed: the norm erases the read's
    # magnitude, i.e. how strongly the stored facts address this query (the Larimar
    # coefficient a_i = w_q C^-1 w_i^T), so a weakly related fact moved the prefix as much as
    # a relevant one. The presets set False: the prefix sees the read as it is.
    memory_read_norm: bool = True
    # Relevance gate on the read (0 = the plain linear Larimar read, what checkpoints before it
    # were trained with). The read is z_r = lam w C^-1 M0 + sum_i a_i z_i with a_i = w C^-1 w_i^T
    # a least-squares coefficient, i.e. a bilinear similarity of the query's and the fact's
    # encodings. A site fact applies when zone AND site match; a bilinear form of additive
    # encodings cannot express that conjunction (the same site in another zone keeps the
    # site's share of a_i). With a gate k > 0 each fact enters as g(a_i) z_i,
    # g(a) = sigmoid(k (a - t)): a fact counts only once its coefficient clears t.
    memory_gate: float = 0.0
    memory_gate_threshold: float = 0.5
    # Lexical memory key: the fact/query encoding z = memory_key([mean-pooled backbone state,
    # max-pooled token embeddings]) instead of memory_key(mean-pooled state). The backbone's
    # pooled state barely tells "pumps in zone B" from "pumps in zone D" (a fact's cosine to its
    # own task beat its cosine to the dev memory cases' unrelated probes in 11 of 18 site cases),
    # the frozen token embeddings do (18 of 18 after removing the mean of the dev tasks), so a
    # site fact's address can follow the words it names. False: what checkpoints before it had.
    memory_lexical: bool = False
    # Address / content split of the fact encoding z (C): the fixed keys address with the
    # first memory_address_dims coordinates only, the read returns all C (memory_np.make_keys).
    # 0: the whole z is both address and content (checkpoints before it). A relevance loss on
    # a shared z pulled availability facts' content towards what all tasks share (v3: their
    # efficacy 9 -> 3 of 14, reports/retrain_v3); split, the address can be trained alone.
    memory_address_dims: int = 0
    # Scope of the memory read (memory_np module doc): a per-token specificity alpha =
    # softplus(w . e_t + b + beta_t) (e_t the token's embedding, beta_t a per-token offset), and
    # a fact's share of the read scaled by exp(-sum of alpha over its tokens the task does not
    # contain). Facts that name a place count for tasks that name it; facts whose words are
    # all unspecific ("the drone is grounded") count for every task. Trained in stage 2 against
    # the episodes' `applies` labels (sft.scope_weight). False: every fact counts for every task.
    memory_scope: bool = False
    # Recall read (memory_np module doc): every stored fact enters the read with its own
    # encoding, times its scope, instead of times its address's similarity to the query's
    # (which left some availability facts unread: a ~ 0 for tasks worded unlike them).
    memory_recall: bool = False
    # Fact-to-robot term of the selector (selector.py): the facts' part of the memory read,
    # z_read minus the read of an empty memory, projected into the robot-embedding space and
    # scored against each robot's embedding, added to that robot's logit. An availability fact
    # ("the robot dog is broken") can then act on the robot its words describe, and on no
    # other; the prefix path alone learned a fixed substitute (legged out -> humanoid, also for
    # tasks the legged robot had no part in). Zero with no facts, and zero at init (a gate).
    memory_robot: bool = False
    # --- vision -------------------------------------------------------------------------
    vision_kind: str = "efficientnet_lite0"
    n_image_tokens: int = 16
    # Side of the square camera frame the encoder sees. EfficientNet-Lite0's cost grows with
    # its square: 11.4 / 8.7 / 6.3 / 4.4 ms at 224 / 192 / 160 / 128 on one thread here
    # (onnxruntime, `reports/vision_size`). DINOv2 keeps its own 224.
    image_size: int = 224
    cross_attn_layers: list[int] | None = None   # None -> upper half of the layers
    # --- Tiny-R1 reasoning (ACT) --------------------------------------------------------
    reasoning_max_steps: int = 8
    ponder_weight: float = 0.01      # tau of Graves (2016): loss += tau * (N + R)
    halting_eps: float = 0.01        # halt once the cumulative halting prob reaches 1 - eps
    halting_bias_init: float = -1.0  # p_halt ~ 0.27 at init: the model starts by thinking a few steps
    # --- robot selector -----------------------------------------------------------------
    robot_embed_dim: int = 64
    selector_scale_init: float = 10.0
    # --- bookkeeping --------------------------------------------------------------------
    quantize: bool = True            # False: same model with full-precision linears (fp32 twin)

    name: str = "custom"
    extra: dict = field(default_factory=dict)   # free-form notes (training data, etc.)

    def __post_init__(self) -> None:
        if self.cross_attn_layers is None:
            self.cross_attn_layers = list(range(self.n_layers // 2, self.n_layers))
        else:
            self.cross_attn_layers = [int(i) for i in self.cross_attn_layers]
        self.validate()

    # --- derived ------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        # round up to a multiple of 16 so the int8 kernels see aligned shapes
        return int(-(-int(self.ffn_mult * self.d_model) // 16) * 16)

    @property
    def prefix_len(self) -> int:
        """Tokens before the task: the learned sink token and the memory prefix."""
        return 1 + self.n_memory_tokens

    @property
    def prompt_len(self) -> int:
        """Prefill length: [SINK][memory tokens][task tokens][SEP]."""
        return self.prefix_len + self.max_task_tokens + 1

    @property
    def cache_len(self) -> int:
        return self.n_sink + self.window

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise InputError(f"invalid BitGen config: {msg}")
        need(self.d_model > 0 and self.n_layers > 0 and self.n_heads > 0,
             "d_model, n_layers and n_heads must be positive")
        need(self.d_model % self.n_heads == 0,
             f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        need(self.head_dim % 2 == 0, "head_dim must be even for rotary embeddings")
        need(self.vocab_size > 0, "vocab_size must be positive")
        need(self.max_task_tokens > 0 and self.max_trace_tokens > 0, "token limits must be positive")
        need(self.n_sink >= 1 and self.window >= 1, "n_sink and window must be at least 1")
        # Training sees whole prompts+traces with full attention; the streaming cache must hold
        # them so decode-step equals teacher forcing within the trained length.
        need(self.prompt_len + self.max_trace_tokens <= self.cache_len,
             f"prompt ({self.prompt_len}) + trace ({self.max_trace_tokens}) tokens exceed the "
             f"sink cache ({self.n_sink} + {self.window}); raise window")
        need(self.n_memory_slots > 0 and self.memory_dim > 0, "memory sizes must be positive")
        need(self.n_memory_tokens >= 1, "n_memory_tokens must be at least 1")
        need(self.memory_gate >= 0, "memory_gate must be >= 0 (0: linear read)")
        need(0 <= self.memory_address_dims <= self.memory_dim
             and (self.memory_address_dims == 0 or self.memory_address_dims >= self.n_memory_slots),
             "memory_address_dims must be 0 (all of z) or between n_memory_slots and memory_dim")
        need(self.vision_kind in VISION_KINDS,
             f"vision_kind {self.vision_kind!r} is not one of {', '.join(VISION_KINDS)}")
        need(self.image_size % 32 == 0 and 64 <= self.image_size <= 512,
             "image_size must be a multiple of 32 in 64..512 (the encoders downsample by 32)")
        side = int(round(self.n_image_tokens ** 0.5))
        need(self.n_image_tokens >= 1 and side * side == self.n_image_tokens,
             "n_image_tokens must be a perfect square (the image is pooled onto a grid)")
        need(all(0 <= i < self.n_layers for i in self.cross_attn_layers),
             f"cross_attn_layers {self.cross_attn_layers} out of range for {self.n_layers} layers")
        need(1 <= self.reasoning_max_steps <= 64, "reasoning_max_steps must be in 1..64")
        need(self.ponder_weight >= 0, "ponder_weight must be >= 0")
        need(0 < self.halting_eps < 1, "halting_eps must be in (0, 1)")
        need(self.robot_embed_dim > 0, "robot_embed_dim must be positive")

    # --- presets ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "BitGenConfig":
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        base = dict(PRESETS[name], name=name)
        base.update(overrides)
        return cls.from_dict(base)

    # --- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BitGenConfig":
        if not isinstance(data, dict):
            raise InputError("BitGen config must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown BitGen config keys: {', '.join(unknown)}")
        if "preset" in data:
            raise InputError("use BitGenConfig.preset(name) rather than a 'preset' key")
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{k: _coerce(k, types[k], v) for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BitGenConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> "BitGenConfig":
        return cls.from_dict(yaml.safe_load(text))

    def save(self, path: str | Path) -> None:
        p = Path(path)
        text = self.to_yaml() if p.suffix in (".yaml", ".yml") else self.to_json()
        p.write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "BitGenConfig":
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot read BitGen config {p}: {e.strerror or e}") from None
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise InputError(f"BitGen config {p} is not valid YAML/JSON: {e}".splitlines()[0]) from None
        if isinstance(data, dict) and "preset" in data:
            name = data.pop("preset")
            return cls.preset(name, **data)
        return cls.from_dict(data)

    def replace(self, **changes) -> "BitGenConfig":
        return replace(self, **changes)


def _coerce(key: str, type_name: str, value):
    """YAML 1.1 reads `1e-6` as a string and users write `8` for floats: cast scalars."""
    caster = {"int": int, "float": float, "str": str}.get(type_name)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise InputError(f"BitGen config key {key} must be true or false, got {value!r}")
        return value
    if caster is None:
        return value
    try:
        return caster(value)
    except (TypeError, ValueError):
        raise InputError(f"BitGen config key {key} must be {type_name}, got {value!r}") from None


# Seed presets: nano for tests and the Pi's smallest budget, tiny is the shipped default,
# small when there is compute to spare. Memory/selector sizes scale with the width.
PRESETS: dict[str, dict] = {
    "nano": dict(d_model=64, n_layers=2, n_heads=2, memory_dim=64, n_memory_slots=16,
                 n_memory_tokens=2, n_image_tokens=9, robot_embed_dim=32, memory_read_norm=False,
                 memory_gate=12.0),
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, memory_dim=128, n_memory_slots=32,
                 n_memory_tokens=4, n_image_tokens=16, robot_embed_dim=64, memory_read_norm=False,
                 memory_gate=12.0),
    "small": dict(d_model=256, n_layers=6, n_heads=8, memory_dim=256, n_memory_slots=64,
                  n_memory_tokens=4, n_image_tokens=16, robot_embed_dim=128, memory_read_norm=False,
                  memory_gate=12.0),
}
