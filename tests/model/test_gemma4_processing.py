"""model/gemma4_processing.py against transformers 5.23.0's Gemma 4 unified processors, bit for bit.

The first tests need nothing but our module. The reference tests need `transformers==5.23.0`
(skipped with a message otherwise); the image, video and whole-processor ones also need torchvision
and pillow, because transformers' image and video processors are torchvision code.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Gemma stack needs the `gemma` extra (torch)")

from patchstream.model.api import PATCH_PX, SAMPLES_PER_AUDIO_TOKEN
from patchstream.model.gemma4_processing import (
    MM_AUDIO,
    MM_IMAGE,
    MM_TEXT,
    MM_VIDEO,
    SOFT_TOKEN_BUDGETS,
    Gemma4Processor,
    Media,
    Message,
    build_prompt,
    fit_to_budget,
    format_timestamp,
    frame_audio,
    num_audio_tokens,
    patchify_image,
    sample_frame_indices,
    video_frames,
)

# Odd sizes on purpose: nothing divides by 48, extreme aspect ratios, an exact fit (no resize).
IMAGE_SIZES = [(37, 91), (224, 224), (1, 333), (501, 13), (768, 768), (300, 451)]
AUDIO_LENGTHS = [1, 639, 640, 641, 16_017, 4_321]
SPECIAL_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
    "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
    "sot_token": "<|turn>", "eot_token": "<turn|>", "soc_token": "<|channel>",
    "eoc_token": "<channel|>", "think_token": "<|think|>",
}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ our module alone


def test_audio_frames_are_640_samples_zero_padded_and_masked():
    clips = [np.full(641, 0.5, np.float32), np.full(10, -0.25, np.float32)]
    out = frame_audio(clips)
    assert out.input_features.shape == (2, 2, SAMPLES_PER_AUDIO_TOKEN)
    assert out.input_features.dtype == torch.float32 and out.input_features_mask.dtype == torch.bool
    assert out.num_tokens == [2, 1] == [num_audio_tokens(641), num_audio_tokens(10)]
    assert out.input_features[0, 1, 0] == 0.5 and not out.input_features[0, 1, 1:].any()
    assert out.input_features_mask.tolist() == [[True, True], [True, False]]


def test_budget_table_of_the_spec():
    # docs/gemma4-unified.md §5.1: resized sizes per budget (224x224 is upscaled to 768x768 at 280).
    assert [fit_to_budget(224, 224, b) for b in SOFT_TOKEN_BUDGETS] == [
        (384, 384), (528, 528), (768, 768), (1104, 1104), (1584, 1584)]
    assert fit_to_budget(480, 640, 280) == (672, 912)
    assert fit_to_budget(1080, 1920, 70) == (288, 528)
    assert fit_to_budget(1, 10_000, 70) == (PATCH_PX, 70 * PATCH_PX)  # one side floors to 0
    with pytest.raises(ValueError):
        fit_to_budget(224, 224, 100)


def test_patches_are_hwc_raster_with_xy_positions_and_padding():
    # A 96x144 image at budget 70 needs no resize only if it fits exactly, so build one that does.
    h, w = fit_to_budget(96, 144, 70)
    image = _image(h, w)
    out = patchify_image(image, max_soft_tokens=70)
    rows, cols = h // PATCH_PX, w // PATCH_PX
    assert out.num_soft_tokens == (rows * cols,)
    r, c = 1, 2
    expected = image[r * PATCH_PX:(r + 1) * PATCH_PX, c * PATCH_PX:(c + 1) * PATCH_PX].reshape(-1) / 255
    torch.testing.assert_close(out.pixel_values[0, r * cols + c], torch.from_numpy(expected).float())
    assert out.image_position_ids[0, r * cols + c].tolist() == [c, r]
    assert (out.image_position_ids[0, rows * cols:] == -1).all()
    assert not out.pixel_values[0, rows * cols:].any()


def test_video_frame_choice_is_explicit():
    clip = _rng(7).integers(0, 256, (10, 20, 30, 3), dtype=np.uint8)
    assert len(video_frames(clip, num_frames=4).timestamps_s) == 4
    live = video_frames(clip[:2], timestamps_s=[61.2, 61.7])
    assert live.timestamp_labels == ["01:01", "01:01"] and live.pixel_values_videos.shape == (2, 70, 6912)
    with pytest.raises(ValueError):
        video_frames(clip, 10.0, num_frames=4, fps=2)
    with pytest.raises(ValueError):
        video_frames(clip)  # 32 frames by default, more than the clip has


def test_timestamps_are_mm_ss_truncated():
    assert [format_timestamp(s) for s in (0.0, 0.99, 59.999, 61.5, 3600.0)] == [
        "00:00", "00:00", "00:59", "01:01", "60:00"]
    assert sample_frame_indices(40, 10.0, num_frames=None, fps=2).tolist() == [0, 5, 10, 15, 20, 25, 30, 35]


def test_prompt_layout_follows_the_12b_it_template():
    # docs/gemma4-unified.md §7: the transcription and image prompts, byte for byte.
    asr = build_prompt([Message("user", (Media.AUDIO, " Transcribe this. "))])
    assert asr == ("<bos><|turn>user\n<|audio|>Transcribe this.<turn|>\n"
                   "<|turn>model\n<|channel>thought\n<channel|>")
    chat = build_prompt([Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello")],
                        add_generation_prompt=False)
    assert chat == ("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n"
                    "<|turn>model\n<|channel>thought\n<channel|>Hello<turn|>\n")
    think = build_prompt([Message("user", (Media.IMAGE, "Describe."))], enable_thinking=True)
    assert think == ("<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\n<|image|>Describe.<turn|>\n"
                     "<|turn>model\n")


# ------------------------------------------------------------------ against transformers

REFERENCE_MISSING = "transformers==5.23.0 is the numerical reference; install the test extra (pip install -e '.[test]')"


@pytest.fixture(scope="module")
def hf():
    """transformers' Gemma 4 unified module, or a skip that says why."""
    pytest.importorskip("transformers", reason=REFERENCE_MISSING)
    _TORCHVISION_PROBLEM.append(_load_torchvision())  # before transformers imports it, see below
    from transformers.models import gemma4_unified

    return gemma4_unified


