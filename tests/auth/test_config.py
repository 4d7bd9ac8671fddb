"""The [auth] section: the way operators write it, and the mistakes refused at startup."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import ApiToken, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_documented_defaults_match_the_dataclass() -> None:
    settings = load_settings(REPO / "config.toml", env={})
    assert settings.auth.enabled is False and settings.auth.tokens == ()
    assert settings.auth.public_paths == ("/static/", "/favicon.ico")


def test_tokens_as_array_of_tables_and_from_env(tmp_path: Path) -> None:
    settings = load(tmp_path, """
[auth]
enabled = true

[[auth.tokens]]
token = "cli-token-0123456789abcdef"
user = "ci"
role = "service"

[[auth.tokens]]
token = "teacher-token-0123456789ab"
user = "alice"
""")
    assert settings.auth.tokens == (ApiToken("cli-token-0123456789abcdef", "ci", "service"),
                                    ApiToken("teacher-token-0123456789ab", "alice", "user"))
    env = {"TUSFLOW_AUTH__TOKENS": '[{token = "env-token-0123456789abcdef", user = "ops", role = "admin"}]'}
    assert load(tmp_path, "", env).auth.tokens == (ApiToken("env-token-0123456789abcdef", "ops", "admin"),)


@pytest.mark.parametrize("text,message", [
    ('[auth]\nenabled = true\n', "needs tokens"),
    ('[auth]\nsigned_playback = true\n', "needs playback_signing_key"),
    ('[auth]\njwt_hs256_secret = "short"\n', "at least 32"),
    ('[auth]\ntokens = [{token = "0123456789abcdef", user = "u", role = "root"}]\n', "role must be"),
    ('[auth]\ntokens = [{token = "short", user = "u"}]\n', "at least 16"),
    ('[auth]\ntokens = [{token = "0123456789abcdef", user = "u"}, {token = "0123456789abcdef", user = "v"}]\n', "twice"),
    ('[auth]\nquota_bytes_total = -1\n', "quotas"),
    ('[auth]\nnope = 1\n', "unknown key"),
])
def test_mistakes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)
