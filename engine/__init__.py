"""kbrules: knowledge-base rules for qcow2 bitmaps, compiled to Python checks and jq."""

from importlib import metadata

try:
    __version__ = metadata.version("kbrules")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
