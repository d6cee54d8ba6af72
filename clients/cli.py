"""The `patchstream` command line: `caption` a file, `serve` the server, run the `demo`.

It is: argument parsing (argparse subcommands) and the small async mains that wire
`clients/stream_client.py` (streaming), `clients/terminal.py` (live display) and
`clients/subtitles.py` (WebVTT/SRT) to either a remote server (`--url`) or one started in this
process (`patchstream.streaming.app.serve_in_process`), plus `serve`, which hands a frozen `ServerConfig` to
`patchstream.streaming.app.run`. The event loop is uvloop's when it is installed.

It is not: the server, the engine, or the protocol; every rule about those lives in `streaming/`,
`model/` and docs/protocol.md. Of the server it imports only `patchstream.streaming.app` (the
launcher's face) and `patchstream.streaming.protocol`. It never imports torch. Exit status: 0 done, 1 a failure
explained on stderr (bad file, no server, a fatal server error), 2 bad arguments, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Coroutine

from patchstream.clients.frame_reader import JpegFrameReader, has_video
from patchstream.clients.stream_client import (
    ClientError,
    ReceivedEvent,
    StreamOptions,
    StreamResult,
    open_file,
    stream_reader,
    write_wav,
)
from patchstream.clients.subtitles import cues_from_finals, to_srt, to_webvtt
from patchstream.clients.terminal import TerminalRenderer
# The server's launcher face (no engine is imported until one is built): `serve` and the
# in-process server of `caption`/`demo` are the only reasons a client reaches the server.
from patchstream.streaming.app import (
    BUNDLED_MODELS,
    ENGINE_NAMES,
    ENGINE_OPTIONS,
    VISION_PARTS,
    AdmissionConfig,
    AuthConfig,
    EngineChoice,
    EngineError,
    JournalConfig,
    LimitsConfig,
    ServerConfig,
    configure_logging,
    load_keys_file,
    mint_token,
    parse_key,
    load_assist_file,
)
from patchstream.streaming.app import run as run_server
from patchstream.streaming.app import run_until_complete, serve_in_process
from patchstream.streaming.protocol import NATIVE_STREAM_PATH

DEFAULT_ENGINE = "whisper"  # the bundled CPU default (faster-whisper tiny.en)
WEB_DIR = Path(__file__).resolve().parent / "web"  # the browser page `serve` offers at GET /
TRANSPORTS = ("websocket", "webrtc")  # how `caption` sends media (the events always come on the websocket)
DEMO_SENTENCES = 4  # about 20 s of speech: long enough to watch captions firm up
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class CaptionJob:
    """Everything one `caption` run needs, resolved from the arguments."""

    file: str  # media file to caption
    url: str | None  # remote server; None starts one in this process
    engine: EngineChoice  # engine of the in-process server (unused with `url`)
    fast: bool  # as fast as the server keeps up instead of real time
    json_lines: bool  # print every event as a JSON line instead of rendering captions
    vtt: str | None  # write finals as WebVTT here
    srt: str | None  # write finals as SRT here
    language: str = "en"  # `start.language`: what is spoken (other than English needs --model base)
    video: bool = True  # stream the file's video too, when it has a video track
    video_fps: float = 1.0  # JPEG frames per media second sent
    api_key: str | None = None  # Bearer credential for a remote server (--api-key / PATCHSTREAM_API_KEY)
    transport: str = "websocket"  # "webrtc": the audio on a peer connection (live pace, no video)
    assist: dict | bool | None = None  # `start.assist`: agent assist events beside the captions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchstream", description="Real-time captioning server and client."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    caption = commands.add_parser(
        "caption", help="caption an audio/video file live",
        description="Stream a media file through a captioning server at real-time pace and show "
        "the captions. Without --url a server is started in this process.",
    )
    caption.add_argument("file", metavar="FILE", help="any audio or video file PyAV can read")
    caption.add_argument("--url", help=f"server to use, e.g. ws://127.0.0.1:8765{NATIVE_STREAM_PATH}")
    caption.add_argument("--fast", action="store_true", help="send as fast as the server keeps up")
    caption.add_argument(
        "--json", action="store_true",
        help="print every server event as one JSON line, with client_time_s and client_wall_time",
    )
    caption.add_argument("--vtt", metavar="PATH", help="write the final captions as WebVTT")
    caption.add_argument("--srt", metavar="PATH", help="write the final captions as SRT")
    caption.add_argument(
        "--language", default="en",
        help="language spoken, e.g. en, de, fr (default en; tiny.en is English-only, --model base is multilingual)",
    )
    caption.add_argument(
        "--no-video", action="store_true",
        help="send only the audio (default: a file's video goes too, as JPEG frames, for interpretations)",
    )
    caption.add_argument(
        "--video-fps", type=float, default=1.0, metavar="FPS",
        help="video frames per second sent (default %(default)s; the server samples to its engine's rate)",
    )
    caption.add_argument(
        "--transport", choices=TRANSPORTS, default="websocket",
        help="websocket (default: PCM and JPEG frames on the websocket) or webrtc (the audio as an Opus "
        "track of a peer connection, as a browser sends it; real-time pace, audio only)",
    )
    caption.add_argument(
        "--assist", nargs="?", const="true", metavar="JSON",
        help="agent assist: redaction, sentiment and a summary, or a JSON object of `start.assist` "
        "options (docs/protocol.md, Agent assist), printed as <sentiment>, <intent>, <summary> lines",
    )
    caption.add_argument(
        "--api-key", default=os.environ.get("PATCHSTREAM_API_KEY"), metavar="SECRET",
        help="credential for --url (an API key or a signed token; default $PATCHSTREAM_API_KEY)",
    )
    _add_engine_arguments(caption, default=None)
    caption.set_defaults(handler=_caption_command)

    serve = commands.add_parser("serve", help="run the captioning server")
    serve.add_argument(
        "--host", default=ServerConfig.host, help="address to bind (default %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=ServerConfig.port, help="TCP port (default %(default)s)"
    )
    _add_engine_arguments(serve, default=DEFAULT_ENGINE)
    serve.add_argument(
        "--max-sessions", type=int, default=LimitsConfig.max_sessions,
        help="concurrent sessions before `server_busy` (default %(default)s)",
    )
    serve.add_argument(
        "--max-backlog-s", type=float, default=LimitsConfig.max_backlog_s,
        help="seconds of audio a session may queue before the oldest is dropped (default %(default)s)",
    )
    serve.add_argument(
        "--certfile", metavar="PEM",
        help="TLS certificate chain: serve https:// and wss:// (browsers allow the microphone on other "
        "machines only over HTTPS; on localhost plain HTTP is enough)",
    )
    serve.add_argument("--keyfile", metavar="PEM", help="the certificate's private key (default: inside --certfile)")
    serve.add_argument("--no-web", action="store_true", help="do not serve the browser page at /")
    serve.add_argument(
        "--assist-config", metavar="FILE",
        help="agent assist every session gets: a JSON object like `start`'s `assist` (docs/protocol.md)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"),
        help="(default %(default)s)",
    )
    _add_operations_arguments(serve)
    serve.set_defaults(handler=_serve_command)

    token = commands.add_parser(
        "token", help="mint a signed, expiring token for a browser page",
        description="Print a token for one API key (ID:SECRET, default the first of $PATCHSTREAM_API_KEYS), "
        "for `?access_token=` on the stream URL. The server needs the same key.",
    )
    token.add_argument("--key", metavar="ID:SECRET", help="the key to sign with")
    token.add_argument("--ttl", type=float, default=600.0, metavar="S", help="lifetime in seconds (default %(default)s)")
    token.set_defaults(handler=_token_command)

    demo = commands.add_parser(
        "demo", help="synthesize English speech and caption it live",
        description="Speak corpus sentences with eSpeak NG, then caption them through an "
        "in-process server at real-time pace.",
    )
    demo.add_argument(
        "--sentences", type=_positive_int, default=DEMO_SENTENCES, metavar="N",
        help="how many sentences to speak (default %(default)s)",
    )
    demo.add_argument("--fast", action="store_true", help="send as fast as the server keeps up")
    demo.add_argument("--vtt", metavar="PATH", help="write the final captions as WebVTT")
    demo.add_argument(
        "--video", action="store_true",
        help="a synthetic talk instead: slides with text (Pillow) and eSpeak speech, as an MP4; "
        "captions and interpretations (on-screen text, scene changes) live",
    )
    _add_engine_arguments(demo, default=DEFAULT_ENGINE)
    demo.set_defaults(handler=_demo_command)
    return parser


def _add_engine_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--engine", choices=ENGINE_NAMES, default=default,
        help=f"engine of the server (default {default or DEFAULT_ENGINE})",
    )
    # A bundled model or a directory, not both: the engine gets one of them as `model_path`.
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model", choices=tuple(BUNDLED_MODELS), metavar="NAME",
        help="bundled Whisper model: " + "; ".join(f"{name} ({summary})" for name, summary in BUNDLED_MODELS.items()),
    )
    model.add_argument(
        "--model-path", metavar="DIR", help="local model directory: CTranslate2 for whisper, a Gemma 4 checkpoint for gemma4 (default: a bundled --model)"
    )
    _add_engine_options(parser)
    parser.add_argument(
        "--vision", default="auto", type=_vision_parts, metavar="PARTS",
        help="interpretations from video beside the captions: comma-separated ocr (on-screen text, "
        "needs the `vision` extra), scenes (scene changes); auto (default: scenes, and ocr when "
        "installed) or none",
    )


def _add_operations_arguments(serve: argparse.ArgumentParser) -> None:
    """Auth, capacity, resume, journal and log flags of `serve` (docs/operations.md)."""
    group = serve.add_argument_group("auth, capacity, resume, journal (docs/operations.md)")
    group.add_argument("--api-key", action="append", default=[], metavar="ID:SECRET",
                       help="accept this API key (repeatable; also $PATCHSTREAM_API_KEYS, comma-separated)")
    group.add_argument("--keys-file", metavar="PATH", help="JSON file of keys with per-key limits")
    group.add_argument("--no-auth", action="store_true",
                       help="serve without keys on a non-loopback address (a private network only)")
    group.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="browser origin allowed besides the server's own, e.g. https://app.example (repeatable; * = any)")
    group.add_argument("--journal-dir", metavar="DIR", default=_default_journal_dir(),
                       help="where finals are journaled, one JSONL per session (default %(default)s; '' = none)")
    group.add_argument("--journal-fsync", choices=("end", "every"), default=JournalConfig.fsync,
                       help="fsync each journal at session end, or after every final (default %(default)s)")
    group.add_argument("--resume-grace-s", type=float, default=ServerConfig.resume_grace_s, metavar="S",
                       help="how long a dropped session waits for its client to resume (default %(default)s; 0 = never)")
    group.add_argument("--target-utilisation", type=float, default=AdmissionConfig.target_utilisation, metavar="F",
                       help="model-thread busy fraction admission fills up to (default %(default)s)")
    group.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="text, or one JSON object per line with session_id and key_id (default %(default)s)")


def _default_journal_dir() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "patchstream", "journal")


def _operations_config(args: argparse.Namespace) -> dict:
    """The ServerConfig fields of `_add_operations_arguments` (ValueError on a bad key)."""
    keys = [parse_key(text) for text in args.api_key]
    keys += [parse_key(text) for text in os.environ.get("PATCHSTREAM_API_KEYS", "").split(",") if text.strip()]
    if args.keys_file:
        keys += load_keys_file(args.keys_file)
    auth = AuthConfig(tuple(keys), tuple(args.allow_origin), loopback_only_when_open=not args.no_auth)
    return dict(
        auth=auth, resume_grace_s=args.resume_grace_s,
        journal=JournalConfig(args.journal_dir or None, args.journal_fsync),
        admission=AdmissionConfig(target_utilisation=args.target_utilisation),
    )


def _token_command(args: argparse.Namespace) -> int:
    text = args.key or next((k for k in os.environ.get("PATCHSTREAM_API_KEYS", "").split(",") if k.strip()), None)
    if text is None:
        print("patchstream: give --key ID:SECRET (or set PATCHSTREAM_API_KEYS)", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(mint_token(parse_key(text), args.ttl))
    except ValueError as error:
        print(f"patchstream: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Engine knobs; each flag's dest is the `EngineChoice.options` key (`ENGINE_OPTIONS` says which engine
    takes it). Unset flags leave the engine's own default (docs/gemma4-engine.md lists them)."""
    group = parser.add_argument_group("gemma4 engine options (with --engine gemma4)")
    group.add_argument(
        "--window-s", dest="window_s", type=float, metavar="S",
        help="most audio in one segment before it is committed and the context resets "
        "(default 15; the 12B loses track of audio beyond about 20 s)",
    )
    group.add_argument(
        "--emit-every-s", dest="emit_every_s", type=float, metavar="S",
        help="new audio between two tentative caption decodes (default 1)",
    )
    group.add_argument(
        "--pause-s", dest="pause_s", type=float, metavar="S",
        help="quiet after speech that closes (commits) a segment (default 0.6)",
    )
    group.add_argument(
        "--instruction", dest="default_instruction", metavar="TEXT",
        help="interpretation instruction for sessions whose `start` sends none (default: none)",
    )
    group.add_argument(
        "--max-batch", dest="max_batch", type=_positive_int, metavar="N",
        help="sessions advanced by one model step (default 8)",
    )
    group.add_argument(
        "--dtype", dest="dtype", choices=("auto", "bfloat16", "float32"),
        help="weights and caches (default auto: bfloat16 on cuda, float32 on cpu)",
    )
    group.add_argument(
        "--device", dest="device", metavar="DEVICE",
        help="cpu, cuda or cuda:N (default auto: cuda when available)",
    )


