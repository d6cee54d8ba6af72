"""The `patchstream` client: arguments, file reading, the protocol as a client, and end to end.

Protocol-level client behaviour (pacing, fatal errors, lost connections) is checked against small
scripted websocket servers on port 0, so it does not depend on the real server's timing; the end
to end test runs the real in-process server with the fake engine.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from websockets.asyncio.server import serve

from patchstream.clients import speech, stream_client
from patchstream.clients.cli import CaptionJob, _engine_choice, build_parser, caption, main
from patchstream.clients.stream_client import (
    FRAME_BYTES,
    ConnectionLost,
    PcmFileReader,
    ReceivedEvent,
    StreamOptions,
    stream_file,
    write_wav,
)
from patchstream.clients.terminal import CLEAR_LINE, TerminalOptions, TerminalRenderer
from patchstream.model.api import EngineChoice
from patchstream.streaming.protocol import parse_event

SR = 16_000
VTT_TIMING = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$")


def tone(seconds: float, rate: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def tone_wav(tmp_path):
    path = tmp_path / "tone.wav"
    write_wav(path, tone(1.0))
    return path


def final_event(text: str, start: float, end: float, caption_id: str = "c0") -> str:
    return json.dumps({"type": "caption.final", "caption_id": caption_id, "text": text,
                       "start": start, "end": end, "words": []})


READY = json.dumps({"type": "ready", "session_id": "s-test", "engine": "scripted",
                    "sample_rate": SR, "protocol": 1})


class ScriptedServer:
    """A websocket server on port 0 that runs one coroutine per connection."""

    def __init__(self, handler):
        self._handler = handler

    async def __aenter__(self) -> str:
        self._server = await serve(self._handler, "127.0.0.1", 0, compression=None)
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/stream"

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()


# --- arguments -------------------------------------------------------------------------------


def test_caption_arguments_parse_with_defaults():
    args = build_parser().parse_args(["caption", "talk.mp4"])
    assert (args.file, args.url, args.fast, args.json) == ("talk.mp4", None, False, False)
    assert (args.vtt, args.srt) == (None, None)
    assert args.engine is None  # resolved to whisper only when a server is started in-process


def test_caption_arguments_take_every_flag():
    args = build_parser().parse_args([
        "caption", "a.wav", "--url", "ws://h:1/v1/stream", "--fast", "--json",
        "--vtt", "a.vtt", "--srt", "a.srt",
    ])
    assert (args.url, args.fast, args.json) == ("ws://h:1/v1/stream", True, True)
    assert (args.vtt, args.srt) == ("a.vtt", "a.srt")


def test_engine_flags_with_url_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", "a.wav", "--url", "ws://h:1/v1/stream", "--engine", "fake"])
    assert exit_info.value.code == 2
    assert "--url" in capsys.readouterr().err


def test_serve_arguments_map_to_limits():
    args = build_parser().parse_args([
        "serve", "--host", "0.0.0.0", "--port", "9000", "--engine", "fake", "--model-path", "/m",
        "--max-sessions", "3", "--max-backlog-s", "12.5", "--log-level", "debug",
    ])
    assert (args.host, args.port, args.engine, args.model_path) == ("0.0.0.0", 9000, "fake", "/m")
    assert (args.max_sessions, args.max_backlog_s, args.log_level) == (3, 12.5, "debug")


@pytest.mark.parametrize("command", [["serve"], ["caption", "a.wav"], ["demo"]])
def test_the_model_option_reaches_the_engine_choice(command):
    choice = _engine_choice(build_parser().parse_args([*command, "--model", "base"]))
    assert (choice.name, choice.model_path) == ("whisper", "base")
    assert _engine_choice(build_parser().parse_args(command)).model_path is None  # tiny.en


def test_gemma4_engine_options_reach_the_engine_choice_and_unset_ones_stay_unset():
    args = build_parser().parse_args([
        "serve", "--engine", "gemma4", "--model-path", "/ckpt", "--window-s", "10", "--emit-every-s", "0.5",
        "--pause-s", "0.4", "--instruction", "Describe the scene.", "--max-batch", "16", "--dtype", "bfloat16",
        "--device", "cuda:1",
    ])
    assert _engine_choice(args).options == {
        "window_s": 10.0, "emit_every_s": 0.5, "pause_s": 0.4, "default_instruction": "Describe the scene.",
        "max_batch": 16, "dtype": "bfloat16", "device": "cuda:1",
    }
    args = build_parser().parse_args(["serve", "--engine", "gemma4", "--model-path", "/ckpt", "--pause-s", "1"])
    assert _engine_choice(args).options == {"pause_s": 1.0}  # the engine's own defaults for the rest
    assert _engine_choice(build_parser().parse_args(["serve"])).options == {}


@pytest.mark.parametrize("argv", [
    ["serve", "--engine", "whisper", "--window-s", "10"],  # an option of another engine
    ["caption", "a.wav", "--url", "ws://h:1/v1/stream", "--pause-s", "1"],  # no in-process engine
    ["serve", "--engine", "gemma4", "--dtype", "float16"],  # not a choice
    ["serve", "--engine", "gemma4", "--max-batch", "0"],
])
def test_engine_options_that_cannot_apply_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and capsys.readouterr().err


def test_model_and_model_path_are_exclusive_and_names_are_checked():
    for argv in (["serve", "--model", "base", "--model-path", "/m"], ["serve", "--model", "large"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)


def test_demo_arguments_default_to_whisper_and_reject_zero_sentences():
    args = build_parser().parse_args(["demo"])
    assert (args.engine, args.fast, args.sentences >= 1) == ("whisper", False, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--sentences", "0"])


def test_a_subcommand_is_required():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == 2


def test_the_client_never_imports_torch_or_an_engine():
    code = (
        "import sys, patchstream.clients.cli, patchstream.clients.stream_client, patchstream.clients.terminal, patchstream.clients.subtitles\n"
        "loaded = [m for m in ('torch', 'faster_whisper', 'ctranslate2') if m in sys.modules]\n"
        "sys.exit(' '.join(loaded) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- reading files ---------------------------------------------------------------------------


def test_reader_resamples_stereo_44k_to_16k_mono_in_100ms_frames(tmp_path):
    path = tmp_path / "stereo.wav"
    pcm = (np.stack([tone(1.25, 44_100), tone(1.25, 44_100, 880.0)]) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=44_100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout="stereo")
        frame.sample_rate = 44_100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with PcmFileReader(path) as reader:
        assert (reader.info.channels, reader.info.sample_rate) == (2, 44_100)
        frames = []
        while batch := reader.read(4):
            assert len(batch) <= 4
            frames += batch
    assert all(len(frame) == FRAME_BYTES for frame in frames[:-1])
    total_samples = sum(len(frame) for frame in frames) // 2
    assert abs(total_samples - 1.25 * SR) <= 32  # resampler edges only


def test_reader_fills_holes_in_the_file_timeline_with_silence(tmp_path):
    path = tmp_path / "gap.mka"
    pcm = (tone(1.0) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SR, layout="mono")
        for offset in (0, 2 * SR):  # 1 s of tone at 0 s, 1 s more at 2 s: a 1 s hole
            for i in range(0, SR, 1600):
                piece = pcm[i : i + 1600].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(piece, format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = SR, offset + i, Fraction(1, SR)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with PcmFileReader(path) as reader:
        samples = np.frombuffer(b"".join(f for batch in iter(reader.read, []) for f in batch), "<i2")
    assert len(samples) == 3 * SR  # caption times stay on the file's timeline
    assert np.abs(samples[int(1.1 * SR) : int(1.9 * SR)]).max() == 0
    assert np.abs(samples[int(2.1 * SR) :]).max() > 1000


def test_unreadable_file_fails_with_a_clear_message(tmp_path, capsys):
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"\x00not audio at all" * 100)
    assert main(["caption", str(garbage), "--url", "ws://127.0.0.1:9/v1/stream"]) == 1
    assert str(garbage) in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "missing.wav"), "--url", "ws://127.0.0.1:9/v1/stream"]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_connection_refused_fails_with_a_clear_message(tone_wav, capsys, unused_tcp_port):
    assert main(["caption", str(tone_wav), "--url", f"ws://127.0.0.1:{unused_tcp_port}/v1/stream"]) == 1
    assert "connection refused" in capsys.readouterr().err


# --- the protocol, against scripted servers --------------------------------------------------


async def test_realtime_mode_sends_each_frame_when_a_live_capture_would_have_it(tone_wav):
    arrivals: list[float] = []
    received: list[ReceivedEvent] = []

    async def handler(ws):
        start = json.loads(await ws.recv())
        assert start["type"] == "start"
        assert start["audio"] == {"encoding": "pcm_s16le", "sample_rate": SR, "channels": 1}
        await ws.send(READY)
        origin = time.monotonic()
        async for message in ws:
            if isinstance(message, bytes):
                arrivals.append(time.monotonic() - origin)
            elif json.loads(message)["type"] == "stop":
                await ws.send(final_event("A tone.", 0.1, 0.9))
                await ws.send(json.dumps({"type": "ended", "reason": "stop", "captions": 1}))
                return

    async with ScriptedServer(handler) as url:
        result = await stream_file(tone_wav, StreamOptions(url=url), received.append)
    assert len(arrivals) == 10
    # Frame k covers [0.1 k, 0.1 (k + 1)) s: it must not leave before its last sample "exists".
    assert all(at >= 0.1 * (k + 1) - 0.02 for k, at in enumerate(arrivals))
    assert [r.type for r in received] == ["ready", "caption.final", "ended"]
    assert received[0].client_time_s == 0.0  # media time 0 is the arrival of `ready`
    assert received[1].client_time_s >= 1.0  # after the last audio went out
    assert result.audio_sent_s == pytest.approx(1.0)
    assert [f["text"] for f in result.finals] == ["A tone."]


class _SleepSpy:
    """The client's `asyncio`, recording every sleep it asks for (its only pacing tool)."""

    def __init__(self):
        self.sleeps: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, delay, result=None):
        self.sleeps.append(delay)
        return await asyncio.sleep(delay, result)


