"""Where `soma` finds its server and key: each level overrides the next, per field."""

from __future__ import annotations

from pathlib import Path

import pytest

from soma.config import ConfigError, load_client_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The embedded default reads ./soma.toml: the test runs in an empty directory.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def profiles(home: Path, text: str) -> dict[str, str]:
    path = home / "profiles.toml"
    path.write_text(text)
    return {"SOMA_PROFILES": str(path), "HOME": str(home)}


def test_the_embedded_default_is_the_local_server_and_its_admin_key(home: Path) -> None:
    data = home / "data"
    data.mkdir()
    (data / "admin.key").write_text("soma_local_key\n")
    env = {"HOME": str(home), "SOMA_DATA_DIR": str(data), "SOMA_HTTP__PORT": "9999",
           "SOMA_HTTP__HOST": "0.0.0.0"}  # fmt: skip
    found = load_client_settings(environ=env)
    assert found.url == "http://127.0.0.1:9999"
    assert found.api_key is not None and found.api_key.get_secret_value() == "soma_local_key"
    assert found.key_source == f"key file {data / 'admin.key'}"


def test_without_any_key_there_is_none(home: Path) -> None:
    found = load_client_settings(environ={"HOME": str(home)})
    assert found.url == "http://127.0.0.1:8080" and found.api_key is None


def test_flags_beat_env_beat_profile_beat_default(home: Path) -> None:
    env = profiles(home, '[profiles.default]\nurl = "http://profile:1"\nkey = "k-profile"\n')
    found = load_client_settings(environ=env)
    assert (found.url, found.url_source) == ("http://profile:1", "profile")
    env |= {"SOMA_URL": "http://env:2/", "SOMA_API_KEY": "k-env"}
    found = load_client_settings(environ=env)
    assert found.url == "http://env:2" and found.api_key is not None
    assert found.api_key.get_secret_value() == "k-env"
    found = load_client_settings("http://flag:3", "k-flag", environ=env)
    assert (found.url, found.url_source, found.key_source) == ("http://flag:3", "--url", "--key")
    assert found.api_key is not None and found.api_key.get_secret_value() == "k-flag"


def test_a_named_profile_and_its_key_file(home: Path) -> None:
    (home / "ops.key").write_text("k-file\n")
    text = f'[profiles.ops]\nurl = "http://ops:4"\nkey_file = "{home / "ops.key"}"\n'
    env = profiles(home, text) | {"SOMA_PROFILE": "ops"}
    found = load_client_settings(environ=env)
    assert found.url == "http://ops:4" and found.api_key is not None
    assert found.api_key.get_secret_value() == "k-file"


def test_a_missing_profile_or_bad_file_fails_loudly(home: Path) -> None:
    env = profiles(home, '[profiles.default]\nurl = "http://x:1"\n')
    with pytest.raises(ConfigError, match="profile 'nope' is not in"):
        load_client_settings(profile="nope", environ=env)
    env = profiles(home, "[profiles\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_client_settings(environ=env)
    with pytest.raises(ConfigError, match="no profiles file"):
        load_client_settings(profile="x", environ={"HOME": str(home / "none")})
