"""Gemma 4 12B "unified" (encoder-free) in plain PyTorch: config, modules, weight loading, full forward.

What this is: one readable file that reads top to bottom -- config dataclasses loaded straight from
`config.json`, the leaf modules (RMSNorm, RoPE, attention, MLP, decoder layer), the two encoder-free
embedders (48 px image patches, 640-sample audio frames), the attention masks, and the root
`Gemma4Unified` with `from_pretrained` (meta-device build, mmap'd safetensors) and `reference_forward`
(the whole prompt in one call, for parity with transformers 5.23.0 `Gemma4UnifiedForConditionalGeneration`).
Parameter names are the checkpoint's names, so loading is nearly an identity.

What this is not: no pre-processing (audio framing, image resizing, prompts, tokenizer live in
`model/gemma4_processing.py`), no incremental decoding loop (`model/gemma4_stream.py`), no KV-cache
policy (`model/kv_cache.py`). The numerics follow `../shared/design/gemma4-unified.md` and, where it is
silent, the transformers 5.23.0 source. Nothing here imports transformers or `streaming/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

SLIDING = "sliding_attention"
FULL = "full_attention"

# mm_token_type_ids values written by the processor.
MM_TEXT, MM_IMAGE, MM_VIDEO, MM_AUDIO = 0, 1, 2, 3


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


def _known(cls, d: dict) -> dict:
    """Keep only the keys `cls` declares: config.json carries back-compat keys we do not use."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class RopeConfig:
    """RoPE of one layer type."""

    rope_type: str = "default"  # "default" (all dims rotate) or "proportional" (partial, exponent over full dim)
    rope_theta: float = 10_000.0  # base wavelength
    partial_rotary_factor: float = 1.0  # share of head_dim that rotates ("proportional" only)
    factor: float = 1.0  # frequency divisor; 1.0 in every released config


@dataclass(frozen=True)
class TextConfig:
    """The decoder. Per-layer head dims / KV heads are resolved once into `layer_head_dim` / `layer_kv_heads`."""

    # Defaults are transformers 5.23.0's class defaults (what a json that omits a key means), not the 12B's.
    vocab_size: int = 262_144
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 30
    num_attention_heads: int = 8  # same on sliding and full layers
    num_key_value_heads: int = 4  # sliding layers; full layers take the per-layer override
    head_dim: int = 256  # sliding layers
    rms_norm_eps: float = 1e-6
    sliding_window: int = 1024  # keys per query, the query itself included
    final_logit_softcapping: float | None = None  # 30.0 in the 12B
    attention_k_eq_v: bool = False  # True in the 12B: full layers have no v_proj, V comes from the raw k_proj output
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int | list[int] = 1
    max_position_embeddings: int = 262_144
    layer_types: tuple[str, ...] = ()
    rope: dict[str, RopeConfig] = field(default_factory=dict)  # keyed by layer type
    layer_head_dim: tuple[int, ...] = ()  # resolved per layer
    layer_kv_heads: tuple[int, ...] = ()  # resolved per layer

    @classmethod
    def from_dict(cls, d: dict) -> "TextConfig":
        """Accept the hub json (`global_head_dim`, `num_global_key_value_heads`) and the one transformers 5.23.0
        writes (`per_layer_config`)."""
        base = _known(cls, d)
        n_layers = base.get("num_hidden_layers", cls.num_hidden_layers)
        layer_types = d.get("layer_types") or [
            FULL if (i + 1) % 6 == 0 else SLIDING for i in range(n_layers)  # 5:1 pattern, as transformers builds it
        ]
        layer_types = list(layer_types)
        layer_types[-1] = FULL  # transformers forces the last layer to full attention
        default_rope = {
            SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
            FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
        }
        rope = {t: RopeConfig(**_known(RopeConfig, p)) for t, p in (d.get("rope_parameters") or default_rope).items()}
        k_eq_v = base.get("attention_k_eq_v", cls.attention_k_eq_v)
        head_dim = base.get("head_dim", cls.head_dim)
        n_kv = base.get("num_key_value_heads", cls.num_key_value_heads)
        overrides = _full_layer_overrides(d, layer_types, k_eq_v)
        base.update(
            layer_types=tuple(layer_types),
            rope=rope,
            layer_head_dim=tuple(overrides.get(i, {}).get("head_dim", head_dim) for i in range(n_layers)),
            layer_kv_heads=tuple(overrides.get(i, {}).get("num_key_value_heads", n_kv) for i in range(n_layers)),
        )
        return cls(**base)


