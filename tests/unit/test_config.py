"""Configuration precedence (flag > env > file > default), validation and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from soma.config import ConfigError, load_settings, render


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "soma.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_stack() -> None:
    loaded = load_settings(environ={})
    s = loaded.settings
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.database_url == "sqlite+aiosqlite:///.soma/soma.db"
    assert s.bus.backend == "local"
    assert s.cache.url.get_secret_value() == "memory://"
    assert s.policy.engine == "embedded"
    assert s.llm.default_model == "local"
    assert s.bootstrap_key_file == Path(".soma/admin.key")
    assert s.services is None
    assert loaded.sources["http.port"] == "default"


def test_each_level_overrides_the_next(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 1111\nhost = '0.0.0.0'\n[bus]\nmax_attempts = 7\n")
    file_only = load_settings(config_file=path, environ={})
    assert file_only.settings.http.port == 1111
    assert file_only.sources["http.port"] == "file"

    env = {"SOMA_HTTP__PORT": "2222"}
    with_env = load_settings(config_file=path, environ=env)
    assert with_env.settings.http.port == 2222
    assert with_env.sources["http.port"] == "env"
    assert with_env.settings.http.host == "0.0.0.0"  # untouched file value survives the merge
    assert with_env.sources["http.host"] == "file"

    with_flag = load_settings({"http.port": "3333"}, config_file=path, environ=env)
    assert with_flag.settings.http.port == 3333
    assert with_flag.sources["http.port"] == "flag"
    assert with_flag.settings.bus.max_attempts == 7
    assert with_flag.sources["bus.max_attempts"] == "file"
    assert with_flag.sources["bus.backend"] == "default"


def test_config_file_from_soma_config_env_and_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text("data_dir = '/srv/soma'\n")
    assert load_settings(environ={"SOMA_CONFIG": str(elsewhere)}).settings.data_dir == Path(
        "/srv/soma"
    )
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "data_dir = 'here'\n")
    loaded = load_settings(environ={})
    assert loaded.settings.data_dir == Path("here")
    assert loaded.config_file == Path("soma.toml")


def test_nested_env_declares_a_model_and_keeps_local() -> None:
    env = {
        "SOMA_LLM__MODELS__GPT__PROVIDER": "openai",
        "SOMA_LLM__MODELS__GPT__BASE_URL": "http://127.0.0.1:9000/v1",
        "SOMA_LLM__MODELS__GPT__MODEL": "x",
        "SOMA_LLM__DEFAULT_MODEL": "gpt",
    }
    llm = load_settings(environ=env).settings.llm
    assert llm.default_model == "gpt"
    assert llm.models["gpt"].base_url == "http://127.0.0.1:9000/v1"
    assert llm.models["local"].provider == "local"


def test_services_from_comma_list_and_toml_list(tmp_path: Path) -> None:
    assert load_settings(environ={"SOMA_SERVICES": "database, bus"}).settings.services == [
        "database",
        "bus",
    ]
    path = write(tmp_path, "services = ['gateway']\n")
    assert load_settings(config_file=path, environ={}).settings.services == ["gateway"]
    assert load_settings({"services": "all"}, environ={}).settings.services is None


def test_invalid_values_give_one_line_per_problem() -> None:
    env = {"SOMA_HTTP__PORT": "abc", "SOMA_BUS__BACKEND": "rabbit", "SOMA_LLM__DEFAULT_MODEL": "x"}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    problems = caught.value.problems
    assert any(p.startswith("http.port: ") and "'abc'" in p for p in problems)
    assert any(p.startswith("bus.backend: ") and "'rabbit'" in p for p in problems)
    assert any("default_model 'x' is not in llm.models" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_unknown_file_key_and_bad_toml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="htp"):
        load_settings(config_file=write(tmp_path, "[htp]\nport = 1\n"), environ={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(config_file=write(tmp_path, "port = = 1\n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_print_config_redacts_secrets_and_names_sources() -> None:
    env = {
        "SOMA_DATABASE__URL": "postgresql+asyncpg://soma:hunter2@db:5432/soma",
        "SOMA_LLM__MODELS__GPT__PROVIDER": "openai",
        "SOMA_LLM__MODELS__GPT__BASE_URL": "http://127.0.0.1:9000/v1",
        "SOMA_LLM__MODELS__GPT__API_KEY": "sk-secret-value",
    }
    text = render(load_settings({"http.port": 9001}, environ=env))
    assert "hunter2" not in text and "sk-secret-value" not in text
    assert 'database.url = "**********"  # env' in text
    assert 'llm.models.gpt.api_key = "**********"  # env' in text
    assert "http.port = 9001  # flag" in text
    assert 'bus.backend = "local"  # default' in text
