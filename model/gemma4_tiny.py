"""A tiny random Gemma 4 unified checkpoint with a byte-level tokenizer, written to a directory.

What this is: the self-contained checkpoint the engine's CPU tests, the engine benchmark and a CPU
`patchstream serve --engine gemma4 --model-path DIR` run on. It has the real media geometry (640 samples per audio
token, 48 px patches) and the real chat-format special tokens, but a 4-layer 64-wide decoder and a 512-entry
vocabulary: the specials, then one token per byte (`<0xNN>`, byte fallback), so any text round-trips and nothing
downloads. Its weights are random, so its text is gibberish; it exists to test mechanics.

What this is not: a parity fixture (tests/model/test_gemma4_config.py builds those with transformers).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from patchstream.model.gemma4 import FULL, SLIDING, Gemma4Config, Gemma4Unified
from patchstream.model.gemma4_processing import SpecialTokens

TINY_VOCAB = 512  # specials + 256 bytes fit; the rest of the rows are never produced by the tokenizer
_BASE = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, as in the real vocabulary


def _special_tokens() -> list[str]:
    t = SpecialTokens()
    return [*_BASE, t.sot, t.eot, t.soc, t.eoc, t.think, t.image, t.boi, t.eoi, t.video, t.audio, t.boa, t.eoa]


def tiny_tokenizer():
    """A `tokenizers.Tokenizer`: the specials, then `<0x00>`..`<0xFF>`; every other string falls back to bytes."""
    from tokenizers import Tokenizer, decoders, models

    specials = _special_tokens()
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tokenizer.add_special_tokens(specials)
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def tiny_config_dict(sliding_window: int = 64) -> dict:
    """config.json of the tiny model; its media ids are the tokenizer's."""
    ids = {token: i for i, token in enumerate(_special_tokens())}
    t = SpecialTokens()
    text = dict(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=sliding_window,
                final_logit_softcapping=30.0, layer_types=[SLIDING, FULL, SLIDING, FULL])
    return dict(
        text_config=text,
        # 16 px teacher patches pooled 3x3: the real 48 px patch (6912 values); a narrow patch Dense.
        vision_config=dict(patch_size=16, pooling_kernel_size=3, mm_embed_dim=32, mm_posemb_size=64,
                           output_proj_dims=32),
        audio_config=dict(audio_embed_dim=640),  # the real 40 ms token
        boi_token_id=ids[t.boi], eoi_token_id=ids[t.eoi], image_token_id=ids[t.image],
        video_token_id=ids[t.video], boa_token_id=ids[t.boa], eoa_token_index=ids[t.eoa],
        audio_token_id=ids[t.audio], eos_token_ids=[ids["<eos>"], ids[t.eot]],
    )


def save_tiny_checkpoint(path: str | Path, seed: int = 0, sliding_window: int = 64) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and tokenizer_config.json into `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = tiny_config_dict(sliding_window)
    (path / "config.json").write_text(json.dumps(config, indent=1))
    # std 0.3: large enough that greedy decoding wanders over the vocabulary instead of repeating one token.
    model = Gemma4Unified.random(Gemma4Config.from_dict(config), torch.float32, "cpu", std=0.3, seed=seed)
    with torch.no_grad():  # only byte rows compete in the tied head, so random text is bytes, not specials
        embed = model.decoder.embed_tokens.weight
        embed[: len(_special_tokens())] *= 0.01
        embed[len(_special_tokens()) + 256:] = 0.0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    tiny_tokenizer().save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))
    return path
