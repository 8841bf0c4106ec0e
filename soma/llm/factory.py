"""Build one provider instance per configured model name."""

from __future__ import annotations

from soma.config.settings import LLMSettings, ModelSettings
from soma.llm.errors import LLMError
from soma.llm.local import LocalProvider
from soma.llm.openai import OpenAIProvider
from soma.llm.port import ChatProvider
from soma.llm.retry import RetryPolicy


def build_provider(name: str, model: ModelSettings, retries: int) -> ChatProvider:
    """Construct (never connect or load) the adapter for one `llm.models.<name>` entry."""
    if model.provider == "openai":
        if not model.base_url:
            raise LLMError(f"llm.models.{name}: an openai provider needs base_url")
        return OpenAIProvider(
            name=name,
            base_url=model.base_url,
            model=model.model or name,
            api_key=model.api_key.get_secret_value() if model.api_key else None,
            timeout_s=model.timeout_s,
            retry=RetryPolicy(retries),
        )
    return LocalProvider(
        name=name,
        path=model.path,
        context_tokens=model.context_tokens,
        max_concurrency=model.max_concurrency,
        timeout_s=model.timeout_s,
    )


def build_providers(settings: LLMSettings) -> dict[str, ChatProvider]:
    return {
        name: build_provider(name, model, settings.retries)
        for name, model in settings.models.items()
    }


def preloaded_models(settings: LLMSettings) -> list[str]:
    """Local models worth loading at start: the default model and every fallback target."""
    wanted = {settings.default_model}
    for model in settings.models.values():
        wanted.update(f.lower() for f in model.fallbacks)
    return sorted(n for n in wanted if settings.models[n].provider == "local")
