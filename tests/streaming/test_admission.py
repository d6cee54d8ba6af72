"""Admission by measured capacity, metrics, readiness and session-tagged logs."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect

from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.admission import AdmissionConfig, CapacityModel
from patchstream.streaming.auth import Principal
from patchstream.streaming.config import SchedulerConfig, ServerConfig
from patchstream.streaming.logging_context import ContextFilter, JsonFormatter
from patchstream.streaming.server import Server
from tests.streaming.faults import CostlyEngine
from tests.streaming.test_resume import get
from tests.streaming.test_server import PCM_START, run_session, tone_pcm, until_ended


def test_capacity_follows_the_measured_cost_of_a_stream():
    model = CapacityModel(AdmissionConfig(target_utilisation=0.8))
    model.warmed_up(busy_s=0.5, media_s=2.0)  # a quarter of real time per stream
    assert model.capacity(0.0) == pytest.approx(3.2)
    assert model.decide(streams=2, max_backlog_s=0.0, now=0.0) is None  # 0.5 + 0.25 ≤ 0.8
    refusal = model.decide(streams=3, max_backlog_s=0.0, now=0.0)  # 0.75 + 0.25 > 0.8
    assert refusal.code == "server_busy" and refusal.retry_after_s == 10.0 and "capacity" in refusal.message
    for second in range(10):  # real traffic: batching made a stream cheaper
        model.observe_step(busy_s=0.3, media_s=3.0, now=100.0 + second)
    assert model.cost_per_stream(110.0) == pytest.approx(0.1)
    assert model.utilisation(110.0) == pytest.approx(0.3)
    assert model.decide(streams=3, max_backlog_s=0.0, now=110.0) is None
    assert model.decide(streams=8, max_backlog_s=0.0, now=110.0) is not None  # 0.8 + 0.1
    assert model.cost_per_stream(500.0) == pytest.approx(0.1)  # idle: the last measurement stands
    assert model.decide(streams=0, max_backlog_s=0.0, now=110.0) is None  # just-ended work is not load


def test_a_model_that_is_behind_admits_nobody():
    model = CapacityModel(AdmissionConfig(max_lag_s=3.0))
    assert model.decide(0, max_backlog_s=3.5, now=0.0).code == "server_busy"
    assert CapacityModel(AdmissionConfig(enabled=False)).decide(100, 99.0, 0.0) is None


async def test_over_capacity_a_session_is_refused_at_start_with_a_retry_hint():
    # Each second of audio costs 0.3 s of model time: at a 0.55 target one stream fits, two do not.
    config = ServerConfig(port=0, admission=AdmissionConfig(target_utilisation=0.55, retry_after_s=7.0),
                          scheduler=SchedulerConfig(stats_interval_s=0.2))
    async with Server(config, CostlyEngine(cost=0.3)) as server:
        assert (await get(server.port, "/readyz"))[0] == 200
        async with connect(server.url) as first:
            await first.send(json.dumps(PCM_START))
            assert json.loads(await first.recv())["type"] == "ready"
            assert (await get(server.port, "/readyz"))[0] == 503
            async with connect(server.url) as second:
                await second.send(json.dumps(PCM_START))
                events = await until_ended(second)
            error = events[0]
            assert error["code"] == "server_busy" and error["fatal"] and error["retry_after_s"] == 7.0
            assert events[-1]["type"] == "ended"
            await first.send(tone_pcm(1.0))
            await first.send(json.dumps({"type": "stop"}))
            assert (await until_ended(first))[-1]["reason"] == "stop"  # the admitted one is served
        status, metrics = await get(server.port, "/metrics")
    assert 'patchstream_sessions_total{outcome="refused"} 1.0' in metrics
    assert 'patchstream_errors_total{code="server_busy"} 1.0' in metrics


async def test_metrics_count_sessions_media_latency_and_steps():
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake"))) as server:
        events = await run_session(server.url, tone_pcm(3.0))
        status, metrics = await get(server.port, "/metrics")
    assert status == 200 and events[-1]["reason"] == "stop"
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(values['patchstream_sessions_total{outcome="admitted"}']) == 1.0
    assert float(values["patchstream_media_seconds_in_total"]) == pytest.approx(3.0, abs=0.05)
    assert float(values["patchstream_caption_latency_seconds_count"]) == 3.0
    assert float(values["patchstream_finals_total"]) == 3.0
    assert float(values["patchstream_engine_step_seconds_count"]) > 0
    for name in ("patchstream_lag_seconds", "patchstream_model_utilisation", "patchstream_capacity_streams",
                 "patchstream_audio_dropped_seconds_total", "patchstream_sessions_active", "patchstream_sessions_detached"):
        assert name in values


async def test_two_servers_in_one_process_keep_separate_metrics():
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake"))) as one:
        async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake"))) as two:
            await run_session(one.url, tone_pcm(1.0))
            assert 'outcome="admitted"} 1.0' in (await get(one.port, "/metrics"))[1]
            assert 'outcome="admitted"}' not in (await get(two.port, "/metrics"))[1]


async def test_every_log_record_of_a_session_carries_its_id(caplog):
    caplog.set_level(logging.INFO, logger="patchstream")
    caplog.handler.addFilter(ContextFilter())
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake"))) as server:
        events = await run_session(server.url, tone_pcm(1.0))
    session_id = events[0]["session_id"]
    mine = [r for r in caplog.records if session_id in r.getMessage()]
    assert mine and all(r.session_id == session_id and r.key_id == "anonymous" for r in mine)
    line = json.loads(JsonFormatter().format(mine[0]))
    assert line["session_id"] == session_id and line["level"] == "INFO"
    assert Principal("anonymous").key_id == "anonymous"