async def test_fast_mode_stays_within_its_lead_over_the_reported_progress(tone_wav, monkeypatch):
    spy = _SleepSpy()
    monkeypatch.setattr(stream_client, "asyncio", spy)
    frames = [0]  # audio frames received so far
    frames_when_stats_sent: list[int] = []

    async def report_progress_later(ws):
        await asyncio.sleep(0.3)  # time enough for every frame, were the client not waiting
        frames_when_stats_sent.append(frames[0])
        await ws.send(json.dumps({"type": "stats", "audio_processed_s": 10.0}))

    async def handler(ws):
        await ws.recv()
        await ws.send(READY)
        reporter = None
        async for message in ws:
            if isinstance(message, bytes):
                frames[0] += 1
                if frames[0] == 3:
                    reporter = asyncio.create_task(report_progress_later(ws))
            elif json.loads(message)["type"] == "stop":
                await reporter
                await ws.send(json.dumps({"type": "ended", "reason": "stop"}))
                return

    async with ScriptedServer(handler) as url:
        options = StreamOptions(url=url, fast=True, fast_max_ahead_s=0.3)
        result = await stream_file(tone_wav, options, lambda r: None)
    assert frames_when_stats_sent == [3]  # 0.3 s ahead of "processed 0 s", and no further
    assert result.audio_sent_s == pytest.approx(1.0)
    assert spy.sleeps == []  # it waited for the report, never for real time


