"""Errors users can act on. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class EdgedetError(Exception):
    """Base class: a problem with the user's input (file, field, value), not a bug."""


class ConfigError(EdgedetError):
    """A YAML/JSON config or a subnet id is invalid."""


class SubnetError(ConfigError):
    """A subnet id or SubnetConfig does not fit the supernet."""


class CheckpointError(EdgedetError):
    """A checkpoint file is missing, corrupt, unsafe or does not match its config."""


class MissingExtraError(EdgedetError):
    """An optional runtime is not installed."""

    def __init__(self, module: str, extra: str, what: str = ""):
        hint = f" (needed for {what})" if what else ""
        super().__init__(f"Python package '{module}' is not installed{hint}: pip install 'edgedet[{extra}]'")


class ToolchainError(EdgedetError):
    """A build tool or SDK is missing (cmake, a C++ compiler, a runtime's headers), or a build failed."""
