"""`patchstream serve`'s auth/TLS/journal flags and `patchstream token` (issue 13)."""

from __future__ import annotations

import json

import pytest

from patchstream.clients.cli import _operations_config, build_parser, main


def operations(*argv: str, env: dict | None = None, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setenv("PATCHSTREAM_API_KEYS", (env or {}).get("PATCHSTREAM_API_KEYS", ""))
    return _operations_config(build_parser().parse_args(["serve", *argv]))


def test_serve_flags_build_the_operations_config(tmp_path, monkeypatch):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"id": "web", "secret": "w" * 20, "max_sessions": 3}]}))
    config = operations("--api-key", "ci:abcdefghijklmnop", "--keys-file", str(keys), "--allow-origin", "https://a.example",
                        "--journal-dir", str(tmp_path), "--journal-fsync", "every",
                        "--resume-grace-s", "5", env={"PATCHSTREAM_API_KEYS": "env:zyxwvutsrqponmlk"}, monkeypatch=monkeypatch)
    assert [k.key_id for k in config["auth"].keys] == ["ci", "env", "web"]
    assert config["auth"].keys[2].max_sessions == 3 and config["auth"].allowed_origins == ("https://a.example",)
    assert config["journal"].fsync == "every" and str(config["journal"].directory) == str(tmp_path)
    assert config["resume_grace_s"] == 5.0


def test_an_empty_journal_dir_turns_the_journal_off_and_no_auth_lifts_the_loopback_rule(monkeypatch):
    config = operations("--journal-dir", "", "--no-auth", monkeypatch=monkeypatch)
    assert config["journal"].directory is None and not config["auth"].loopback_only_when_open


def test_a_keyless_serve_on_a_public_address_exits_with_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("PATCHSTREAM_API_KEYS", raising=False)
    # The root logger must not keep a handler on this test's captured stderr (closed afterwards).
    monkeypatch.setattr("patchstream.clients.cli.configure_logging", lambda *args: None)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--engine", "fake", "--journal-dir", ""]) == 1
    assert "--no-auth" in capsys.readouterr().err


def test_token_prints_a_signed_token(capsys):
    assert main(["token", "--key", "web:abcdefghijklmnop", "--ttl", "60"]) == 0
    key_id, expiry, signature = capsys.readouterr().out.strip().split(".")
    assert key_id == "web" and expiry.isdigit() and len(signature) == 43
    assert main(["token", "--key", "web:short"]) == 2
