"""Provider construction from settings and the dry-run description (nothing is loaded)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from soma.config.settings import LLMSettings, ModelSettings, Settings
from soma.llm import describe
from soma.llm.factory import build_providers, preloaded_models
from soma.llm.local import LocalProvider
from soma.llm.openai import OpenAIProvider


def _settings(**llm: object) -> Settings:
    return Settings(llm=LLMSettings.model_validate(llm))


def test_each_model_gets_its_own_provider_without_loading_anything() -> None:
    settings = _settings(
        default_model="gpt",
        models={
            "gpt": ModelSettings(
                provider="openai",
                base_url="http://127.0.0.1:9/v1/",
                model="upstream-x",
                api_key=SecretStr("sk-secret-123"),
                fallbacks=["local"],
            ),
            "tiny": ModelSettings(provider="local", path=Path("/models/tiny.gguf")),
        },
    )
    providers = build_providers(settings.llm)
    assert set(providers) == {"gpt", "local", "tiny"}
    gpt = providers["gpt"]
    assert isinstance(gpt, OpenAIProvider)
    assert (gpt.base_url, gpt.model) == ("http://127.0.0.1:9/v1", "upstream-x")
    assert "sk-secret-123" not in repr(gpt)
    local = providers["local"]
    assert isinstance(local, LocalProvider)
    assert not local.loaded
    assert local.context_tokens == 2048
    assert preloaded_models(settings.llm) == ["local"]


def test_only_default_and_fallback_local_models_are_preloaded() -> None:
    settings = _settings(models={"tiny": ModelSettings(provider="local", path=Path("/x.gguf"))})
    assert preloaded_models(settings.llm) == ["local"]
    remote = _settings(
        default_model="gpt",
        models={"gpt": ModelSettings(provider="openai", base_url="http://h/v1")},
    )
    assert preloaded_models(remote.llm) == []


def test_describe_names_the_default_and_every_backend_without_secrets() -> None:
    settings = _settings(
        default_model="gpt",
        models={
            "gpt": ModelSettings(
                provider="openai",
                base_url="http://127.0.0.1:9000/v1",
                model="x",
                api_key=SecretStr("sk-secret-123"),
                fallbacks=["local"],
            )
        },
    )
    text = describe(settings)
    assert text.startswith(
        "default=gpt (openai http://127.0.0.1:9000/v1 model=x fallbacks=[local])"
    )
    assert "local=local SmolLM2-135M-Instruct.Q4_1.gguf, bundled" in text
    assert "sk-secret-123" not in text
    assert describe(Settings()).startswith("default=local (local SmolLM2")