def _full_layer_overrides(d: dict, layer_types: list[str], k_eq_v: bool) -> dict[int, dict]:
    """Per-layer {head_dim, num_key_value_heads} from either json form (5.23.0 wins when both are present)."""
    if "per_layer_config" in d and d["per_layer_config"] is not None:
        return {int(k): dict(v) for k, v in d["per_layer_config"].items()}  # keys are "05", "11", ... or "1"
    override: dict[str, int] = {"head_dim": d.get("global_head_dim", 512)}
    # transformers applies the global KV-head count only when K = V (configuration_gemma4_unified.__post_init__).
    if k_eq_v and d.get("num_global_key_value_heads") is not None:
        override["num_key_value_heads"] = d["num_global_key_value_heads"]
    return {i: override for i, t in enumerate(layer_types) if t == FULL}


@dataclass(frozen=True)
class VisionConfig:
    """The encoder-free patch embedder."""

    patch_size: int = 16  # "teacher" patch edge; 3x3 of them make one model patch
    pooling_kernel_size: int = 3
    mm_embed_dim: int = 3840  # width of the patch Dense
    mm_posemb_size: int = 1120  # rows of the factorized position table
    output_proj_dims: int = 3840  # input width of the final projection
    rms_norm_eps: float = 1e-6  # the pre-projection RMSNorm only; the LayerNorms use PyTorch's 1e-5

    @property
    def model_patch_size(self) -> int:
        return self.patch_size * self.pooling_kernel_size  # 48 px

    @property
    def patch_dim(self) -> int:
        return self.model_patch_size**2 * 3  # 6912 raw values, HWC


@dataclass(frozen=True)
class AudioConfig:
    """The encoder-free audio projection: one token per `audio_embed_dim` raw samples."""

    audio_embed_dim: int = 640  # 40 ms at 16 kHz
    rms_norm_eps: float = 1e-6


