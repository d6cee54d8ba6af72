"""Gemma 4 unified pre-processing: audio frames, image and video patches, prompts and tokens.

This is our numpy/torch equivalent of transformers 5.23.0's `Gemma4UnifiedProcessor` (its feature
extractor, image processor, video processor and placeholder expansion). It turns raw media and a
chat into exactly the tensors `Gemma4UnifiedForConditionalGeneration` consumes: `input_ids`,
`mm_token_type_ids`, `input_features`, `input_features_mask`, `pixel_values`,
`image_position_ids`, `pixel_values_videos`, `video_position_ids`. The tokenizer is the checkpoint's
`tokenizer.json` read by the `tokenizers` library.

It is not a model, a media decoder or a resampler: audio arrives as 16 kHz mono float, images and
video frames as decoded uint8 RGB arrays (H, W, 3). It does not import transformers, torchvision or
jinja2; the chat layout is written out in `build_prompt` from the checkpoint's template (see
docs/gemma4-processing.md). It handles one prompt at a time; batching prompts (and the left padding
that implies) belongs to the engine.

Parity with transformers (tests/model/test_gemma4_processing.py): audio, image and video tensors,
token ids and type ids are bit-exact on CPU. The resize calls the same torch kernel transformers
reaches through torchvision, in the same memory layout, so that is exact by construction.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from patchstream.model.api import PATCH_PX, SAMPLE_RATE, SAMPLES_PER_AUDIO_TOKEN
# The size rule and patch positions are shared with the server's frame patchifier (torch-free).
from patchstream.model.patch_grid import SOFT_TOKEN_BUDGETS, TEACHER_PATCH_PX, check_budget, fit_to_budget, patch_positions  # noqa: F401

# ---------------------------------------------------------------------------------------------
# Constants (units in the names or comments)
# ---------------------------------------------------------------------------------------------

RGB_CHANNELS = 3
PATCH_VALUES = PATCH_PX * PATCH_PX * RGB_CHANNELS  # 6912 raw values per 48x48 RGB patch
IMAGE_SOFT_TOKENS = 280  # default budget per image
VIDEO_FRAME_SOFT_TOKENS = 70  # default budget per video frame
VIDEO_NUM_FRAMES = 32  # frames transformers samples from a clip by default
UNKNOWN_VIDEO_FPS = 24.0  # frames/s transformers assumes for timestamps when the source fps is unknown
PIXEL_RESCALE = 1 / 255  # uint8 -> [0, 1]; images multiply by it, video frames divide by 255 (see below)
PIXEL_MAX = 255.0
PADDING_POSITION = -1  # (x, y) of a padding patch; the model drops these before scattering

# Values of `mm_token_type_ids`, as transformers' processor assigns them (boundary tokens are text).
MM_TEXT, MM_IMAGE, MM_VIDEO, MM_AUDIO = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFeatures:
    """Audio clips cut into 40 ms frames, padded to the longest clip."""

    input_features: torch.Tensor  # float32 (clips, frames, 640): raw samples; zeros past each clip's end
    input_features_mask: torch.Tensor  # bool (clips, frames): True for real frames (a partial last frame is real)

    @property
    def num_tokens(self) -> list[int]:
        """Audio soft tokens per clip (= real frames)."""
        return [int(n) for n in self.input_features_mask.sum(dim=1)]


def num_audio_tokens(num_samples: int) -> int:
    """Soft tokens for a clip of `num_samples` at 16 kHz: one per started 40 ms frame."""
    return math.ceil(num_samples / SAMPLES_PER_AUDIO_TOKEN)


def _frames_of(waveform: np.ndarray) -> np.ndarray:
    # Zero-pad the tail to whole frames, then cast: the same order as transformers, so a float64
    # input rounds to float32 exactly as there.
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"audio must be mono (samples,), got shape {waveform.shape}")
    pad = (-len(waveform)) % SAMPLES_PER_AUDIO_TOKEN
    if pad:
        waveform = np.pad(waveform, (0, pad))
    return waveform.reshape(-1, SAMPLES_PER_AUDIO_TOKEN).astype(np.float32)


def frame_audio(waveforms: np.ndarray | Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE) -> AudioFeatures:
    """Cut 16 kHz mono clips into 640-sample frames (no mel, no normalisation), padded to the longest.

    Samples are used as given: float in [-1, 1] (scale int16 PCM by 1/32768 first). Nothing is
    resampled, so `sample_rate` is only checked.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"audio must be {SAMPLE_RATE} Hz (resample before framing), got {sample_rate} Hz")
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        waveforms = [waveforms]
    frames = [_frames_of(w) for w in waveforms]
    longest = max((len(f) for f in frames), default=0)
    features = np.zeros((len(frames), longest, SAMPLES_PER_AUDIO_TOKEN), dtype=np.float32)
    mask = np.zeros((len(frames), longest), dtype=bool)
    for i, f in enumerate(frames):
        features[i, : len(f)] = f
        mask[i, : len(f)] = True
    return AudioFeatures(torch.from_numpy(features), torch.from_numpy(mask))


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePatches:
    """Images resized to their budget and cut into 48 px patches, padded to the budget."""

    pixel_values: torch.Tensor  # float32 (images, budget, 6912): each patch HWC-flattened, values in [0, 1]
    image_position_ids: torch.Tensor  # int64 (images, budget, 2): (x = column, y = row); (-1, -1) for padding
    num_soft_tokens: tuple[int, ...]  # real patches per image (the rest is padding)


