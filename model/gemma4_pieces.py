"""Token pieces of a live Gemma 4 unified session: the prompt text around the media and the media themselves.

What this is: turns the chat format of a live session into embeddings the decoder appends, one piece at a time.
A session's context reads

    <bos><|turn>user\\n{caption instruction}{bias words}   <- the instruction prefix, cached per engine
    {carried words of the last segment}                    <- what the memory policy keeps of the past
    <|audio>{audio tokens}<audio|> mm:ss <|image>{patches}<image|> <|audio>{audio tokens} ...
                                                           <- media as it arrives: audio segments cut by frames
    <audio|><turn|>\\n<|turn>model\\n<|channel>thought\\n<channel|>        <- caption suffix (rolled back)
    <audio|><turn|>\\n<|turn>user\\n{instruction}<turn|>\\n<|turn>model\\n... <- interpretation suffix (rolled back)

The spec documents no format for simultaneous audio and video (design §8.3); this one closes the open audio
segment before a frame and reopens it after, with the frame's `mm:ss` label as the video template writes it.

What this is not: the emission or memory policy (model/gemma4_engine.py) or the decoder forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from patchstream.model.api import PATCH_PX, SAMPLES_PER_AUDIO_TOKEN
from patchstream.model.gemma4 import MM_AUDIO, MM_VIDEO, Gemma4Unified
from patchstream.model.gemma4_processing import Gemma4Tokenizer, format_timestamp, video_frames
from patchstream.model.patch_grid import fit_to_budget


@dataclass(frozen=True)
class Piece:
    """Tokens to append to one session, already embedded."""

    embeds: torch.Tensor  # (n, d) scaled text embeddings with soft tokens in place
    types: torch.Tensor | None  # (n,) mm token types, None for text only
    audio_tokens: int = 0  # audio soft tokens in the piece (media time advances 40 ms each)


class PieceMaker:
    """Builds pieces for one model and tokenizer (shared by all sessions)."""

    def __init__(self, model: Gemma4Unified, tokenizer: Gemma4Tokenizer, frame_soft_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = tokenizer.tokens
        self.frame_soft_tokens = frame_soft_tokens  # patch budget per video frame (70 = the 12B's video default)
        self.device = model.decoder.embed_tokens.weight.device

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def text(self, text: str) -> Piece:
        ids = torch.tensor([self.ids(text)], device=self.device)
        return Piece(self.model.decoder.embed(ids)[0], None)

    def prefix(self, caption_instruction: str, prompt: str) -> Piece:
        words = f" Words that may occur: {prompt.strip()}." if prompt.strip() else ""
        return self.text(f"{self.tokens.bos}{self.tokens.sot}user\n{caption_instruction}{words}\n")

    def carry(self, words: str) -> Piece | None:
        """The last committed words of the closed segment, so the next one continues the sentence."""
        return self.text(f"(Previously: {words})\n") if words else None

    def caption_suffix(self, audio_open: bool) -> Piece:
        close = self.tokens.eoa if audio_open else ""
        t = self.tokens
        return self.text(f"{close}{t.eot}\n{t.sot}model\n{t.empty_thought}")

    def interpretation_suffix(self, audio_open: bool, instruction: str) -> Piece:
        close = self.tokens.eoa if audio_open else ""
        t = self.tokens
        return self.text(f"{close}{t.eot}\n{t.sot}user\n{instruction.strip()}{t.eot}\n{t.sot}model\n{t.empty_thought}")

    def audio(self, samples: np.ndarray, open_segment: bool) -> Piece:
        """samples (n * 640,) float32 -> `<|audio>`? + n audio soft tokens."""
        n = len(samples) // SAMPLES_PER_AUDIO_TOKEN
        ids = ([self.model.config.boa_token_id] if open_segment else []) + [self.model.config.audio_token_id] * n
        ids_t = torch.tensor([ids], device=self.device)
        frames = torch.from_numpy(samples.reshape(1, n, SAMPLES_PER_AUDIO_TOKEN)).to(self.device)
        embeds = self.model.embed_inputs(ids_t, input_features=frames)[0]
        types = torch.tensor([MM_AUDIO if i == self.model.config.audio_token_id else 0 for i in ids])
        return Piece(embeds, types, n)

    def _frame_lead(self, time_s: float, close_audio: bool) -> list[int]:
        return ([self.model.config.eoa_token_index] if close_audio else []) + self.ids(f" {format_timestamp(time_s)} ")

    def frame_length(self, shape: tuple[int, ...], time_s: float, close_audio: bool) -> int:
        """Tokens `frame` makes of a frame of this (H, W, 3) shape, without touching its pixels."""
        height, width = fit_to_budget(shape[0], shape[1], self.frame_soft_tokens)
        return len(self._frame_lead(time_s, close_audio)) + 2 + (height // PATCH_PX) * (width // PATCH_PX)

    def frame(self, pixels: np.ndarray, time_s: float, close_audio: bool) -> Piece:
        """One video frame, whole: `<audio|>`? ` mm:ss <|image>` + its patches + `<image|>`."""
        patches = video_frames(pixels[None], timestamps_s=[time_s], max_soft_tokens=self.frame_soft_tokens)
        cfg = self.model.config
        lead = self._frame_lead(time_s, close_audio)
        ids = lead + [cfg.boi_token_id] + [cfg.video_token_id] * patches.num_soft_tokens + [cfg.eoi_token_id]
        ids_t = torch.tensor([ids], device=self.device)
        embeds = self.model.embed_inputs(
            ids_t, pixel_values_videos=patches.pixel_values_videos.to(self.device),
            video_position_ids=patches.video_position_ids.to(self.device))[0]
        types = torch.tensor([MM_VIDEO if i == cfg.video_token_id else 0 for i in ids])
        return Piece(embeds, types)
