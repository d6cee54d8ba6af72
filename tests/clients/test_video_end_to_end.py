"""Video end to end: a generated talk (720p slides with rendered text, eSpeak speech) muxed as
MP4, streamed by the client library at real-time pace (audio as PCM, video as 1 fps JPEG frames)
through the real websocket server running Whisper tiny.en composed with the OCR/scene engine.

It checks what the issue asks: captions and interpretations arrive in media-time order, the OCR
text matches the rendered text (character error rate), scene changes land within one sampled
frame of the true cut, and captions still read the speech. Slow: real models, 25 s of real time.
"""

from __future__ import annotations

import asyncio

import pytest

from patchstream.clients import speech
from patchstream.clients.frame_reader import JpegFrameReader
from patchstream.clients.stream_client import StreamOptions, open_file, stream_reader
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

jiwer = pytest.importorskip("jiwer")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not speech.espeak_available(), reason="needs eSpeak NG"),
]

MAX_OCR_CER = 0.1  # character error rate of each slide's text as read
MAX_CAPTION_WER = 0.35  # eSpeak through tiny.en, live
ORDER_SLACK_S = 4.0  # an event may describe media up to this much older than one sent before it


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    pytest.importorskip("rapidocr")
    from patchstream.clients.talk_video import make_talk, write_talk  # noqa: PLC0415 - needs Pillow

    talk = make_talk()
    path = tmp_path_factory.mktemp("talk") / "talk.mp4"
    write_talk(talk, path)
    return talk, path


@pytest.fixture(scope="module")
def events(talk):
    _, path = talk
    received = []

    async def run():
        engine = build_engine(EngineChoice("whisper", vision=("ocr", "scenes")))
        async with Server(ServerConfig(port=0), engine) as server:
            reader = await open_file(path)
            frames = JpegFrameReader(path, fps=1.0)
            try:
                return await stream_reader(reader, StreamOptions(url=server.url), received.append, frames)
            finally:
                reader.close()
                frames.close()

    result = asyncio.run(run())
    assert result.ended["reason"] == "stop"
    return [event.fields for event in received]


def of_type(events, *kinds):
    return [event for event in events if event["type"] in kinds]


def first_appearances(events):
    """Caption finals and each interpretation's first event, in arrival order."""
    seen, out = set(), []
    for event in events:
        if event["type"] == "caption.final":
            out.append(event)
        elif event["type"].startswith("interpretation.") and event["interpretation_id"] not in seen:
            seen.add(event["interpretation_id"])
            out.append(event)
    return out


def test_captions_and_interpretations_arrive_in_media_time_order(events):
    arrivals = first_appearances(events)
    for kind in ("caption.final", "text", "scene"):
        starts = [e["start"] for e in arrivals if e["type"] == kind or e.get("kind") == kind]
        assert starts == sorted(starts), (kind, starts)
    latest = 0.0
    for event in arrivals:
        assert event["start"] >= latest - ORDER_SLACK_S, (event, latest)
        latest = max(latest, event["start"])
    kinds = {e.get("kind") for e in arrivals}
    assert {"text", "scene"} <= kinds and of_type(events, "caption.final")


def test_on_screen_text_matches_the_rendered_slides(events, talk):
    truth, _ = talk
    texts = [e for e in of_type(events, "interpretation.final") if e["kind"] == "text"]
    read = {truth.slide_at(e["start"]): e["text"] for e in texts}
    assert sorted(read) == list(range(len(truth.slide_texts)))  # every slide read, none twice
    for index, text in read.items():
        cer = jiwer.cer(truth.slide_texts[index].lower(), text.lower())
        assert cer <= MAX_OCR_CER, (truth.slide_texts[index], text, cer)
    for event in texts:  # each text spans the frames of its own slide
        assert truth.slide_at(event["start"]) == truth.slide_at(event["end"])


def test_scene_changes_land_within_one_sampled_frame_of_the_cut(events, talk):
    truth, _ = talk
    scenes = [e for e in of_type(events, "interpretation.final") if e["kind"] == "scene"]
    assert len(scenes) == len(truth.cuts), scenes
    for scene, cut in zip(scenes, truth.cuts):
        assert scene["start"] <= cut <= scene["end"] and scene["end"] - cut <= 1.0, (scene, cut)
        assert scene["frame_times"] == [scene["start"], scene["end"]]


def test_captions_still_read_the_speech(events, talk):
    truth, _ = talk
    said = " ".join(e["text"] for e in of_type(events, "caption.final"))
    wer = jiwer.wer(speech.normalize_text(truth.spoken), speech.normalize_text(said))
    assert wer <= MAX_CAPTION_WER, (said, wer)
    stats = of_type(events, "stats")[-1]
    assert stats["dropped_audio_s"] == 0.0 and stats["frames_received"] >= int(truth.duration_s) - 1