ENGINE_OPTION_FLAGS = {  # option -> its flag, for messages
    "window_s": "--window-s", "emit_every_s": "--emit-every-s", "pause_s": "--pause-s",
    "default_instruction": "--instruction", "max_batch": "--max-batch", "dtype": "--dtype", "device": "--device",
}


def _engine_options(args: argparse.Namespace) -> dict:
    """The engine options set on the command line (unset ones are left to the engine)."""
    return {name: getattr(args, name) for name in ENGINE_OPTION_FLAGS if getattr(args, name, None) is not None}


def _vision_parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(parts) - {*VISION_PARTS, "auto", "none"}
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"choose from {', '.join((*VISION_PARTS, 'auto', 'none'))}")
    return parts


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `patchstream` console script and `python -m patchstream.clients`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":  # no engine, no media: nothing below applies
        return args.handler(args)
    if args.command == "caption" and args.url and (args.engine or args.model or args.model_path):
        parser.error(
            "--engine, --model and --model-path pick the in-process server's engine; drop them with --url"
        )
    if args.command == "caption" and args.video_fps <= 0:
        parser.error("--video-fps must be above 0")
    options = _engine_options(args)
    if options and args.command == "caption" and args.url:
        parser.error(f"{', '.join(ENGINE_OPTION_FLAGS[n] for n in options)} configure the in-process server's "
                     "engine; drop them with --url")
    engine = args.engine or DEFAULT_ENGINE
    foreign = [n for n in options if n not in ENGINE_OPTIONS.get(engine, ())]
    if foreign:
        takers = sorted(name for name, names in ENGINE_OPTIONS.items() if set(foreign) <= set(names))
        parser.error(f"{', '.join(ENGINE_OPTION_FLAGS[n] for n in foreign)}: options of --engine "
                     f"{' or '.join(takers) or '?'}, not {engine}")
    if args.command == "caption" and args.transport == "webrtc" and args.fast:
        parser.error("--transport webrtc streams live media: drop --fast")
    if args.command == "serve" and args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if args.command == "caption" and args.assist is not None:
        try:
            args.assist = json.loads(args.assist)
        except json.JSONDecodeError:
            parser.error("--assist takes a JSON object (or nothing, for the defaults)")
    return args.handler(args)


