"""camfleet edge agent: capture → classify locally → publish events and frames over MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("camfleet-agent")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