@dataclass(frozen=True)
class Gemma4Config:
    """The whole model, as `config.json` describes it."""

    text: TextConfig
    vision: VisionConfig | None
    audio: AudioConfig | None
    boi_token_id: int = 255_999  # <|image>
    eoi_token_id: int = 258_882  # <image|>
    image_token_id: int = 258_880  # <|image|> placeholder
    video_token_id: int = 258_884  # <|video|> placeholder
    boa_token_id: int = 256_000  # <|audio>
    eoa_token_index: int = 258_883  # <audio|>; the json key really is `_index`
    audio_token_id: int = 258_881  # <|audio|> placeholder
    eos_token_ids: tuple[int, ...] = (1, 106, 50)  # <eos>, <turn|>, <|tool_response> (generation config)

    @property
    def suppress_token_ids(self) -> tuple[int, ...]:
        """Rows folded in from the old end-of-media embeddings; the tied head would emit them (spec §3.2)."""
        return (self.eoa_token_index, self.eoi_token_id)

    @classmethod
    def from_dict(cls, d: dict) -> "Gemma4Config":
        text_d = d.get("text_config", d)  # a bare text config is accepted too
        vision_d, audio_d = d.get("vision_config"), d.get("audio_config")
        top = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)} - {"text", "vision", "audio"}}
        return cls(
            text=TextConfig.from_dict(text_d),
            vision=VisionConfig(**_known(VisionConfig, vision_d)) if vision_d is not None else None,
            audio=AudioConfig(**_known(AudioConfig, audio_d)) if audio_d is not None else None,
            **top,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "Gemma4Config":
        return cls.from_dict(json.loads(Path(path).read_text()))


def gemma4_12b_config() -> Gemma4Config:
    """The released 12B shape (spec §2), for meta-device builds and the benchmark."""
    text = {
        "vocab_size": 262_144, "hidden_size": 3840, "intermediate_size": 15_360, "num_hidden_layers": 48,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512,
        "num_global_key_value_heads": 1, "attention_k_eq_v": True, "sliding_window": 1024,
        "final_logit_softcapping": 30.0,
    }
    return Gemma4Config.from_dict({"text_config": text, "vision_config": {}, "audio_config": {}})


# ----------------------------------------------------------------------------------------------------
# Leaf modules
# ----------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Gemma 4 RMSNorm: gain w (not 1 + w as in Gemma 1-3), computed in fp32, cast back to the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if with_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # pow(-0.5) rather than rsqrt: the reference does the same, so rounding matches.
        y = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + self.eps, -0.5)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.type_as(x)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """(head_dim/2,) inverse frequencies. "proportional": the first partial*head_dim/2 slots rotate with the
    exponent divided by the *full* head_dim, the rest are zero (cos 1, sin 0: no position)."""
    if rope.rope_type == "default":
        n_rot = head_dim // 2
    elif rope.rope_type == "proportional":
        n_rot = int(rope.partial_rotary_factor * head_dim // 2)
    else:
        raise ValueError(f"unsupported rope_type {rope.rope_type!r}")
    exponents = torch.arange(0, 2 * n_rot, 2, dtype=torch.int64).float() / head_dim
    inv = 1.0 / (rope.rope_theta**exponents)
    inv = torch.cat([inv, torch.zeros(head_dim // 2 - n_rot)])
    return inv / rope.factor


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) -> cos, sin (B, T, 1, D), computed in fp32 then cast (as the reference does)."""
    freqs = positions[..., None].float() * inv_freq.float()  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half pairing: dim j with j + D/2
    return emb.cos().to(dtype)[:, :, None], emb.sin().to(dtype)[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D) rotated by rotate-half RoPE."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """One attention layer. Sliding: GQA with separate K and V. Full: one KV head with K = V (no v_proj).
    Scaling is 1.0: q and k are RMS-normalised per head instead of divided by sqrt(d)."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_type = cfg.layer_types[layer_idx]
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.layer_kv_heads[layer_idx]
        self.head_dim = cfg.layer_head_dim[layer_idx]
        self.k_eq_v = cfg.attention_k_eq_v and self.layer_type == FULL
        d, hd = cfg.hidden_size, self.head_dim
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = None if self.k_eq_v else nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.v_norm = RMSNorm(hd, cfg.rms_norm_eps, with_scale=False)

    def project_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, T, d) -> q (B, H, T, D), k and v (B, KV, T, D): k after k_norm + RoPE, v after the no-scale norm."""
        B, T, _ = x.shape
        q = apply_rope(self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)), cos, sin)
        raw_k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        # K = V layers: V comes from the *raw* projection, before k_norm and RoPE.
        raw_v = raw_k if self.v_proj is None else self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
        k = apply_rope(self.k_norm(raw_k), cos, sin)
        v = self.v_norm(raw_v)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (B, H, T, D), k/v (B, KV, S, D), mask (B|1, 1, T, S) bool -> (B, T, d).

        GQA without copying K/V: query head h = kv * G + g reads KV head kv, so the G query heads of one KV head
        are folded into the query-length axis (B, KV, G*T, D) and the mask is tiled G times along it. Same dot
        products as repeating K/V, but decode reads each cached K/V once instead of materialising G copies.
        """
        B, H, T, D = q.shape
        G = H // self.n_kv
        q = q.reshape(B, self.n_kv, G * T, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.repeat(1, 1, G, 1), scale=1.0)
        out = out.view(B, H, T, D).transpose(1, 2)  # (B, T, H, D), heads in order
        return self.o_proj(out.reshape(B, T, H * D))


class MLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate x) * up x)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class KVStore(Protocol):
    """What a decoder layer needs from a per-layer KV cache (`model/kv_cache.py` implements it)."""

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store new k/v (B, KV, T, D) at `positions` (T,) and return (keys, values, key positions (S,)) to attend
        over; position -1 marks an empty slot. Tensor ops only, so a decode step can be compiled/graphed."""
        ...


class DecoderLayer(nn.Module):
    """Sandwich-norm block; `layer_scalar` (loaded, not 1) scales the whole residual stream afterwards."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_type = cfg.layer_types[layer_idx]
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # A persistent buffer in transformers; a (frozen) parameter here so it counts as one of the 11.96B.
        self.layer_scalar = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: "AttentionContext",
                cache: KVStore | None) -> torch.Tensor:
        """h (B, T, d) -> (B, T, d)."""
        q, k, v = self.self_attn.project_qkv(self.input_layernorm(h), *rope)
        if cache is None:
            k_pos = ctx.q_pos
        else:
            k, v, k_pos = cache.update(k, v, ctx.q_pos)
        a = self.self_attn.attend(q, k, v, ctx.mask(self.layer_type, k_pos))
        h = h + self.post_attention_layernorm(a)
        h = h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))
        return h * self.layer_scalar


