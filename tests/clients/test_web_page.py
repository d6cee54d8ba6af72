"""The browser page end to end in real headless Chromium (Debian's, driven by playwright), for
both transports: WebRTC (Opus + VP8 on a peer connection) and websocket (AudioWorklet PCM16 +
canvas JPEG frames).

Chromium's fake devices play a real speech recording as the microphone (looped by Chromium, so
the file is padded with silence and the test stops before it comes round again) and a
generated two-scene video as the camera. The page's final captions must match the recording's
reference within a WER bound, the interpretation pane must show the camera was read, and a
screenshot of the page is saved under `tmp/artifacts/` as a test artifact (its path printed).

Slow: a real model and a real browser, about 20 s of real time per transport.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from patchstream.bench.speech_set import default_speech_dir
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import LimitsConfig, ServerConfig
from patchstream.streaming.server import Server

jiwer = pytest.importorskip("jiwer")
playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPEECH = default_speech_dir() / "ls_2412-153948-0000.wav"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(not SPEECH.exists(), reason="needs the development speech set in ../shared/speech"),
]

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "clients" / "web"
ARTIFACTS = ROOT / "tmp" / "artifacts"
LEAD_S, TAIL_S = 1.0, 4.0  # silence around the speech: Chromium loops the file
MAX_WER = 0.3  # tiny.en, live, through Opus or PCM16 in a browser
STEP_TIMEOUT_MS = 90_000  # generous: two cores shared by the browser, the model and other tests
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # plain host candidates, no mDNS names to resolve
]


def reference_words() -> list[str]:
    import csv  # noqa: PLC0415

    with open(SPEECH.parent / "manifest.tsv", newline="", encoding="utf-8") as manifest:
        row = next(r for r in csv.DictReader(manifest, delimiter="\t") if r["file"] == SPEECH.name)
    return normalize(row["reference"])


def normalize(text: str) -> list[str]:
    """The speech set's normalization (its README): lower case, only a-z, 0-9 and '."""
    return [w for w in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split() if w]


def write_microphone(path: Path) -> float:
    """The speech padded with silence as 48 kHz 16-bit WAV (temporary; never in the repo)."""
    with av.open(str(SPEECH)) as source:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        pieces = [f.to_ndarray() for frame in source.decode(audio=0) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray() for f in resampler.resample(None)]
    speech = np.concatenate(pieces, axis=1)
    silence = lambda s: np.zeros((1, int(s * 48_000)), np.int16)  # noqa: E731
    samples = np.concatenate([silence(LEAD_S), speech, silence(TAIL_S)], axis=1)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 48_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return samples.shape[1] / 48_000


def write_camera(path: Path, seconds: float = 8.0, fps: int = 10) -> None:
    """Two scenes (dark blue with a bar, bright yellow with a disc) cut every 2 s, as Y4M."""
    width, height = 320, 240
    y, x = np.mgrid[0:height, 0:width]
    scenes = []
    for luma, cb, cr, shape in ((40, 200, 110, (abs(y - 120) < 20)), (210, 40, 150, ((x - 160) ** 2 + (y - 120) ** 2 < 60**2))):
        plane = np.where(shape, 255 - luma, luma).astype(np.uint8)
        scenes.append(plane.tobytes() + bytes([cb]) * (width * height // 4) + bytes([cr]) * (width * height // 4))
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(int(seconds * fps)):
            out.write(b"FRAME\n" + scenes[(index // (2 * fps)) % 2])


@pytest.fixture(scope="module")
def engine():
    return build_engine(EngineChoice("whisper", vision=("scenes",)))


@pytest.fixture(scope="module")
def fake_devices():
    with tempfile.TemporaryDirectory(prefix="patchstream-web-") as folder:
        microphone, camera = Path(folder) / "speech.wav", Path(folder) / "camera.y4m"
        duration = write_microphone(microphone)
        write_camera(camera)
        yield microphone, camera, duration


async def wait_for(page, condition: str) -> None:
    await page.wait_for_function(condition, timeout=STEP_TIMEOUT_MS, polling=200)


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_the_page_captions_microphone_speech_and_reads_the_camera(transport, engine, fake_devices, capsys):
    microphone, camera, duration = fake_devices
    config = ServerConfig(port=0, web_dir=str(WEB_DIR), shutdown_grace_s=2.0)
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}", f"--use-file-for-fake-video-capture={camera}"]
    async with Server(config, engine) as server, playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags, chromium_sandbox=False)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            await page.goto(f"{server.page_url}?transport={transport}")
            await page.select_option("#camera", index=1)  # the fake camera
            await page.click("#start")
            await wait_for(page, "window.patchstream.state === 'streaming'")
            # Until the speech and most of the silence after it have been received: never into the loop.
            heard = duration - TAIL_S / 2
            await wait_for(
                page, f"window.patchstream.events.some(e => e.type === 'stats' && e.audio_received_s >= {heard})"
            )
            await page.click("#stop")
            await wait_for(page, "window.patchstream.state === 'ended'")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"web-page-{transport}.png"
            await page.screenshot(path=str(shot), full_page=True)
            with capsys.disabled():
                print(f"\nscreenshot: {shot}")
            finals = await page.locator("#captions p.final").all_inner_texts()
            events = await page.evaluate("window.patchstream.events")
            errors = await page.locator("#errors p").all_inner_texts()
            vtt = await page.evaluate("window.patchstream.transcript.webVTT()")
        finally:
            await browser.close()
    assert [e["reason"] for e in events if e["type"] == "ended"] == ["stop"], errors
    assert not [e for e in events if e["type"] == "error"], errors
    spoken = normalize(" ".join(re.sub(r"^\d\d:\d\d", "", line) for line in finals))
    wer = jiwer.wer(" ".join(reference_words()), " ".join(spoken))
    assert wer <= MAX_WER, (wer, spoken)
    assert vtt.startswith("WEBVTT") and vtt.count("-->") == len(finals)
    stats = [e for e in events if e["type"] == "stats"]
    assert stats[-1]["frames_received"] > 0  # the camera reached the server ...
    assert [e for e in events if e["type"].startswith("interpretation.")]  # ... and was read (scene changes)


async def test_the_page_explains_a_busy_server_and_a_denied_microphone(fake_devices):
    microphone, _, _ = fake_devices
    config = ServerConfig(port=0, web_dir=str(WEB_DIR), limits=LimitsConfig(max_sessions=0))
    granted = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"]
    # Without the fake permission UI, headless Chromium denies the media permission prompt.
    denied = [flag for flag in granted if flag != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"]
    messages = {}
    async with Server(config, build_engine(EngineChoice("fake"))) as server, playwright_api.async_playwright() as playwright:
        for name, flags in (("busy", granted), ("denied", denied)):
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags, chromium_sandbox=False)
            try:
                page = await browser.new_page()
                await page.goto(f"{server.page_url}?transport=websocket")
                await page.click("#start")
                await page.wait_for_selector("#errors p", timeout=STEP_TIMEOUT_MS)
                await wait_for(page, "window.patchstream.state === 'ended' || window.patchstream.state === 'idle'")
                messages[name] = await page.locator("#errors p").all_inner_texts()
            finally:
                await browser.close()
    assert any("busy" in m and "server_busy" in m for m in messages["busy"]), messages
    assert any(m.startswith("Permission denied") for m in messages["denied"]), messages


async def test_with_a_certificate_the_page_works_over_https_and_wss(fake_devices, tmp_path):
    from tests.streaming.test_static_files import self_signed  # noqa: PLC0415 - one certificate maker

    microphone, _, _ = fake_devices
    certfile, keyfile = self_signed(tmp_path)
    config = ServerConfig(port=0, web_dir=str(WEB_DIR), certfile=str(certfile), keyfile=str(keyfile))
    # The test's own self-signed certificate: trusted by this browser only.
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}", "--ignore-certificate-errors"]
    async with Server(config, build_engine(EngineChoice("fake"))) as server, playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags, chromium_sandbox=False)
        try:
            page = await browser.new_page()
            await page.goto(f"{server.page_url}?transport=webrtc")
            assert server.page_url.startswith("https://") and await page.evaluate("window.isSecureContext")
            await page.click("#start")
            await wait_for(page, "window.patchstream.events.some(e => e.type === 'caption.partial')")
            await page.click("#stop")
            await wait_for(page, "window.patchstream.state === 'ended'")
            events = await page.evaluate("window.patchstream.events")
        finally:
            await browser.close()
    assert events[0]["type"] == "ready" and events[-1] == {**events[-1], "type": "ended", "reason": "stop"}


async def test_a_server_with_keys_takes_the_page_with_a_token_and_explains_a_missing_one(fake_devices):
    from patchstream.streaming.auth import ApiKey, AuthConfig, mint_token

    microphone, _, _ = fake_devices
    key = ApiKey("page", "s3cret-for-the-page")
    config = ServerConfig(port=0, web_dir=str(WEB_DIR), auth=AuthConfig(keys=(key,)), shutdown_grace_s=2.0)
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"]
    seen = {}
    async with Server(config, build_engine(EngineChoice("fake"))) as server, playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags, chromium_sandbox=False)
        try:
            for name, query in (("token", f"&access_token={mint_token(key, 600)}"), ("none", "")):
                page = await browser.new_page()
                await page.goto(f"{server.page_url}?transport=websocket{query}")
                await page.click("#start")
                await wait_for(page, "['streaming', 'ended', 'idle'].includes(window.patchstream.state)")
                seen[name] = (await page.evaluate("window.patchstream.state"), await page.locator("#errors p").all_inner_texts())
                if seen[name][0] == "streaming":
                    await page.click("#stop")
                    await wait_for(page, "window.patchstream.state === 'ended'")
                await page.close()
        finally:
            await browser.close()
    assert seen["token"] == ("streaming", []), seen
    state, errors = seen["none"]
    assert state != "streaming" and any("access_token" in error for error in errors), seen
    assert not any(key.secret in error for _, texts in seen.values() for error in texts)
