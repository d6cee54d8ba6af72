"""Weight loading of model/gemma4.py: transformers `save_pretrained` output, the official stored names, the
transformers module names, sharded with an index, tied head; and the 12B shape on the meta device
(11,959,730,224 parameters, the 677 stored tensors of the spec)."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 model tests (pip install '.[gemma]')")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="loading needs safetensors (pip install '.[gemma]')")

from patchstream.model.gemma4 import Gemma4Unified, count_parameters, gemma4_12b_config  # noqa: E402
from tests.model.test_gemma4_config import media_inputs, rel_err, save_tiny  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A transformers save_pretrained directory and the model it came from."""
    path = tmp_path_factory.mktemp("saved")
    return path, save_tiny(path, seed=3)


def _write_sharded(path, tensors: dict, n_shards: int = 3) -> None:
    """Shards + model.safetensors.index.json as the hub lays them out (names are arbitrary on purpose)."""
    names = sorted(tensors)
    weight_map = {}
    for s in range(n_shards):
        part = {n: tensors[n].contiguous() for n in names[s::n_shards]}
        file = f"weights-{s:05d}-of-{n_shards:05d}.safetensors"
        safetensors_torch.save_file(part, str(path / file))
        weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _config_copy(src, dst) -> None:
    (dst / "config.json").write_text((src / "config.json").read_text())


def test_save_pretrained_writes_the_stored_names_and_we_load_them(saved):
    """transformers 5.23.0 reverses its load-time rename on save: the file carries the official names."""
    path, hf = saved
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert "model.vision_embedder.patch_dense.weight" in names
    assert "model.embed_vision.embedding_projection.weight" in names
    assert "lm_head.weight" not in names
    ours = Gemma4Unified.from_pretrained(path, dtype=torch.float32)
    assert set(dict(ours.named_parameters())) == names
    ref = hf.model.embed_vision.multimodal_embedder.embedding_projection.weight
    assert torch.equal(ours.model.embed_vision.embedding_projection.weight, ref)
    assert torch.equal(ours.model.language_model.layers[1].layer_scalar, hf.model.language_model.layers[1].layer_scalar)


def test_module_names_sharded_with_index_and_tied_head_load_identically(saved, tmp_path):
    """A raw transformers state_dict (module names, lm_head copy included) split into 3 shards + index."""
    path, hf = saved
    state = {k: v.clone() for k, v in hf.state_dict().items()}  # clone: the tied head shares storage
    assert "model.embed_vision.multimodal_embedder.embedding_projection.weight" in state
    assert "lm_head.weight" in state
    _write_sharded(tmp_path, state)
    _config_copy(path, tmp_path)
    a = Gemma4Unified.from_pretrained(path, dtype=torch.float32)
    b = Gemma4Unified.from_pretrained(tmp_path, dtype=torch.float32)
    inputs = media_inputs("all")
    assert torch.equal(a.reference_forward(**inputs), b.reference_forward(**inputs))


def test_official_names_sharded_single_file_and_bf16(saved, tmp_path):
    path, _ = saved
    ref = Gemma4Unified.from_pretrained(path, dtype=torch.float32)
    state = {n: p.detach().to(torch.bfloat16) for n, p in ref.named_parameters()}  # stored names, bf16 as shipped
    _write_sharded(tmp_path, state, n_shards=2)
    _config_copy(path, tmp_path)
    got = Gemma4Unified.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.is_meta for p in got.parameters())
    single = Gemma4Unified.from_pretrained(path / "model.safetensors", dtype=torch.float32)  # a file path works too
    inputs = media_inputs("text")
    assert torch.equal(single.reference_forward(**inputs), ref.reference_forward(**inputs))
    assert rel_err(ref.reference_forward(**inputs), got.reference_forward(**inputs)) < 5e-2


def test_missing_or_unexpected_tensors_are_errors(saved, tmp_path):
    path, hf = saved
    state = {k: v.clone() for k, v in hf.state_dict().items() if "layers.2.mlp.up_proj" not in k}
    _write_sharded(tmp_path, state, n_shards=1)
    _config_copy(path, tmp_path)
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        Gemma4Unified.from_pretrained(tmp_path)
    up = "model.language_model.layers.2.mlp.up_proj.weight"
    state[up] = hf.state_dict()[up].clone()
    state["model.language_model.layers.2.mlp.extra.weight"] = torch.zeros(2)
    _write_sharded(tmp_path, state, n_shards=1)
    with pytest.raises(KeyError, match="extra"):
        Gemma4Unified.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------
# The 12B shape
# ----------------------------------------------------------------------------------------------------


def _spec_12b_tensors() -> dict[str, tuple[int, ...]]:
    """The 677 stored tensors of spec §3.1, written out from its table."""
    d, ff = 3840, 15360
    out = {
        "model.language_model.embed_tokens.weight": (262144, d),
        "model.language_model.norm.weight": (d,),
        "model.vision_embedder.patch_ln1.weight": (6912,), "model.vision_embedder.patch_ln1.bias": (6912,),
        "model.vision_embedder.patch_dense.weight": (d, 6912), "model.vision_embedder.patch_dense.bias": (d,),
        "model.vision_embedder.patch_ln2.weight": (d,), "model.vision_embedder.patch_ln2.bias": (d,),
        "model.vision_embedder.pos_embedding": (1120, 2, d),
        "model.vision_embedder.pos_norm.weight": (d,), "model.vision_embedder.pos_norm.bias": (d,),
        "model.embed_vision.embedding_projection.weight": (d, d),
        "model.embed_audio.embedding_projection.weight": (d, 640),
    }
    for i in range(48):
        full = (i + 1) % 6 == 0
        hd, kv = (512, 1) if full else (256, 8)
        p = f"model.language_model.layers.{i}."
        for n in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            out[p + n + "_layernorm.weight"] = (d,)
        out[p + "layer_scalar"] = (1,)
        out[p + "self_attn.q_proj.weight"] = (16 * hd, d)
        out[p + "self_attn.k_proj.weight"] = (kv * hd, d)
        if not full:
            out[p + "self_attn.v_proj.weight"] = (kv * hd, d)
        out[p + "self_attn.o_proj.weight"] = (d, 16 * hd)
        out[p + "self_attn.q_norm.weight"] = (hd,)
        out[p + "self_attn.k_norm.weight"] = (hd,)
        out[p + "mlp.gate_proj.weight"] = (ff, d)
        out[p + "mlp.up_proj.weight"] = (ff, d)
        out[p + "mlp.down_proj.weight"] = (d, ff)
    return out


def test_12b_builds_on_meta_with_the_spec_parameter_count_and_tensors():
    model = Gemma4Unified.on_meta(gemma4_12b_config())
    assert count_parameters(model) == 11_959_730_224
    got = {n: tuple(p.shape) for n, p in model.named_parameters()}
    expected = _spec_12b_tensors()
    assert len(expected) == 677
    assert got == expected
    assert not [n for n, _ in model.named_buffers() if not re.search(r"(inv_freq|embed_scale)$", n)]  # none stored