# ----------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------


def vision_block_ids(mm_token_type_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T) id of the bidirectional block each token is in, -1 outside. A block is a maximal run of
    image (1) or video (2) soft tokens: one image, or one video frame (boi/eoi and timestamps separate frames)."""
    is_vis = (mm_token_type_ids == MM_IMAGE) | (mm_token_type_ids == MM_VIDEO)
    prev = torch.zeros_like(is_vis)
    prev[:, 1:] = is_vis[:, :-1]
    group = torch.cumsum((is_vis & ~prev).int(), dim=1) - 1
    return torch.where(is_vis, group, torch.full_like(group, -1))


@dataclass
class AttentionContext:
    """Everything the masks of one forward call need; masks are built once per layer type and key layout.

    Keys are identified by their absolute positions (-1 = empty cache slot). Keys at positions >= `start` are the
    new tokens of this call, so their block ids are `q_blk[pos - start]`; older keys never share a block with a
    query because a vision block is never split across calls.
    """

    q_pos: torch.Tensor  # (T,) absolute positions of the new tokens
    q_blk: torch.Tensor | None  # (B, T) vision block ids, or None when the call holds no vision tokens
    start: int  # absolute position of the first new token
    sliding_window: int  # keys per query including itself
    bidir_full: bool  # also open vision blocks on full layers (transformers' plain-forward semantics)
    _cache: dict = field(default_factory=dict)

    def mask(self, layer_type: str, k_pos: torch.Tensor) -> torch.Tensor:
        """k_pos (S,) -> bool (B or 1, 1, T, S), True where attention is allowed."""
        # Every layer of one type sees the same key layout within a call (same cache geometry and history).
        key = (layer_type, k_pos.shape[0])
        if key not in self._cache:
            self._cache[key] = self._build(layer_type, k_pos)
        return self._cache[key]

    def _build(self, layer_type: str, k_pos: torch.Tensor) -> torch.Tensor:
        qp, kp = self.q_pos[:, None], k_pos[None, :]  # (T, 1), (1, S)
        valid = kp >= 0
        causal = (kp <= qp) & valid
        window = kp > qp - self.sliding_window
        same = self._same_block(k_pos) & valid  # (B, T, S)
        if layer_type == SLIDING:
            if self.bidir_full:
                allowed = (window & causal) | same  # transformers forward: the window does not bound the block
            else:
                allowed = window & (causal | same)  # generate/static-cache path and vLLM
        else:
            allowed = (causal | same) if self.bidir_full else causal
        return allowed.view(-1, *allowed.shape[-2:])[:, None]  # (B or 1, 1, T, S)

    def _same_block(self, k_pos: torch.Tensor) -> torch.Tensor:
        if self.q_blk is None:
            return torch.zeros(1, 1, 1, dtype=torch.bool, device=k_pos.device)
        T = self.q_blk.shape[1]
        rel = k_pos - self.start
        is_new = (rel >= 0) & (rel < T)
        k_blk = self.q_blk[:, rel.clamp(0, T - 1)]  # (B, S)
        k_blk = torch.where(is_new[None], k_blk, torch.full_like(k_blk, -1))
        return (self.q_blk[:, :, None] == k_blk[:, None, :]) & (self.q_blk[:, :, None] >= 0)


# ----------------------------------------------------------------------------------------------------
# Decoder and multimodal embedders
# ----------------------------------------------------------------------------------------------------


class TextDecoder(nn.Module):
    """Token embedding, the decoder layers, final norm. Names match `model.language_model.*`."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.init_buffers()

    def init_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)build the non-persistent buffers (RoPE tables, embedding scale); needed after a meta-device build."""
        for t in sorted(set(self.cfg.layer_types)):
            i = self.cfg.layer_types.index(t)
            inv = rope_inv_freq(self.cfg.rope[t], self.cfg.layer_head_dim[i]).to(device)
            self.register_buffer(f"{t}_inv_freq", inv, persistent=False)
        # fp32 on the device, cast to the weight dtype at use (as the reference): no host copy per decode step.
        self.register_buffer("embed_scale", torch.tensor(self.cfg.hidden_size**0.5, device=device), persistent=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> (B, T, d) times sqrt(d), the scale cast to the weight dtype first (62.0 in bf16)."""
        w = self.embed_tokens.weight
        return F.embedding(ids, w) * self.embed_scale.to(w.dtype)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """positions (B, T) -> {layer type: (cos, sin)}."""
        if getattr(self, f"{self.cfg.layer_types[0]}_inv_freq").dtype != torch.float32:
            self.init_buffers(positions.device)  # a `model.to(bf16)` rounded the frequencies: rebuild them in fp32
        return {t: rope_cos_sin(getattr(self, f"{t}_inv_freq"), positions, dtype) for t in set(self.cfg.layer_types)}

    def forward(self, h: torch.Tensor, ctx: AttentionContext, caches: list[KVStore] | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """h (B, T, d) embeddings -> (B, T, d) after the final norm. Appends every layer output to `hidden_states`."""
        # A ragged batch (model/gemma4_batch.py) gives each row its own positions (B, T); one stream gives (T,).
        positions = ctx.q_pos if ctx.q_pos.dim() == 2 else ctx.q_pos[None].expand(h.shape[0], -1)
        rope = self.rope(positions, h.dtype)
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(h)
            h = layer(h, rope[layer.layer_type], ctx, None if caches is None else caches[i])
        h = self.norm(h)
        if hidden_states is not None:
            hidden_states.append(h)
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., vocab): tied head, then the final soft-cap."""
        logits = F.linear(h, self.embed_tokens.weight)
        cap = self.cfg.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits


class MultimodalProjection(nn.Module):
    """No-scale RMSNorm then a bias-free Linear into the LM width. The audio embedder is exactly this."""

    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.embedding_pre_projection_norm = RMSNorm(in_dim, eps, with_scale=False)
        self.embedding_projection = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference casts raw inputs to the weight dtype *before* the norm (bf16 audio samples lose bits).
        x = x.to(self.embedding_projection.weight.dtype)
        return self.embedding_projection(self.embedding_pre_projection_norm(x))


class VisionPatchEmbedder(nn.Module):
    """Raw 48x48 patches -> LN -> Dense -> LN -> + factorized 2D pos-emb -> LN. No cross-patch interaction.
    The final RMSNorm + Linear is `model.embed_vision` (a `MultimodalProjection`), stored separately."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        # LayerNorm eps is PyTorch's default 1e-5, not the config's 1e-6 (spec pitfall 8).
        self.patch_ln1 = nn.LayerNorm(cfg.patch_dim)
        self.patch_dense = nn.Linear(cfg.patch_dim, cfg.mm_embed_dim)
        self.patch_ln2 = nn.LayerNorm(cfg.mm_embed_dim)
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.mm_posemb_size, 2, cfg.mm_embed_dim))  # [:,0] x, [:,1] y
        self.pos_norm = nn.LayerNorm(cfg.mm_embed_dim)

    def forward(self, patches: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """patches (..., P, 6912), positions (..., P, 2) as (x, y), (-1, -1) for padding -> (..., P, mm_embed_dim)."""
        x = self.patch_ln2(self.patch_dense(self.patch_ln1(patches.to(self.patch_dense.weight.dtype))))
        valid = (positions != -1).to(self.pos_embedding.dtype).unsqueeze(-1)  # (..., P, 2, 1)
        axes = torch.arange(2, device=positions.device)
        pe = (self.pos_embedding[positions.clamp(min=0).long(), axes] * valid).sum(-2)  # x row + y row
        return self.pos_norm(x + pe)


class Gemma4UnifiedModel(nn.Module):
    """Holds the parts under the checkpoint prefix `model.`; the names are the stored ones."""

    def __init__(self, cfg: Gemma4Config):
        super().__init__()
        self.language_model = TextDecoder(cfg.text)
        d = cfg.text.hidden_size
        if cfg.vision is not None:
            self.vision_embedder = VisionPatchEmbedder(cfg.vision)
            self.embed_vision = MultimodalProjection(cfg.vision.output_proj_dims, d, cfg.vision.rms_norm_eps)
        if cfg.audio is not None:
            self.embed_audio = MultimodalProjection(cfg.audio.audio_embed_dim, d, cfg.audio.rms_norm_eps)


# ----------------------------------------------------------------------------------------------------
# Checkpoint names
# ----------------------------------------------------------------------------------------------------

# transformers 5.23.0 module names -> stored names. `save_pretrained` itself writes the stored names (it reverses
# the rename), but a raw `state_dict()` dump carries these.
_HF_MODULE_RENAMES = (
    ("model.embed_vision.multimodal_embedder.embedding_projection.", "model.embed_vision.embedding_projection."),
    ("model.embed_vision.patch_ln1.", "model.vision_embedder.patch_ln1."),
    ("model.embed_vision.patch_dense.", "model.vision_embedder.patch_dense."),
    ("model.embed_vision.patch_ln2.", "model.vision_embedder.patch_ln2."),
    ("model.embed_vision.pos_norm.", "model.vision_embedder.pos_norm."),
    ("model.embed_vision.pos_embedding", "model.vision_embedder.pos_embedding"),
)
_TIED_HEAD = "lm_head.weight"


def stored_name(name: str) -> str:
    """Map any accepted checkpoint name to the stored (= our parameter) name."""
    for old, new in _HF_MODULE_RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _safetensors_files(path: Path) -> list[Path]:
    """A single file, a dir with an index (shards resolved through it), or a dir of *.safetensors."""
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / f for f in sorted(set(weight_map.values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors under {path}")
    return files


def _assign(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the (meta) parameter `name` by `tensor` without copying it again."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = root.get_submodule(module_name)
    except AttributeError:
        raise KeyError(f"unexpected checkpoint tensor {name}") from None
    old = getattr(module, attr, None)
    if not isinstance(old, nn.Parameter):
        raise KeyError(f"unexpected checkpoint tensor {name}")
    if tuple(old.shape) != tuple(tensor.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(old.shape)}")
    module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)


# ----------------------------------------------------------------------------------------------------
# Root
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceOutput:
    """What `reference_outputs` returns."""

    logits: torch.Tensor  # (B, T, vocab), soft-capped, no suppression (as transformers' forward)
    # L + 1 entries (B, T, d): the input of each layer (entry 0 = embeddings), then the final-normed output;
    # the same layout as transformers' `output_hidden_states`.
    hidden_states: list[torch.Tensor]


class Gemma4Unified(nn.Module):
    """Gemma 4 12B unified: token/audio/image/video embeddings into one decoder with a tied, soft-capped head."""

    def __init__(self, config: Gemma4Config):
        super().__init__()
        self.config = config
        self.model = Gemma4UnifiedModel(config)

    @property
    def decoder(self) -> TextDecoder:
        return self.model.language_model

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.bfloat16,
                        device: torch.device | str = "cpu") -> "Gemma4Unified":
        """Build on meta, then fill each parameter from mmap'd safetensors: peak memory is one model plus one tensor.

        `path` is a checkpoint directory (config.json + model.safetensors or shards with an index). Names may be
        the stored ones or transformers 5.23.0 module names; a stored tied `lm_head.weight` is ignored.
        """
        from safetensors import safe_open  # a `gemma` extra, not needed to import this module

        path = Path(path)
        cfg_dir = path if path.is_dir() else path.parent
        config = Gemma4Config.from_json(cfg_dir / "config.json")
        with torch.device("meta"):
            model = cls(config)
        for file in _safetensors_files(path):
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    if name == _TIED_HEAD:
                        continue
                    _assign(model, stored_name(name), f.get_tensor(name).to(device=device, dtype=dtype))
        missing = [n for n, p in model.named_parameters() if p.is_meta]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")
        model.decoder.init_buffers(device)
        return model.eval()

    @classmethod
    def on_meta(cls, config: Gemma4Config) -> "Gemma4Unified":
        """Shapes only: for parameter counts and name checks."""
        with torch.device("meta"):
            return cls(config)

    @classmethod
    def random(cls, config: Gemma4Config, dtype: torch.dtype, device: torch.device | str,
               std: float = 0.02, seed: int = 0) -> "Gemma4Unified":
        """Random weights allocated directly on `device` (the benchmark's 12B); norms and scalars stay 1."""
        # Cast on meta first: a 12B fp32 intermediate would not fit beside the bf16 copy.
        model = cls.on_meta(config).to(dtype).to_empty(device=device)
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std, generator=gen)
        model.decoder.init_buffers(device)
        return model.eval()

    # --- embeddings ------------------------------------------------------------------------------

    def embed_audio(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (..., 640) raw samples -> (..., d) soft tokens."""
        return self.model.embed_audio(frames)

    def embed_vision(self, patches: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """patches (..., P, 6912), positions (..., P, 2) -> (..., P, d) soft tokens (padding rows included)."""
        return self.model.embed_vision(self.model.vision_embedder(patches, positions))

    def embed_inputs(self, input_ids: torch.Tensor, input_features: torch.Tensor | None = None,
                     input_features_mask: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                     image_position_ids: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                     video_position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) with placeholders -> (B, T, d): scaled text embeddings, placeholders overwritten (in
        order of appearance) by the unscaled soft tokens of the valid patches / frames."""
        cfg = self.config
        is_img, is_vid, is_aud = (input_ids == cfg.image_token_id, input_ids == cfg.video_token_id,
                                  input_ids == cfg.audio_token_id)
        ids = torch.where(is_img | is_vid | is_aud, cfg.text.pad_token_id, input_ids)
        h = self.decoder.embed(ids)  # (B, T, d)
        if pixel_values is not None:
            h = _scatter(h, is_img, self.vision_soft_tokens(pixel_values, image_position_ids), "image")
        if pixel_values_videos is not None:
            # Frames of all videos are concatenated on one axis; scattering them in order needs no per-video split.
            h = _scatter(h, is_vid, self.vision_soft_tokens(pixel_values_videos, video_position_ids), "video")
        if input_features is not None:
            audio = self.embed_audio(input_features)  # (N, F, d)
            valid = (torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)
                     if input_features_mask is None else input_features_mask.bool())
            h = _scatter(h, is_aud, audio[valid], "audio")
        return h

    def vision_soft_tokens(self, patches: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, P, 6912), (N, P, 2) -> (n_valid, d): padding patches (position -1) dropped, row-major per image."""
        return self.embed_vision(patches, positions)[(positions != -1).all(-1)]

    # --- full forward ----------------------------------------------------------------------------

    def forward_embeddings(self, h: torch.Tensor, ctx: AttentionContext, caches: list[KVStore] | None = None,
                           hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """h (B, T, d) -> final-normed (B, T, d), updating `caches` when given."""
        return self.decoder(h, ctx, caches, hidden_states)

    def make_context(self, mm_token_type_ids: torch.Tensor | None, start: int, length: int, device,
                     vision_bidirectional_on_full_layers: bool = False) -> AttentionContext:
        """The mask context of `length` new tokens at absolute positions start..start+length-1."""
        blk = None
        if mm_token_type_ids is not None:
            blk = vision_block_ids(mm_token_type_ids.to(device))
            blk = blk if bool((blk >= 0).any()) else None
        return AttentionContext(
            q_pos=torch.arange(start, start + length, device=device), q_blk=blk, start=start,
            sliding_window=self.config.text.sliding_window, bidir_full=vision_bidirectional_on_full_layers,
        )

    @torch.no_grad()
    def reference_outputs(self, input_ids: torch.Tensor, input_features=None, input_features_mask=None,
                          pixel_values=None, image_position_ids=None, pixel_values_videos=None,
                          video_position_ids=None, mm_token_type_ids=None,
                          vision_bidirectional_on_full_layers: bool = False) -> ReferenceOutput:
        """The whole prompt in one call, no cache; logits and every layer's hidden states."""
        h = self.embed_inputs(input_ids, input_features, input_features_mask, pixel_values, image_position_ids,
                              pixel_values_videos, video_position_ids)
        ctx = self.make_context(mm_token_type_ids, 0, input_ids.shape[1], h.device,
                                vision_bidirectional_on_full_layers)
        hidden: list[torch.Tensor] = []
        h = self.forward_embeddings(h, ctx, None, hidden)
        return ReferenceOutput(logits=self.decoder.logits(h), hidden_states=hidden)

    def reference_forward(self, input_ids: torch.Tensor, input_features=None, input_features_mask=None,
                          pixel_values=None, image_position_ids=None, pixel_values_videos=None,
                          video_position_ids=None, mm_token_type_ids=None,
                          vision_bidirectional_on_full_layers: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) for the tensors transformers' processor produces; the parity entry point.

        With `vision_bidirectional_on_full_layers=False` (default) full layers are causal, as in vLLM and
        transformers' `create_masks_for_generate`; True gives transformers' plain `forward` mask.
        """
        return self.reference_outputs(input_ids, input_features, input_features_mask, pixel_values,
                                      image_position_ids, pixel_values_videos, video_position_ids,
                                      mm_token_type_ids, vision_bidirectional_on_full_layers).logits


def _scatter(h: torch.Tensor, where: torch.Tensor, soft: torch.Tensor, what: str) -> torch.Tensor:
    """Write soft tokens (N, d) into the N placeholder rows of h (B, T, d), in order."""
    n = int(where.sum())
    if n != soft.shape[0]:
        raise ValueError(f"{what}: {n} placeholder tokens but {soft.shape[0]} soft tokens")
    return h.masked_scatter(where[..., None].expand_as(h), soft.to(h.dtype))


def count_parameters(model: nn.Module) -> int:
    """Every stored number, `layer_scalar` included (the spec's 11,959,730,224 counts them)."""
    return sum(p.numel() for p in model.parameters())
