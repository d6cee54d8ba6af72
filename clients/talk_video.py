"""A synthetic talk: rendered slides with text, spoken by eSpeak NG, muxed into a video file.

It is: what `patchstream demo --video`, the end-to-end tests and the video benchmark stream.
Each slide has a title and a bullet (rendered with Pillow on its own background colour, so a
slide change is also a scene change) and a sentence spoken over it; the slide stays up while its
sentence is spoken plus a pause. `make_talk` returns the media (frames as arrays, audio as float32
16 kHz) and the truth (slide texts, cut times, spoken words); `write_talk` muxes it as MP4
(H.264 + AAC) or WebM (VP8 + Opus) with PyAV, audio and video interleaved by time.

It is not: natural video. The slides are flat and the voice is eSpeak's; the point is that the
on-screen text, the cut times and the spoken words are known exactly.
Pillow comes with the `vision` extra (and the test extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from patchstream.clients import speech

SAMPLE_RATE = speech.SAMPLE_RATE  # Hz of the talk's audio
FRAME_SIZE = (720, 1280)  # (height, width): 720p
BACKGROUNDS = ((24, 48, 112), (112, 32, 40), (24, 96, 56), (88, 56, 120), (120, 88, 24), (32, 96, 112))
SLIDE_PAUSE_S = 1.0  # silence after a slide's sentence, before the next slide
TITLE_PX, BULLET_PX = 72, 56  # font sizes at 720p

SLIDES = (
    ("Quarterly results", "Revenue grew twelve percent", "Our revenue grew by twelve percent this quarter."),
    ("Customer feedback", "Support tickets fell by half", "Customers opened half as many support tickets."),
    ("Next steps", "Hire two engineers", "Next quarter we plan to hire two more engineers."),
    ("Open questions", "Pricing for schools", "We still need to decide on pricing for schools."),
    ("Roadmap", "Offline mode ships in March", "The offline mode is planned to ship in March."),
    ("Thank you", "Questions welcome", "Thank you for listening, and questions are welcome."),
)


@dataclass(frozen=True)
class Talk:
    """A synthetic talk and its ground truth."""

    audio: np.ndarray  # float32 (n,) at SAMPLE_RATE
    slide_images: tuple[np.ndarray, ...]  # uint8 (720, 1280, 3) per slide
    slide_starts: tuple[float, ...]  # media seconds each slide appears (the first at 0: cuts are the rest)
    slide_texts: tuple[str, ...]  # "title\nbullet" of each slide, as rendered
    spoken: str  # every sentence, in order
    words: tuple[speech.TimedWord, ...]  # every spoken word with its media times (eSpeak's word events)
    duration_s: float  # media seconds of the whole talk

    def slide_at(self, time_s: float) -> int:
        """Index of the slide shown at `time_s`."""
        return max(i for i, start in enumerate(self.slide_starts) if start <= time_s)

    @property
    def cuts(self) -> tuple[float, ...]:
        return self.slide_starts[1:]


def render_slide(title: str, bullet: str, background: tuple[int, int, int], size=FRAME_SIZE) -> np.ndarray:
    """One slide: a title and a bullet in white on a flat background."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415 - the `vision` extra

    height, width = size
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    scale = height / FRAME_SIZE[0]
    draw.text((int(80 * scale), int(120 * scale)), title, fill="white", font=ImageFont.load_default(size=int(TITLE_PX * scale)))
    draw.text((int(80 * scale), int(320 * scale)), "- " + bullet, fill=(235, 235, 235), font=ImageFont.load_default(size=int(BULLET_PX * scale)))
    return np.asarray(image)


def make_talk(slides=SLIDES, repeat_to_s: float = 0.0, size=FRAME_SIZE) -> Talk:
    """Speak each slide's sentence with its slide up; repeat the deck until `repeat_to_s` seconds."""
    audio: list[np.ndarray] = []
    images, starts, texts, spoken, words = [], [], [], [], []
    time_s, index = 0.0, 0
    while index < len(slides) or time_s < repeat_to_s:
        title, bullet, sentence = slides[index % len(slides)]
        said = speech.build_script([sentence], pause_s=SLIDE_PAUSE_S, lead_s=0.4)
        voice = said.samples
        words += [speech.TimedWord(w.text, w.start + time_s, w.end + time_s) for w in said.words]
        if index < len(slides):
            images.append(render_slide(title, bullet, BACKGROUNDS[index % len(BACKGROUNDS)], size))
        else:  # the deck again: the same slide objects (a 5-minute talk holds six images, not 75)
            images.append(images[index % len(slides)])
        starts.append(time_s)
        texts.append(f"{title}\n- {bullet}")
        spoken.append(sentence)
        audio.append(voice)
        time_s += len(voice) / SAMPLE_RATE
        index += 1
    samples = np.concatenate(audio).astype(np.float32)
    return Talk(samples, tuple(images), tuple(starts), tuple(texts), " ".join(spoken), tuple(words), len(samples) / SAMPLE_RATE)


def write_talk(talk: Talk, path: str | Path, fps: int = 5, container: str = "mp4") -> None:
    """Mux the talk: `mp4` (H.264 + AAC) or `webm` (VP8 + Opus), `fps` video frames per second."""
    video_codec, audio_codec, audio_rate = {"mp4": ("libx264", "aac", 16_000), "webm": ("libvpx", "libopus", 48_000)}[container]
    height, width = talk.slide_images[0].shape[:2]
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # Fast encoder settings: flat slides compress well anyway, and libvpx's default takes ~1 s a frame.
        video.options = {"preset": "veryfast"} if container == "mp4" else {"deadline": "realtime", "cpu-used": "8"}
        audio = out.add_stream(audio_codec, rate=audio_rate, layout="mono")
        resampler = av.AudioResampler(format=audio.codec_context.format.name, layout="mono", rate=audio_rate)
        chunk = SAMPLE_RATE // fps  # audio per video frame, so the two stay interleaved by time
        for number in range(int(talk.duration_s * fps)):
            frame = av.VideoFrame.from_ndarray(talk.slide_images[talk.slide_at(number / fps)], format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, fps)
            out.mux(video.encode(frame))
            pcm = (np.clip(talk.audio[number * chunk : (number + 1) * chunk], -1, 1) * 32767).astype(np.int16)
            piece = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = SAMPLE_RATE, number * chunk, Fraction(1, SAMPLE_RATE)
            for resampled in resampler.resample(piece):
                out.mux(audio.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(audio.encode(resampled))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
