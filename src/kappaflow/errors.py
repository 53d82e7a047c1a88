"""Exceptions with messages that name the file, the line and what was expected."""

from __future__ import annotations


class KappaflowError(Exception):
    """Base class: every user-facing failure is one line naming file and reason."""


class InputFileError(KappaflowError):
    """A file the user gave (or a tool wrote) is not what kappaflow expected."""

    def __init__(self, path, reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class PwOutputError(InputFileError):
    """A pw.x output that did not finish, did not converge or lacks what is needed."""


class ConfigError(KappaflowError):
    """The configuration does not match the schema or is inconsistent."""