def _to_rgb_chw(image: np.ndarray) -> torch.Tensor:
    # (H, W) / (H, W, 1) greyscale is repeated to RGB, as torchvision's grayscale_to_rgb does.
    # RGBA is refused: transformers composites it onto white in float, which we do not reproduce.
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, RGB_CHANNELS):
        raise ValueError(f"images must be (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return chw.expand(RGB_CHANNELS, -1, -1).contiguous()


def resize_uint8(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize with antialias of uint8 (..., 3, H, W), as torchvision's `resize` does it.

    On CPU torchvision hands uint8 straight to torch's antialiased bicubic kernel (integer
    output); elsewhere it resizes in float32, clamps to [0, 255] and rounds. We do the same, and
    restride a single (1, C, H, W) image to channels-last like torchvision, so the same kernel runs
    on the same memory layout.
    """
    shape = images.shape
    if tuple(shape[-2:]) == (height, width):
        return images
    batch = images.reshape(-1, *shape[-3:])  # (N, C, H, W)
    one_channels_last = batch.is_contiguous(memory_format=torch.channels_last) and batch.shape[0] == 1
    if one_channels_last and batch.numel() != batch.stride(0):
        strides = list(batch.stride())
        strides[0] = batch.numel()
        batch = batch.as_strided(batch.shape, strides)
    native_uint8 = batch.device.type == "cpu"
    x = batch if native_uint8 else batch.to(torch.float32)
    x = F.interpolate(x, size=[height, width], mode="bicubic", align_corners=False, antialias=True)
    if not native_uint8:
        x = x.clamp_(0, PIXEL_MAX).round_().to(torch.uint8)
    return x.reshape(*shape[:-2], height, width)


def _patches_and_positions(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # (..., 3, H, W) -> (..., n, 6912) in row-major patch order, each patch flattened (row, col,
    # channel); positions (n, 2) as (x, y). transformers gets the same by 16 px patchify + 3x3 merge.
    *lead, c, h, w = pixels.shape
    rows, cols = h // PATCH_PX, w // PATCH_PX
    x = pixels.reshape(*lead, c, rows, PATCH_PX, cols, PATCH_PX)
    x = x.permute(*range(len(lead)), -4, -2, -3, -1, -5)  # (..., rows, cols, 48, 48, C)
    patches = x.reshape(*lead, rows * cols, PATCH_VALUES)
    positions = torch.from_numpy(patch_positions(h, w))
    return patches, positions


def _pad_patches(patches: torch.Tensor, positions: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Zero pixels and position (-1, -1) up to the budget, so images of any shape stack.
    missing = budget - patches.shape[-2]
    padded = F.pad(patches, (0, 0, 0, missing))
    padded_pos = F.pad(positions, (0, 0, 0, missing), value=PADDING_POSITION)
    return padded, padded_pos


def patchify_image(
    images: np.ndarray | Sequence[np.ndarray], max_soft_tokens: int = IMAGE_SOFT_TOKENS
) -> ImagePatches:
    """Resize each uint8 (H, W, 3) image to its budget, rescale to [0, 1] and cut into 48 px patches."""
    if isinstance(images, np.ndarray):  # one array is one image; pass a list for several
        images = [images]
    pixel_values, positions, counts = [], [], []
    for image in images:
        chw = _to_rgb_chw(image)
        chw = resize_uint8(chw, *fit_to_budget(chw.shape[1], chw.shape[2], max_soft_tokens))
        # uint8 * python float: computed in float32, bit-identical to transformers' `rescale`.
        patches, pos = _patches_and_positions(chw * PIXEL_RESCALE)
        counts.append(patches.shape[0])
        patches, pos = _pad_patches(patches, pos, max_soft_tokens)
        pixel_values.append(patches)
        positions.append(pos)
    return ImagePatches(torch.stack(pixel_values), torch.stack(positions), tuple(counts))


# ---------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoPatches:
    """Sampled frames of one clip, each patchified like an image at the frame budget."""

    pixel_values_videos: torch.Tensor  # float32 (frames, budget, 6912), values in [0, 1]
    video_position_ids: torch.Tensor  # int64 (frames, budget, 2): (x, y); (-1, -1) for padding
    num_soft_tokens: int  # real patches per frame (every frame of a clip has the same shape)
    timestamps_s: tuple[float, ...]  # media seconds of each sampled frame since the clip start

    @property
    def timestamp_labels(self) -> list[str]:
        """The `mm:ss` text written before each frame in the prompt."""
        return [format_timestamp(t) for t in self.timestamps_s]


def format_timestamp(seconds: float) -> str:
    """`mm:ss` with the seconds truncated, as transformers writes frame times (minutes are not capped)."""
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def sample_frame_indices(
    total_frames: int, video_fps: float | None, num_frames: int | None = VIDEO_NUM_FRAMES, fps: float | None = None
) -> np.ndarray:
    """Indices of the frames to keep: transformers' `default_sample_indices_fn`.

    `num_frames` wins when given (uniform: k * total // num_frames). Otherwise `fps` frames per
    second of the source (needs `video_fps`), at least one. With neither, every frame.
    """
    if num_frames is None and fps is not None:
        if video_fps is None:
            raise ValueError("sampling by fps needs the source video_fps")
        num_frames = max(1, int(total_frames / video_fps * fps))
    if num_frames is None:
        return np.arange(total_frames, dtype=int)
    if num_frames > total_frames:
        raise ValueError(f"cannot sample {num_frames} frames from a clip of {total_frames}")
    return np.arange(num_frames, dtype=int) * total_frames // num_frames


def _patchify_frames(frames: np.ndarray, max_soft_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    # (T, H, W, 3) uint8 -> padded patches (T, budget, 6912), positions (T, budget, 2), real count.
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    clip = clip.expand(-1, RGB_CHANNELS, -1, -1).contiguous()  # (T, 3, H, W)
    clip = resize_uint8(clip, *fit_to_budget(clip.shape[2], clip.shape[3], max_soft_tokens))
    # transformers' video path fuses rescale into a normalise with std 255: x / 255, not x * (1/255).
    patches, pos = _patches_and_positions(clip.to(torch.float32) / PIXEL_MAX)
    count = patches.shape[1]
    patches, pos = _pad_patches(patches, pos[None].expand(len(frames), -1, -1), max_soft_tokens)
    return patches, pos.contiguous(), count


def video_frames(
    frames: np.ndarray,
    video_fps: float | None = None,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    timestamps_s: Sequence[float] | None = None,
    max_soft_tokens: int = VIDEO_FRAME_SOFT_TOKENS,
) -> VideoPatches:
    """Pick frames of a uint8 (T, H, W, 3) clip, resize them to the frame budget and cut them into patches.

    Which frames: `timestamps_s` given -> every frame, at those media times (a live stream that
    picked its own frames); else `fps` frames per second of the source; else `num_frames`
    (default 32) spread uniformly. Sampled frames are timed index / video_fps, 24 fps when unknown.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, RGB_CHANNELS):
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if num_frames is not None and fps is not None:
        raise ValueError("num_frames and fps are mutually exclusive")
    if timestamps_s is not None:
        if len(timestamps_s) != len(frames):
            raise ValueError(f"{len(timestamps_s)} timestamps for {len(frames)} frames")
        indices, times = np.arange(len(frames)), tuple(float(t) for t in timestamps_s)
    else:
        if num_frames is None and fps is None:
            num_frames = VIDEO_NUM_FRAMES
        indices = sample_frame_indices(len(frames), video_fps, num_frames, fps)
        source_fps = video_fps if video_fps is not None else UNKNOWN_VIDEO_FPS
        times = tuple(int(i) / source_fps for i in indices)  # index / fps, as transformers' metadata
    patches, positions, count = _patchify_frames(frames[indices], max_soft_tokens)
    return VideoPatches(patches, positions, count, times)


# ---------------------------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------------------------


class Media(enum.Enum):
    """A media slot in a message; `build_prompt` writes its placeholder token there."""

    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str  # "system", "user", "model" ("assistant" is written as "model", as the template does)
    content: str | tuple[str | Media, ...]  # text, or text parts and media slots in order


@dataclass(frozen=True)
class SpecialTokens:
    """The token strings of the Gemma 4 chat format (names as in the checkpoint's tokenizer_config.json)."""

    bos: str = "<bos>"
    sot: str = "<|turn>"  # start of turn, followed by the role and "\n"
    eot: str = "<turn|>"  # end of turn (id 106, also the IT model's end of answer), followed by "\n"
    soc: str = "<|channel>"  # start of a channel ("thought")
    eoc: str = "<channel|>"  # end of a channel
    think: str = "<|think|>"  # opens the system turn when thinking is on
    image: str = "<|image|>"  # image soft-token placeholder
    boi: str = "<|image>"  # begin image (also wraps each video frame)
    eoi: str = "<image|>"  # end image
    video: str = "<|video|>"  # video soft-token placeholder
    audio: str = "<|audio|>"  # audio soft-token placeholder
    boa: str = "<|audio>"  # begin audio
    eoa: str = "<audio|>"  # end audio

    @classmethod
    def from_tokenizer_config(cls, config: dict) -> "SpecialTokens":
        """Read the `*_token` names a checkpoint's tokenizer_config.json declares; keep defaults otherwise."""
        names = {"bos": "bos_token", "sot": "sot_token", "eot": "eot_token", "soc": "soc_token",
                 "eoc": "eoc_token", "think": "think_token", "image": "image_token", "boi": "boi_token",
                 "eoi": "eoi_token", "audio": "audio_token", "boa": "boa_token", "eoa": "eoa_token"}
        found = {field: config[key] for field, key in names.items() if isinstance(config.get(key), str)}
        return cls(**found)

    @property
    def empty_thought(self) -> str:
        """The closed, empty thought channel the 12B-it template writes when thinking is off."""
        return f"{self.soc}thought\n{self.eoc}"


def _render_content(content: str | tuple[str | Media, ...], tokens: SpecialTokens) -> str:
    # Text is stripped (the template's `| trim`); media slots become bare placeholders, with no
    # blank lines around them (the current 12B template; older Gemma 4 templates added "\n\n").
    if isinstance(content, str):
        return content.strip()
    placeholder = {Media.IMAGE: tokens.image, Media.AUDIO: tokens.audio, Media.VIDEO: tokens.video}
    return "".join(placeholder[part] if isinstance(part, Media) else part.strip() for part in content)


def build_prompt(
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    enable_thinking: bool = False,
    tokens: SpecialTokens = SpecialTokens(),
) -> str:
    """The chat as the Gemma 4 12B-it template renders it, with one placeholder per media slot.

    `<bos>`, an optional system turn (only when thinking is on or the first message is a system
    message), then `<|turn>{role}\\n{content}<turn|>\\n` per message. The generation prompt is
    `<|turn>model\\n`, followed by an empty thought channel when thinking is off; earlier model turns
    carry the same primer so a cached prefix stays valid. Tools are not supported.
    """
    out = [tokens.bos]
    rest = list(messages)
    has_system = bool(rest) and rest[0].role in ("system", "developer")
    if has_system or enable_thinking:
        system = rest.pop(0).content if has_system else ""
        think = f"{tokens.think}\n" if enable_thinking else ""
        out.append(f"{tokens.sot}system\n{think}{_render_content(system, tokens)}{tokens.eot}\n")
    primer = "" if enable_thinking else tokens.empty_thought
    for message in rest:
        role = "model" if message.role == "assistant" else message.role
        lead = primer if role == "model" else ""
        out.append(f"{tokens.sot}{role}\n{lead}{_render_content(message.content, tokens)}{tokens.eot}\n")
    if add_generation_prompt:
        out.append(f"{tokens.sot}model\n{primer}")
    return "".join(out)


def image_replacement(num_soft_tokens: int, tokens: SpecialTokens = SpecialTokens()) -> str:
    """What one image placeholder expands to: `<|image>` + n x `<|image|>` + `<image|>`."""
    return f"{tokens.boi}{tokens.image * num_soft_tokens}{tokens.eoi}"


def audio_replacement(num_soft_tokens: int, tokens: SpecialTokens = SpecialTokens()) -> str:
    """What one audio placeholder expands to: `<|audio>` + n x `<|audio|>` + `<audio|>`."""
    return f"{tokens.boa}{tokens.audio * num_soft_tokens}{tokens.eoa}"


def video_replacement(video: VideoPatches, tokens: SpecialTokens = SpecialTokens()) -> str:
    """What one video placeholder expands to: per frame `mm:ss <|image>` + n x `<|video|>` + `<image|>`, space-joined.

    Video frames reuse the image boundary tokens; each frame is its own bidirectional block.
    """
    frame = f"{tokens.boi}{tokens.video * video.num_soft_tokens}{tokens.eoi}"
    return " ".join(f"{label} {frame}" for label in video.timestamp_labels)


def expand_placeholders(
    prompt: str,
    images: Sequence[str] = (),
    audio: Sequence[str] = (),
    videos: Sequence[str] = (),
    tokens: SpecialTokens = SpecialTokens(),
) -> str:
    """Replace the i-th placeholder of each modality, left to right, by the i-th replacement text."""
    slots = {tokens.image: list(images), tokens.audio: list(audio), tokens.video: list(videos)}
    for placeholder, replacements in slots.items():
        if prompt.count(placeholder) != len(replacements):
            raise ValueError(
                f"prompt has {prompt.count(placeholder)} {placeholder} placeholders for {len(replacements)} inputs"
            )
    pattern = "|".join(re.escape(p) for p, r in slots.items() if r) or r"(?!)"
    queues = {p: iter(r) for p, r in slots.items()}
    return re.sub(pattern, lambda m: next(queues[m.group(0)]), prompt)


# ---------------------------------------------------------------------------------------------
# Tokenizer and the whole processor
# ---------------------------------------------------------------------------------------------


class Gemma4Tokenizer:
    """The checkpoint's tokenizer.json through the `tokenizers` library, plus the special-token ids."""

    def __init__(self, tokenizer: Tokenizer, tokens: SpecialTokens = SpecialTokens()):
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.image_token_id = self.token_id(tokens.image)
        self.video_token_id = self.token_id(tokens.video)
        self.audio_token_id = self.token_id(tokens.audio)

    @classmethod
    def from_file(cls, path: str | Path, tokens: SpecialTokens = SpecialTokens()) -> "Gemma4Tokenizer":
        return cls(Tokenizer.from_file(str(path)), tokens)

    def token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"{token!r} is not in the tokenizer's vocabulary")
        return token_id

    def encode(self, text: str) -> list[int]:
        # No automatic specials: `build_prompt` writes `<bos>` itself (a second one hurts the model).
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