def _engine_choice(args: argparse.Namespace) -> EngineChoice:
    return EngineChoice(
        name=args.engine or DEFAULT_ENGINE, model_path=args.model_path or args.model,
        options=_engine_options(args), vision=args.vision,
    )


def _caption_command(args: argparse.Namespace) -> int:
    job = CaptionJob(
        file=args.file, url=args.url, engine=_engine_choice(args), fast=args.fast,
        json_lines=args.json, vtt=args.vtt, srt=args.srt, language=args.language,
        video=not args.no_video, video_fps=args.video_fps, api_key=args.api_key, transport=args.transport, assist=args.assist,
    )
    return run_async(lambda: caption(job))


def _serve_command(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    limits = LimitsConfig(max_sessions=args.max_sessions, max_backlog_s=args.max_backlog_s)
    try:
        assist = load_assist_file(args.assist_config) if args.assist_config else ServerConfig().assist
        operations = _operations_config(args)
    except ValueError as error:
        print(f"patchstream: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = ServerConfig(
            host=args.host, port=args.port, limits=limits, web_dir=None if args.no_web else str(WEB_DIR),
            certfile=args.certfile, keyfile=args.keyfile, assist=assist, **operations,
        )
        run_server(config, _engine_choice(args))
    except (EngineError, OSError, ValueError) as error:  # no model, the port is taken, a bad key or bind
        print(f"patchstream: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _demo_command(args: argparse.Namespace) -> int:
    from patchstream.clients import speech

    if not speech.espeak_available():
        print("patchstream: the demo needs eSpeak NG: pip install espeakng-loader "
              "(or apt-get install espeak-ng)", file=sys.stderr)
        return EXIT_FAILED
    if args.video:
        return _video_demo(args)
    print(f"Synthesizing {args.sentences} sentence(s) with eSpeak NG…", file=sys.stderr)
    script = speech.corpus_script(args.sentences)
    with tempfile.TemporaryDirectory(prefix="patchstream-demo-") as folder:
        wav = Path(folder) / "demo.wav"
        write_wav(wav, script.samples)
        print(f"\nReference text ({script.duration:.1f} s of speech):\n  {script.text}\n")
        print("Live captions (partials update in place, finals print with their media times):\n")
        return _caption_demo_file(wav, args)


def _caption_demo_file(path: Path, args: argparse.Namespace) -> int:
    """Caption a demo's generated file through an in-process server."""
    job = CaptionJob(
        file=str(path), url=None, engine=_engine_choice(args), fast=args.fast,
        json_lines=False, vtt=args.vtt, srt=None,
    )
    return run_async(lambda: caption(job))


def _video_demo(args: argparse.Namespace) -> int:
    try:
        from patchstream.clients import talk_video  # noqa: PLC0415 - needs Pillow (the `vision` extra)

        print("Rendering slides and synthesizing their sentences with eSpeak NG…", file=sys.stderr)
        talk = talk_video.make_talk()
    except ImportError:
        print("patchstream: demo --video renders slides with Pillow: pip install -e '.[vision]'", file=sys.stderr)
        return EXIT_FAILED
    with tempfile.TemporaryDirectory(prefix="patchstream-demo-") as folder:
        video = Path(folder) / "talk.mp4"
        talk_video.write_talk(talk, video)
        print(f"\nA {talk.duration_s:.0f} s talk of {len(talk.slide_texts)} slides. Spoken:\n  {talk.spoken}\n")
        print("Live captions and interpretations (<text> on screen, <scene> changes):\n")
        return _caption_demo_file(video, args)


def run_async(make: Callable[[], Coroutine[None, None, int]]) -> int:
    """Run a coroutine on uvloop (asyncio's loop without it); Ctrl-C exits 130."""
    try:
        return run_until_complete(make())
    except KeyboardInterrupt:
        print("\npatchstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


async def caption(job: CaptionJob) -> int:
    """Stream `job.file`, show or print the events, write subtitles; the exit status."""
    json_sink = _print_json_line if job.json_lines else None
    renderer = None if json_sink else TerminalRenderer.for_stdout()
    on_event = json_sink or renderer.handle
    failure: Exception | None = None
    try:
        result = await _caption_file(job, on_event)
    except (ClientError, EngineError) as error:
        failure = error
    finally:
        if renderer:
            renderer.close()  # before any message, so it does not land on a partial's line
    try:
        if failure is None:
            _write_subtitles(job, result)
    except OSError as error:
        failure = error
    if failure is not None:
        print(f"patchstream: {failure}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _caption_file(job: CaptionJob, on_event: Callable[[ReceivedEvent], None]) -> StreamResult:
    # Open the file first: a bad path should fail before a model spends seconds loading.
    reader = await open_file(job.file)
    info = reader.info
    length = f", {info.duration_s:.1f} s" if info.duration_s else ""
    described = f"{info.codec}, {info.sample_rate} Hz, {info.channels} ch{length}"
    frames = None
    if job.video and job.transport == "websocket" and has_video(job.file):
        frames = JpegFrameReader(job.file, job.video_fps)
        described += f"; video as JPEG at {job.video_fps:g} fps"
    print(f"patchstream: {info.path}: {described}", file=sys.stderr)
    options = StreamOptions(
        url=job.url or "", fast=job.fast, language=job.language, video_fps=job.video_fps, transport=job.transport,
        api_key=job.api_key,
        assist=job.assist,
    )
    if job.transport == "webrtc":
        print("patchstream: audio over WebRTC (an Opus track), events over the websocket", file=sys.stderr)
    try:
        if job.url:
            return await stream_reader(reader, options, on_event, frames)
        print(
            f"patchstream: starting an in-process server ({job.engine.name} engine)…",
            file=sys.stderr,
        )
        async with serve_in_process(ServerConfig(host="127.0.0.1", port=0), job.engine) as server:
            return await stream_reader(reader, dataclasses.replace(options, url=server.url), on_event, frames)
    finally:
        reader.close()
        if frames is not None:
            frames.close()


def _print_json_line(received: ReceivedEvent) -> None:
    print(json.dumps(received.to_json_dict(), ensure_ascii=False), flush=True)


def _write_subtitles(job: CaptionJob, result: StreamResult) -> None:
    cues = cues_from_finals(result.finals)
    if job.vtt:
        Path(job.vtt).write_text(to_webvtt(cues), encoding="utf-8")
    if job.srt:
        Path(job.srt).write_text(to_srt(cues), encoding="utf-8")
