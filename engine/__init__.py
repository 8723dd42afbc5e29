"""kbrules: knowledge-base rules for qcow2 bitmaps, compiled to Python checks and jq."""

from typing import Any


def __getattr__(name: str) -> Any:
    # __version__ is looked up on first use only: importlib.metadata (and the email
    # package it pulls in) would cost every run of kbrules tens of milliseconds.
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("kbrules")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
