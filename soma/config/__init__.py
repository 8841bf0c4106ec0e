"""Configuration: the only package that reads the environment or config files."""

from soma.config.loader import ConfigError, LoadedSettings, load_settings, render
from soma.config.settings import ModelSettings, Settings

__all__ = ["ConfigError", "LoadedSettings", "ModelSettings", "Settings", "load_settings", "render"]
