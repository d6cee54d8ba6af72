"""Config loading for model/gemma4.py, plus the tiny-model helpers the other test_gemma4_* files share.

The helpers build a tiny random Gemma 4 unified model with transformers 5.23.0 (the numerical reference) and
the tensors its processor would produce, by hand: nothing downloads, and model/gemma4_processing.py is not used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 model tests (pip install '.[gemma]')")

from patchstream.model.gemma4 import FULL, SLIDING, Gemma4Config, gemma4_12b_config  # noqa: E402

# Tiny token ids: the tiny vocab (512) cannot hold the real 255999..258884.
BOI, EOI, IMG, VID, BOA, EOA, AUD = 500, 501, 502, 503, 504, 505, 506
HIDDEN = 64
AUDIO_DIM = 40  # samples per audio token in the tiny config
PATCH_DIM = 6 * 6 * 3  # 2 px teacher patches x 3 pooling -> 6 px model patches


def import_transformers():
    """transformers 5.23.0, or skip with a message (tests/conftest.py made torchvision importable)."""
    return pytest.importorskip("transformers", reason="parity tests need transformers==5.23.0 (pip install '.[test]')")


def tiny_hf_config(sliding_window: int = 8):
    """4 layers (sliding, full, sliding, full), GQA 4:2 on sliding, one 32-wide K=V head on full layers."""
    tf = import_transformers()
    return tf.Gemma4UnifiedConfig(
        text_config=dict(
            vocab_size=512, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
            attention_k_eq_v=True, sliding_window=sliding_window, final_logit_softcapping=30.0,
            layer_types=[SLIDING, FULL, SLIDING, FULL],
        ),
        vision_config=dict(patch_size=2, pooling_kernel_size=3, mm_embed_dim=48, mm_posemb_size=16, output_proj_dims=48),
        audio_config=dict(audio_embed_dim=AUDIO_DIM),
        boi_token_id=BOI, eoi_token_id=EOI, image_token_id=IMG, video_token_id=VID, boa_token_id=BOA,
        eoa_token_index=EOA, audio_token_id=AUD,
    )


def tiny_hf_model(seed: int = 0, sliding_window: int = 8):
    """A transformers model with every weight perturbed (norm gains, layer_scalar != 1) so parity means something."""
    tf = import_transformers()
    torch.manual_seed(seed)
    model = tf.Gemma4UnifiedForConditionalGeneration(tiny_hf_config(sliding_window)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "embed_tokens" in name else 0.1))  # big logits exercise the cap
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)
    model.config._attn_implementation = "eager"  # the reference behaviour: fp32 softmax, explicit mask
    return model


def save_tiny(path: Path, seed: int = 0, sliding_window: int = 8):
    """save_pretrained a tiny random model into `path`; returns the transformers model."""
    model = tiny_hf_model(seed, sliding_window)
    model.save_pretrained(path)
    return model


def mm_types(ids: torch.Tensor) -> torch.Tensor:
    """mm_token_type_ids as the processor writes them: 1 image, 2 video, 3 audio soft tokens, 0 otherwise."""
    types = torch.zeros_like(ids)
    types[ids == IMG], types[ids == VID], types[ids == AUD] = 1, 2, 3
    return types


def grid_positions(cols: int, rows: int, budget: int) -> torch.Tensor:
    """(budget, 2) (x, y) patch positions in raster order, padded with (-1, -1) like the image processor."""
    pos = [[x, y] for y in range(rows) for x in range(cols)]
    return torch.tensor(pos + [[-1, -1]] * (budget - len(pos)))


def prompt(parts: list) -> list[int]:
    """Token list from ints and ("audio", n) / ("image", n) / ("video", [n per frame]) parts."""
    out: list[int] = []
    for p in parts:
        if isinstance(p, int):
            out.append(p)
        elif p[0] == "audio":
            out += [BOA] + [AUD] * p[1] + [EOA]
        elif p[0] == "image":
            out += [BOI] + [IMG] * p[1] + [EOI]
        else:
            for i, n in enumerate(p[1]):
                out += [30 + i, BOI] + [VID] * n + [EOI]  # a "timestamp" text token before each frame
    return out


def media_inputs(kind: str, seed: int = 0) -> dict:
    """input_ids (1, T) and the processor tensors for one prompt kind: text, audio, image, video or all."""
    g = torch.Generator().manual_seed(seed)
    parts: list = [2, 105, 10]
    kw: dict = {}
    if kind in ("audio", "all"):
        # Two clips of 5 and 3 real frames, padded to 5 in the batch as the feature extractor does.
        parts += [("audio", 5), 11, ("audio", 3)]
        kw["input_features"] = torch.randn(2, 5, AUDIO_DIM, generator=g) * 0.3
        kw["input_features_mask"] = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    if kind in ("image", "all"):
        parts += [12, ("image", 6), 13, ("image", 4)]  # 3x2 and 2x2 grids in a 9-patch budget
        kw["pixel_values"] = torch.rand(2, 9, PATCH_DIM, generator=g)
        kw["image_position_ids"] = torch.stack([grid_positions(3, 2, 9), grid_positions(2, 2, 9)])
    if kind in ("video", "all"):
        parts += [14, ("video", [4, 4, 4])]  # one video of 3 frames, 2x2 patches each, 5-patch budget
        kw["pixel_values_videos"] = torch.rand(3, 5, PATCH_DIM, generator=g)
        kw["video_position_ids"] = torch.stack([grid_positions(2, 2, 5)] * 3)
    parts += [15, 106, 105, 16]
    ids = torch.tensor([prompt(parts)])
    return {"input_ids": ids, "mm_token_type_ids": mm_types(ids), **kw}


def hf_forward(hf_model, inputs: dict, vision_bidirectional_on_full_layers: bool):
    """transformers forward with the chosen mask semantics: its plain forward opens vision blocks on full layers;
    the dict from `create_masks_for_generate` keeps full layers causal (spec §4.6)."""
    kw = dict(inputs)
    if "pixel_values_videos" in kw:
        kw["num_frames_per_video"] = torch.tensor([kw["pixel_values_videos"].shape[0]])
    if not vision_bidirectional_on_full_layers:
        ids = kw["input_ids"]
        kw["attention_mask"] = hf_model.create_masks_for_generate(
            config=hf_model.config, inputs_embeds=torch.zeros(*ids.shape, HIDDEN), attention_mask=None,
            past_key_values=None, position_ids=torch.arange(ids.shape[1])[None],
            mm_token_type_ids=kw["mm_token_type_ids"],
        )
    with torch.no_grad():
        return hf_model(**kw, output_hidden_states=True)


def rel_err(ref: torch.Tensor, got: torch.Tensor) -> float:
    """max |ref - got| / max |ref|"""
    return float((ref.float() - got.float()).abs().max() / ref.float().abs().max())


# ----------------------------------------------------------------------------------------------------
# Config tests
# ----------------------------------------------------------------------------------------------------

HUB_TEXT_CONFIG = {  # the 12B text_config as the hub ships it (written by transformers 5.10)
    "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": 1,
    "attention_k_eq_v": True, "final_logit_softcapping": 30.0, "sliding_window": 1024,
    "hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 262144, "enable_moe_block": False,
    "num_experts": None, "top_k_experts": None, "moe_intermediate_size": None,
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
    },
}


def test_hub_json_resolves_full_layer_overrides():
    cfg = Gemma4Config.from_dict({"text_config": HUB_TEXT_CONFIG, "vision_config": {"model_patch_size": 48,
                                  "num_soft_tokens": 280}, "audio_config": {"audio_samples_per_token": 640},
                                  "eoa_token_index": 258883, "some_future_key": 1})
    t = cfg.text
    full = [i for i, lt in enumerate(t.layer_types) if lt == FULL]
    assert full == [5, 11, 17, 23, 29, 35, 41, 47]
    assert [t.layer_head_dim[i] for i in full] == [512] * 8 and [t.layer_kv_heads[i] for i in full] == [1] * 8
    assert {t.layer_head_dim[i] for i in range(48) if i not in full} == {256}
    assert {t.layer_kv_heads[i] for i in range(48) if i not in full} == {8}
    assert cfg.vision.patch_dim == 6912 and cfg.audio.audio_embed_dim == 640
    assert cfg.suppress_token_ids == (258883, 258882)
    assert cfg.text.rope[FULL].partial_rotary_factor == 0.25


def test_transformers_json_with_per_layer_config_matches_hub_json(tmp_path):
    """5.23.0 writes `per_layer_config` (keys "1", "3" or zero-padded) instead of the global_* keys."""
    tiny_hf_config().save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert "per_layer_config" in written["text_config"]
    cfg = Gemma4Config.from_json(tmp_path / "config.json")
    assert cfg.text.layer_head_dim == (16, 32, 16, 32) and cfg.text.layer_kv_heads == (2, 1, 2, 1)
    hub_style = dict(written["text_config"])
    del hub_style["per_layer_config"]
    hub_style.update(global_head_dim=32, num_global_key_value_heads=1)
    assert Gemma4Config.from_dict({**written, "text_config": hub_style}).text == cfg.text
    padded = {f"{int(k):02d}": v for k, v in written["text_config"]["per_layer_config"].items()}
    assert Gemma4Config.from_dict({**written, "text_config": {**hub_style, "per_layer_config": padded}}).text == cfg.text


def test_global_kv_heads_apply_only_when_k_equals_v():
    cfg = Gemma4Config.from_dict({"text_config": {**HUB_TEXT_CONFIG, "attention_k_eq_v": False}})
    assert cfg.text.layer_kv_heads[5] == 8 and cfg.text.layer_head_dim[5] == 512


def test_12b_config_helper_matches_hub_json():
    assert gemma4_12b_config().text == Gemma4Config.from_dict({"text_config": HUB_TEXT_CONFIG}).text


def test_model_files_import_neither_transformers_nor_streaming():
    """The from-scratch model stands alone: transformers is test-only and model/ never imports streaming/."""
    import ast

    root = Path(__file__).resolve().parents[2] / "model"
    for name in ("gemma4.py", "kv_cache.py", "gemma4_stream.py"):
        tree = ast.parse((root / name).read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in modules if m.split(".")[0] in ("transformers", "streaming")}, name
