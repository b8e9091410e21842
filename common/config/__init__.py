"""Settings: one typed object, read once at the edge from env over a TOML file over defaults."""

from hareflow.common.config.settings import ConfigError, Settings, load_settings, mask_url

__all__ = ["ConfigError", "Settings", "load_settings", "mask_url"]
