"""Errors that reach the user as one clear line (CLI exit code 2, napari notification)."""

from __future__ import annotations

from pathlib import Path


class FPMInputError(ValueError):
    """Bad user input: names the file (when there is one) and the problem.

    ``str(err)`` is the complete one-line message, e.g.
    ``"data.mat: missing wavelength; pass --wavelength-um or add 'wavelength_um' to the JSON"``.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class MissingParameterError(FPMInputError):
    """A raw-data format lacks a parameter the physics needs; says how to supply it."""

    def __init__(self, name: str, how: str, path: str | Path | None = None):
        self.name = name
        super().__init__(f"missing {name}; {how}", path)
