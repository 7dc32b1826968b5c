"""Errors a user can act on: one line naming the problem and the fix.

Everything the CLI reports without a traceback derives from ``EdgecvError``; anything else is a bug.
"""
from __future__ import annotations


class EdgecvError(Exception):
    """A problem with the user's input or environment; ``str()`` is a one-line message with the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)


class ArtifactError(EdgecvError):
    """A compiled artifact is missing, corrupt, for another CPU or of an unknown schema."""


class ModelError(EdgecvError):
    """An unknown model name, missing or corrupt weights, or an input size the model can't take."""


class TargetError(EdgecvError):
    """An unknown target, or a toolchain that can't build for it."""


class VerificationError(EdgecvError):
    """The compiled artifact's outputs differ from the source model's beyond tolerance."""

    exit_code = 3


class ConfigError(EdgecvError):
    """A configuration file or value is invalid."""


class SourceError(EdgecvError):
    """A video source can't be opened or read."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """The informative line of a library's multi-line error (MXNet and TVM put tracebacks first)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Traceback", "File ", "[bt]", "Stack trace"))
              and not line[:1].isdigit()]
    checks = [line for line in useful if "Check failed" in line or "Error" in line]
    text = (checks or useful or [type(exc).__name__])[-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."