@dataclass(frozen=True)
class ModelInputs:
    """One prompt's tensors, named as `Gemma4UnifiedForConditionalGeneration.forward` takes them."""

    input_ids: torch.Tensor  # int64 (1, T): the expanded prompt
    attention_mask: torch.Tensor  # int64 (1, T): all ones (a single prompt has no padding)
    mm_token_type_ids: torch.Tensor  # int64 (1, T): 0 text, 1 image, 2 video, 3 audio soft token
    input_features: torch.Tensor | None = None  # float32 (clips, frames, 640)
    input_features_mask: torch.Tensor | None = None  # bool (clips, frames)
    pixel_values: torch.Tensor | None = None  # float32 (images, budget, 6912)
    image_position_ids: torch.Tensor | None = None  # int64 (images, budget, 2)
    pixel_values_videos: torch.Tensor | None = None  # float32 (frames of all videos, budget, 6912)
    video_position_ids: torch.Tensor | None = None  # int64 (frames of all videos, budget, 2)

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """The tensors that are present, by name, for `model(**inputs.as_kwargs())`."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def mm_token_types(input_ids: torch.Tensor, tokenizer: Gemma4Tokenizer) -> torch.Tensor:
    """0 for text (boundary tokens included), 1 image, 2 video, 3 audio soft-token placeholders."""
    types = torch.zeros_like(input_ids)
    types[input_ids == tokenizer.image_token_id] = MM_IMAGE
    types[input_ids == tokenizer.video_token_id] = MM_VIDEO
    types[input_ids == tokenizer.audio_token_id] = MM_AUDIO
    return types


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class Gemma4Processor:
    """Media + prompt -> `ModelInputs`, like transformers' `Gemma4UnifiedProcessor.__call__`."""

    def __init__(
        self,
        tokenizer: Gemma4Tokenizer,
        image_soft_tokens: int = IMAGE_SOFT_TOKENS,
        video_frame_soft_tokens: int = VIDEO_FRAME_SOFT_TOKENS,
    ):
        check_budget(image_soft_tokens)
        check_budget(video_frame_soft_tokens)
        self.tokenizer = tokenizer
        self.tokens = tokenizer.tokens
        self.image_soft_tokens = image_soft_tokens  # budget per image
        self.video_frame_soft_tokens = video_frame_soft_tokens  # budget per video frame

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Gemma4Processor":
        """Load tokenizer.json, the token names of tokenizer_config.json and the vision budgets.

        Budgets come from processor_config.json (as transformers 5.x saves it) or the older
        preprocessor_config.json / video_preprocessor_config.json; defaults 280 and 70.
        """
        path = Path(path)
        tokens = SpecialTokens.from_tokenizer_config(_read_json(path / "tokenizer_config.json"))
        processor = _read_json(path / "processor_config.json")
        image = processor.get("image_processor") or _read_json(path / "preprocessor_config.json")
        video = processor.get("video_processor") or _read_json(path / "video_preprocessor_config.json")
        return cls(
            Gemma4Tokenizer.from_file(path / "tokenizer.json", tokens),
            image_soft_tokens=image.get("max_soft_tokens", IMAGE_SOFT_TOKENS),
            video_frame_soft_tokens=video.get("max_soft_tokens", VIDEO_FRAME_SOFT_TOKENS),
        )

    def __call__(
        self,
        prompt: str,
        *,
        images: Sequence[np.ndarray] = (),
        audio: Sequence[np.ndarray] = (),
        videos: Sequence[VideoPatches] = (),
    ) -> ModelInputs:
        """Expand the placeholders of `prompt` (from `build_prompt`) for the media, in order, and tokenize.

        `videos` are already sampled (see `video_frames`); images are uint8 (H, W, 3); audio is
        16 kHz mono float.
        """
        tensors: dict[str, torch.Tensor] = {}
        image_texts, audio_texts = [], []
        if images:
            patches = patchify_image(list(images), self.image_soft_tokens)
            tensors.update(pixel_values=patches.pixel_values, image_position_ids=patches.image_position_ids)
            image_texts = [image_replacement(n, self.tokens) for n in patches.num_soft_tokens]
        if audio:
            features = frame_audio(list(audio))
            tensors.update(input_features=features.input_features, input_features_mask=features.input_features_mask)
            audio_texts = [audio_replacement(n, self.tokens) for n in features.num_tokens]
        if videos:
            tensors.update(
                pixel_values_videos=torch.cat([v.pixel_values_videos for v in videos]),
                video_position_ids=torch.cat([v.video_position_ids for v in videos]),
            )
        video_texts = [video_replacement(v, self.tokens) for v in videos]
        text = expand_placeholders(prompt, image_texts, audio_texts, video_texts, self.tokens)
        input_ids = torch.tensor([self.tokenizer.encode(text)], dtype=torch.int64)
        return ModelInputs(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            mm_token_type_ids=mm_token_types(input_ids, self.tokenizer),
            **tensors,
        )

    def video(self, frames: np.ndarray, video_fps: float | None = None, **sampling) -> VideoPatches:
        """`video_frames` at this processor's frame budget (`sampling`: num_frames, fps, timestamps_s)."""
        return video_frames(frames, video_fps, max_soft_tokens=self.video_frame_soft_tokens, **sampling)