def _load_torchvision() -> str | None:
    """None when transformers' image/video processors can run, else why not.

    tests/conftest.py has already made a CUDA torchvision wheel importable beside CPU torch.
    """
    for name in ("PIL", "torchvision"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            return f"{err.name} is needed to run transformers' Gemma 4 image/video processors"
    return None


_TORCHVISION_PROBLEM: list[str | None] = []


@pytest.fixture(scope="module")
def hf_vision(hf):
    """transformers' image and video processor classes, or a skip that says what is missing."""
    if _TORCHVISION_PROBLEM[-1]:
        pytest.skip(_TORCHVISION_PROBLEM[-1])
    return hf.Gemma4UnifiedImageProcessor, hf.Gemma4UnifiedVideoProcessor


def test_audio_matches_feature_extractor_for_odd_lengths(hf):
    fe = hf.Gemma4UnifiedAudioFeatureExtractor()
    rng = _rng(1)
    for dtype in (np.float32, np.float64):
        clips = [rng.uniform(-1, 1, n).astype(dtype) for n in AUDIO_LENGTHS]
        ref = fe(clips, return_tensors="pt")
        ours = frame_audio(clips)
        assert torch.equal(ours.input_features, ref["input_features"])
        assert ours.input_features.dtype == ref["input_features"].dtype == torch.float32
        assert torch.equal(ours.input_features_mask, ref["input_features_mask"])
        single = fe(clips[4], return_tensors="pt")
        assert torch.equal(frame_audio(clips[4]).input_features, single["input_features"])


def test_budget_matches_transformers_for_many_shapes(hf):
    from transformers.models.gemma4_unified.processing_gemma4_unified import get_aspect_ratio_preserving_size

    rng = _rng(2)
    shapes = [(int(h), int(w)) for h, w in rng.integers(1, 4000, (300, 2))] + IMAGE_SIZES
    for budget in SOFT_TOKEN_BUDGETS:
        for h, w in shapes:
            try:
                ref = get_aspect_ratio_preserving_size(h, w, 16, budget * 9, 3)
            except ValueError:
                with pytest.raises(ValueError):
                    fit_to_budget(h, w, budget)
                continue
            assert fit_to_budget(h, w, budget) == ref, (h, w, budget)


@pytest.mark.parametrize("budget", SOFT_TOKEN_BUDGETS)
def test_images_match_image_processor_bit_exactly(hf_vision, budget):
    image_processor = hf_vision[0](max_soft_tokens=budget)
    images = [_image(h, w, seed=i) for i, (h, w) in enumerate(IMAGE_SIZES)]
    images.append(_rng(9).integers(0, 256, (45, 77), dtype=np.uint8))  # greyscale -> RGB
    ref = image_processor(images, return_tensors="pt", input_data_format="channels_last")
    ours = patchify_image(images, max_soft_tokens=budget)
    assert ours.pixel_values.dtype == ref["pixel_values"].dtype == torch.float32
    assert torch.equal(ours.pixel_values, ref["pixel_values"])
    assert torch.equal(ours.image_position_ids, ref["image_position_ids"])
    assert list(ours.num_soft_tokens) == ref["num_soft_tokens_per_image"].tolist()


def test_video_matches_video_processor_bit_exactly(hf_vision):
    video_processor_cls = hf_vision[1]
    clip = _rng(3).integers(0, 256, (40, 53, 71, 3), dtype=np.uint8)
    metadata = {"total_num_frames": 40, "fps": 10.0}
    cases = [  # (processor kwargs at construction, call kwargs, our kwargs)
        ({}, {"video_metadata": metadata}, {"video_fps": 10.0}),
        ({}, {"video_metadata": metadata, "num_frames": 5}, {"video_fps": 10.0, "num_frames": 5}),
        # transformers samples by fps only when its processor's num_frames is None (see docs).
        ({"num_frames": None}, {"video_metadata": metadata, "fps": 2}, {"video_fps": 10.0, "fps": 2}),
        # Frames taken as they are, fps unknown: transformers times them at 24 fps.
        ({}, {"do_sample_frames": False}, {"timestamps_s": [i / 24 for i in range(40)]}),
    ]
    for ctor, call, ours_kwargs in cases:
        ref = video_processor_cls(**ctor)(clip, return_tensors="pt", return_metadata=True, **call)
        ours = video_frames(clip, **ours_kwargs)
        assert torch.equal(ours.pixel_values_videos, ref["pixel_values_videos"]), call
        assert torch.equal(ours.video_position_ids, ref["video_position_ids"]), call
        assert ours.num_soft_tokens == int(ref["num_soft_tokens_per_video"][0])
        meta = ref["video_metadata"][0]
        meta.fps = meta.fps or 24  # what the processor's prompt expansion assumes
        assert list(ours.timestamps_s) == [float(t) for t in meta.timestamps], call

    grey = clip[:6, :, :, :1]  # (T, H, W, 1) is repeated to RGB
    ref = video_processor_cls()(grey, do_sample_frames=False, input_data_format="channels_last", return_tensors="pt")
    assert torch.equal(video_frames(grey, timestamps_s=[0.0] * 6).pixel_values_videos, ref["pixel_values_videos"])


def _tiny_checkpoint(tmp_path, hf_vision):
    """A transformers processor with a byte-fallback Gemma tokenizer, saved as a checkpoint saves it."""
    from transformers import Gemma4UnifiedAudioFeatureExtractor, Gemma4UnifiedProcessor, GemmaTokenizer

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(256)})
    for piece in ["▁", "e", "s", "c", "r", "i", "b", "▁D", "es", "cr", "ib", "▁Des", "crib", "▁Describe", ":"]:
        vocab.setdefault(piece, len(vocab))
    merges = [("e", "s"), ("c", "r"), ("i", "b"), ("▁D", "es"), ("cr", "ib")]
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=False, extra_special_tokens=SPECIAL_TOKENS)
    hf = Gemma4UnifiedProcessor(
        feature_extractor=Gemma4UnifiedAudioFeatureExtractor(),
        image_processor=hf_vision[0](max_soft_tokens=140),
        tokenizer=tokenizer,
        video_processor=hf_vision[1](),
    )
    hf.save_pretrained(tmp_path)
    # Reload: transformers rebuilds GemmaTokenizer's pipeline from the saved vocab, as for a checkpoint.
    return Gemma4UnifiedProcessor.from_pretrained(tmp_path)


