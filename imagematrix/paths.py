"""Where the project's data lives (all outside the code)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrix.yaml"
DOCKERFILES = ROOT / "dockerfiles"
TEMPLATES = DOCKERFILES / "templates"
PATCHES = DOCKERFILES / "patches"
GENERATED = DOCKERFILES / "generated"
BASES = DOCKERFILES / "bases.yaml"
ENV_DEFAULTS = DOCKERFILES / "env-defaults.yaml"
LOCKS = ROOT / "locks"