async def test_fatal_server_error_is_printed_and_exits_nonzero(tone_wav, capsys):
    async def handler(ws):
        await ws.recv()
        await ws.send(json.dumps({"type": "error", "code": "server_busy",
                                  "message": "too many sessions", "fatal": True}))
        await ws.send(json.dumps({"type": "ended", "reason": "error"}))

    async with ScriptedServer(handler) as url:
        job = CaptionJob(file=str(tone_wav), url=url, engine=EngineChoice(), fast=True,
                         json_lines=True, vtt=None, srt=None)
        assert await caption(job) == 1
    out, err = capsys.readouterr()
    assert "server_busy" in err and "too many sessions" in err
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["error", "ended"]


async def test_connection_closed_before_ended_is_an_error(tone_wav):
    async def handler(ws):
        await ws.recv()
        await ws.send(READY)
        await ws.recv()  # one audio frame, then the server vanishes

    async with ScriptedServer(handler) as url:
        with pytest.raises(ConnectionLost):
            await stream_file(tone_wav, StreamOptions(url=url, fast=True), lambda r: None)


# --- terminal rendering ----------------------------------------------------------------------


def received(type_: str, **fields) -> ReceivedEvent:
    return ReceivedEvent(parse_event(json.dumps({"type": type_, **fields})), 1.0, 0.0)


def test_terminal_redraws_partials_in_place_and_prints_finals_with_times():
    out, err = io.StringIO(), io.StringIO()
    renderer = TerminalRenderer(TerminalOptions(out=out, err=err, live=True))
    renderer.handle(received("caption.partial", text="The quick"))
    renderer.handle(received("caption.partial", text="The quick brown"))
    renderer.handle(received("caption.final", text="The quick brown fox.", start=0.32, end=62.5))
    renderer.close()
    assert out.getvalue() == (
        f"{CLEAR_LINE}The quick{CLEAR_LINE}The quick brown{CLEAR_LINE}"
        "[00:00.320 → 01:02.500] The quick brown fox.\n"
    )