def test_processor_matches_transformers_prompt_expansion(tmp_path, hf_vision):
    hf = _tiny_checkpoint(tmp_path, hf_vision)
    ours = Gemma4Processor.from_pretrained(tmp_path)
    assert (ours.image_soft_tokens, ours.video_frame_soft_tokens) == (140, 70)
    assert ours.tokenizer.image_token_id == hf.image_token_id
    assert ours.tokenizer.video_token_id == hf.video_token_id

    rng = _rng(4)
    images = [_image(37, 91, seed=5), _image(300, 451, seed=6)]
    audio = [rng.uniform(-1, 1, 16_017).astype(np.float32), rng.uniform(-1, 1, 641).astype(np.float32)]
    clip = rng.integers(0, 256, (12, 40, 64, 3), dtype=np.uint8)
    prompt = build_prompt([
        Message("system", "Describe: "),
        Message("user", (Media.IMAGE, "Describe ", Media.AUDIO, Media.VIDEO, "é ", Media.IMAGE, Media.AUDIO)),
    ])
    ref = hf(text=prompt, images=images, audio=audio, videos=[clip], num_frames=3,
             video_metadata={"total_num_frames": 12, "fps": 2.0}, add_special_tokens=False, return_tensors="pt")
    video = ours.video(clip, 2.0, num_frames=3)
    assert video.timestamp_labels == ["00:00", "00:02", "00:04"]
    got = ours(prompt, images=images, audio=audio, videos=[video])

    names = ["input_ids", "attention_mask", "mm_token_type_ids", "input_features", "input_features_mask",
             "pixel_values", "image_position_ids", "pixel_values_videos", "video_position_ids"]
    for name in names:
        assert torch.equal(getattr(got, name), ref[name]), name
        assert getattr(got, name).dtype == ref[name].dtype, name
    assert set(got.as_kwargs()) == set(names)

    ids, types = got.input_ids[0], got.mm_token_type_ids[0]
    assert (types == MM_IMAGE).sum() == sum(patchify_image(images, 140).num_soft_tokens)
    assert (types == MM_AUDIO).sum() == sum(num_audio_tokens(len(a)) for a in audio)
    assert (types == MM_VIDEO).sum() == 3 * video.num_soft_tokens
    boi = ours.tokenizer.token_id("<|image>")
    assert (types[ids == boi] == MM_TEXT).all()  # boundaries are text, outside the vision blocks


def test_processor_text_only_matches_transformers(tmp_path, hf_vision):
    hf = _tiny_checkpoint(tmp_path, hf_vision)
    ours = Gemma4Processor.from_pretrained(tmp_path)
    prompt = build_prompt([Message("user", "  Describe  the\n\tscene: ")])
    ref = hf(text=prompt, add_special_tokens=False, return_tensors="pt")
    got = ours(prompt)
    assert torch.equal(got.input_ids, ref["input_ids"])
    assert torch.equal(got.mm_token_type_ids, ref["mm_token_type_ids"])
    assert ours.tokenizer.decode(got.input_ids[0].tolist(), skip_special_tokens=False) == prompt
