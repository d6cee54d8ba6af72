"""The `assist` option: its schema, its errors, and how a session's options combine with the
server's `--assist-config` file."""

from __future__ import annotations

import json

import pytest

from patchstream.streaming.assist.config import AssistConfig, Intent, load_assist_file, parse_assist
from patchstream.streaming.assist.redact import KINDS


def test_absent_or_false_means_the_servers_config():
    base = AssistConfig(redact=frozenset({"card"}))
    assert parse_assist(None, base) is base and parse_assist(False, base) is base
    assert not parse_assist(None).enabled


def test_true_turns_on_everything_that_needs_no_configuration():
    config = parse_assist(True)
    assert config.redact == frozenset(KINDS) and config.sentiment and config.summary and not config.intents


def test_a_full_object_parses():
    config = parse_assist({
        "intents": {"cancel": ["I want to cancel", "close my account"]},
        "keywords": ["refund"],
        "sentiment": True,
        "redact": ["card", "phone", "email"],
        "summary": True,
        "intent_threshold": 0.5,
    })
    assert config.intents == (Intent("cancel", ("I want to cancel", "close my account")),)
    assert (config.keywords, config.redact, config.intent_threshold) == (("refund",), frozenset({"card", "phone", "email"}), 0.5)
    assert config.analyses and config.needs_embedder


def test_session_options_override_the_server_but_never_lift_its_redaction():
    base = AssistConfig(
        redact=frozenset({"card", "ssn"}), intents=(Intent("cancel", ("cancel it",)), Intent("refund", ("money back",)))
    )
    config = parse_assist({"redact": ["email"], "intents": {"cancel": ["close my account"]}, "sentiment": True}, base)
    assert config.redact == frozenset({"card", "ssn", "email"})
    assert config.intents == (Intent("cancel", ("close my account",)), Intent("refund", ("money back",)))
    assert parse_assist({"redact": False}, base).redact == base.redact


@pytest.mark.parametrize(
    "raw, message",
    [
        ("yes", "must be true, false or an object"),
        ({"colour": "red"}, "unknown fields"),
        ({"intents": ["cancel"]}, "intent name"),
        ({"intents": {"cancel": []}}, "at least one example"),
        ({"intents": {"cancel": "cancel"}}, "list of non-empty strings"),
        ({"keywords": ["ok", 3]}, "list of non-empty strings"),
        ({"redact": ["cards"]}, "unknown kinds"),
        ({"sentiment": "yes"}, "true or false"),
        ({"intent_threshold": 2}, r"\(0, 1\]"),
        ({"keywords": ["x" * 201]}, "at most 200 characters"),
    ],
)
def test_malformed_options_say_what_is_wrong(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_assist(raw)


def test_the_server_file_has_the_same_schema(tmp_path):
    path = tmp_path / "assist.json"
    path.write_text(json.dumps({"redact": True, "intents": {"cancel": ["I want to cancel"]}}))
    config = load_assist_file(path)
    assert config.redact == frozenset(KINDS) and config.intents[0].name == "cancel"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="one JSON object"):
        load_assist_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_assist_file(tmp_path / "missing.json")


def test_serve_reads_its_assist_config_and_refuses_a_bad_one(tmp_path, monkeypatch, capsys):
    from patchstream.clients import cli  # noqa: PLC0415 - the launcher, only for this test

    started = []
    monkeypatch.setattr(cli, "run_server", lambda config, choice: started.append(config))
    good = tmp_path / "assist.json"
    good.write_text(json.dumps({"redact": ["card"], "sentiment": True}))
    assert cli.main(["serve", "--engine", "fake", "--assist-config", str(good)]) == 0
    assert started[0].assist == AssistConfig(redact=frozenset({"card"}), sentiment=True)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"redact": ["cards"]}))
    assert cli.main(["serve", "--engine", "fake", "--assist-config", str(bad)]) == 2
    assert "unknown kinds" in capsys.readouterr().err and len(started) == 1


def test_caption_sends_the_assist_option_it_is_given(monkeypatch):
    from patchstream.clients import cli  # noqa: PLC0415 - the launcher, only for this test

    jobs = []
    monkeypatch.setattr(cli, "run_async", lambda make: make())
    monkeypatch.setattr(cli, "caption", lambda job: jobs.append(job) or 0)
    assert cli.main(["caption", "call.wav", "--assist"]) == 0
    assert cli.main(["caption", "call.wav", "--assist", '{"redact": ["card"]}']) == 0
    assert cli.main(["caption", "call.wav"]) == 0
    assert [job.assist for job in jobs] == [True, {"redact": ["card"]}, None]
    with pytest.raises(SystemExit):
        cli.main(["caption", "call.wav", "--assist", "{not json"])
