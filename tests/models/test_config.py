"""models.config: config.toml documents every key with its default, and the loader refuses the
mistakes operators make.

The documented-defaults test reads config.toml with tomllib, not with the loader, so a default
changed in one place only (the dataclass or the file) fails here whatever the loader does.
Array-of-tables keys whose default is empty (``[[auth.tokens]]``) cannot be written as a value
without changing the default; they count as documented when a comment of their section shows
the ``[[section.key]]`` table.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from models.config import ApiToken, ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config.toml"
SECTIONS = [f.name for f in dataclasses.fields(Settings) if f.name != "config_path"]
KEY_LINE = re.compile(r"^([a-z_][a-z0-9_]*)\s*=")
SECTION_LINE = re.compile(r"^\[([a-z_]+)\]\s*$")


def as_toml(value: Any) -> Any:
    """A default as config.toml spells it: tuples as arrays, dataclasses as inline tables."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: as_toml(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [as_toml(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def same(documented: Any, default: Any) -> bool:
    """Equal and of the same TOML type: ``port = 8000.0`` must not pass for an int default."""
    if isinstance(default, list):
        return isinstance(documented, list) and len(documented) == len(default) and \
            all(same(d, e) for d, e in zip(documented, default))
    if isinstance(default, dict):
        return isinstance(documented, dict) and documented.keys() == default.keys() and \
            all(same(documented[k], default[k]) for k in default)
    return type(documented) is type(default) and documented == default


def commented_tables(text: str) -> dict[str, set[str]]:
    """Per section, the ``[[section.key]]`` tables shown in its comments."""
    found: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        if match := SECTION_LINE.match(line):
            section = match.group(1)
        elif match := re.match(r"^#\s*\[\[([a-z_]+)\.([a-z_]+)\]\]", line):
            if match.group(1) == section:
                found.setdefault(section, set()).add(match.group(2))
    return found


def test_config_toml_documents_every_key_with_its_default() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    documented = tomllib.loads(text)
    shown_as_comment = commented_tables(text)
    defaults = Settings()
    assert sorted(documented) == sorted(SECTIONS), "sections of config.toml vs Settings"
    problems = []
    for section in SECTIONS:
        values = documented[section]
        fields = {f.name: as_toml(getattr(getattr(defaults, section), f.name))
                  for f in dataclasses.fields(getattr(defaults, section))}
        for key in sorted(values.keys() - fields.keys()):
            problems.append(f"[{section}] {key}: in config.toml, not a Settings field")
        for key, default in fields.items():
            if key in values:
                if not same(values[key], default):
                    problems.append(f"[{section}] {key}: config.toml says {values[key]!r}, "
                                    f"Settings defaults to {default!r}")
            elif not (default == [] and key in shown_as_comment.get(section, set())):
                problems.append(f"[{section}] {key}: missing from config.toml")
    assert not problems, "\n".join(problems)


def test_every_key_in_config_toml_has_a_comment_above_its_group() -> None:
    """Keys come in groups under a comment; a key line after a blank line or a section header
    has nobody explaining it."""
    undocumented = []
    previous = ""
    for line in CONFIG.read_text(encoding="utf-8").splitlines():
        if line.startswith((" ", "\t", "]", "}")):  # continuation of a multi-line value
            continue
        match = KEY_LINE.match(line)
        if match and not (previous.startswith("#") or KEY_LINE.match(previous)):
            undocumented.append(line)
        previous = line
    assert not undocumented, f"keys without a comment: {undocumented}"


def test_loading_config_toml_gives_the_defaults() -> None:
    """What the loader makes of the documented file is Settings() (data_dir resolved next to
    the file, as relative paths are)."""
    loaded = load_settings(CONFIG, env={})
    defaults = Settings()
    for section in SECTIONS:
        if section == "storage":
            assert loaded.storage.data_dir == REPO / defaults.storage.data_dir
            assert loaded.storage.fsync == defaults.storage.fsync
        else:
            assert getattr(loaded, section) == getattr(defaults, section), section


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_environment_overrides_are_converted_to_the_field_type(tmp_path: Path) -> None:
    settings = load(tmp_path, "[server]\nport = 8000\n", {
        "TUSFLOW_SERVER__PORT": "9000",
        "TUSFLOW_CORS__ALLOW_ORIGINS": "https://a.example, https://b.example",
        "TUSFLOW_WORKER__RETRY_BACKOFF": "[1, 2]",
        "TUSFLOW_WORKER__RECONCILE_INTERVAL": "3",
        "TUSFLOW_STORAGE__DATA_DIR": "data",
    })
    assert settings.server.port == 9000
    assert settings.cors.allow_origins == ("https://a.example", "https://b.example")
    assert settings.worker.retry_backoff == (1, 2)
    assert settings.worker.reconcile_interval == 3.0 and isinstance(settings.worker.reconcile_interval, float)
    assert settings.storage.data_dir == (tmp_path / "data").resolve()


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
    ('[server]\nport = "80"\n', r"\[server\] port must be an integer"),
    ('[server]\nport = true\n', r"\[server\] port must be an integer"),
    ('[storage]\nfsync = 1\n', r"\[storage\] fsync must be true or false"),
    ('[worker]\nreconcile_interval = "soon"\n', r"reconcile_interval must be a number"),
    ('[worker]\nretry_backoff = [1, "2"]\n', r"retry_backoff must be an array of integers"),
    ('[transcode]\nladder = []\n', r"ladder must be a non-empty array"),
    ('[transcode]\nladder = [{ name = "x" }]\n', r"each rung needs"),
    ('[storage]\ndata_dir = 3\n', r"data_dir must be a path string"),
    ('[nope]\nx = 1\n', r"unknown section"),
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