def test_terminal_without_a_tty_prints_only_finals_and_warnings_to_stderr():
    out, err = io.StringIO(), io.StringIO()
    renderer = TerminalRenderer(TerminalOptions(out=out, err=err, live=False))
    renderer.handle(received("caption.partial", text="The quick"))
    renderer.handle(received("error", code="audio_dropped", message="fell behind", fatal=False))
    renderer.handle(received("caption.final", text="Done.", start=1.0, end=2.0))
    renderer.close()
    assert out.getvalue() == "[00:01.000 → 00:02.000] Done.\n"
    assert "audio_dropped" in err.getvalue()


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture
def speech_wav(tmp_path):
    path = tmp_path / "speech.wav"
    if speech.espeak_available():
        write_wav(path, speech.corpus_script(1).samples)
    else:
        write_wav(path, np.concatenate([tone(1.5), np.zeros(SR, np.float32), tone(1.5, freq=660.0)]))
    return path


def test_caption_json_fast_end_to_end_with_the_fake_engine(speech_wav, tmp_path, capsys):
    vtt = tmp_path / "out.vtt"
    srt = tmp_path / "out.srt"
    status = main(["caption", str(speech_wav), "--json", "--fast", "--engine", "fake",
                   "--vtt", str(vtt), "--srt", str(srt)])
    out, err = capsys.readouterr()
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    types = [event["type"] for event in events]
    assert types[0] == "ready" and types[-1] == "ended"
    assert "caption.final" in types
    assert events[-1]["reason"] == "stop"
    assert all(isinstance(e["client_time_s"], float) for e in events)
    assert all(isinstance(e["client_wall_time"], float) for e in events)
    times = [e["client_time_s"] for e in events]
    assert times == sorted(times)
    finals = [e for e in events if e["type"] == "caption.final"]

    lines = vtt.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "WEBVTT" and lines[1] == ""
    timings = [line for line in lines if "-->" in line]
    assert timings and all(VTT_TIMING.match(line) for line in timings)
    assert len(timings) >= len([f for f in finals if f["text"].strip()])
    assert srt.read_text(encoding="utf-8").startswith("1\n")


def test_the_language_option_reaches_the_caption_job(monkeypatch):
    jobs = []

    async def fake_caption(job):
        return 0

    def run_now(make):
        coroutine = make()
        coroutine.close()  # the job was captured when the coroutine was made
        return 0

    monkeypatch.setattr("patchstream.clients.cli.caption", lambda job: jobs.append(job) or fake_caption(job))
    monkeypatch.setattr("patchstream.clients.cli.run_async", run_now)
    assert main(["caption", "talk.wav", "--language", "de", "--model", "base"]) == 0
    assert (jobs[0].language, jobs[0].engine.model_path) == ("de", "base")
    assert build_parser().parse_args(["caption", "a.wav"]).language == "en"


def test_caption_takes_a_transport_and_webrtc_refuses_fast(capsys):
    args = build_parser().parse_args(["caption", "talk.wav", "--transport", "webrtc"])
    assert args.transport == "webrtc"
    assert build_parser().parse_args(["caption", "talk.wav"]).transport == "websocket"
    with pytest.raises(SystemExit):
        main(["caption", "talk.wav", "--transport", "webrtc", "--fast"])
    assert "--fast" in capsys.readouterr().err


def test_serve_takes_a_certificate_and_a_key_needs_one(capsys):
    args = build_parser().parse_args(["serve", "--certfile", "c.pem", "--keyfile", "k.pem"])
    assert (args.certfile, args.keyfile, args.no_web) == ("c.pem", "k.pem", False)
    with pytest.raises(SystemExit):
        main(["serve", "--keyfile", "k.pem"])
    assert "--certfile" in capsys.readouterr().err


async def test_caption_over_webrtc_end_to_end_with_the_fake_engine(tmp_path):
    t = np.arange(int(2.5 * SR)) / SR
    wave = np.where((t % 1.0) < 0.5, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0)
    path = tmp_path / "tones.wav"
    write_wav(path, wave.astype(np.float32))
    job = CaptionJob(
        file=str(path), url=None, engine=EngineChoice("fake"), fast=False, json_lines=True,
        vtt=str(tmp_path / "out.vtt"), srt=None, transport="webrtc",
    )
    assert await caption(job) == 0
    vtt = (tmp_path / "out.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "w0" in vtt and "w2" in vtt
