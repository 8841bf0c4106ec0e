"""Configuration: the only package that reads the environment or config files."""

from soma.config.client import ClientSettings, load_client_settings
from soma.config.loader import ConfigError, LoadedSettings, load_settings, render
from soma.config.settings import ModelSettings, Settings

__all__ = [
    "ClientSettings",
    "ConfigError",
    "LoadedSettings",
    "ModelSettings",
    "Settings",
    "load_client_settings",
    "load_settings",
    "render",
]
