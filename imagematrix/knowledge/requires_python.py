"""Each pin's declared Requires-Python, from the index, against a row's Python (uv ignores the upper bounds)."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from imagematrix.knowledge import requires
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row


def check(row: Row) -> list[InputError]:
    """The row's Python against every pin's declared Requires-Python (uv ignores their upper bounds)."""
    errors = []
    for package, version in sorted(row.pins().items()):
        if package == "flash-attn":  # a prebuilt wheel per cpXY: its name carries the Python
            continue
        declared = requires.requires_python(package, version)
        try:
            spec = SpecifierSet(declared or "")
        except InvalidSpecifier:
            raise RuntimeFailure(f"the index declares Requires-Python {declared!r} for {package} {version}, which is "
                                 f"not a version specifier: row {row.id}'s Python cannot be checked against it; fix: "
                                 f"pick another {package} version, or have the index fixed") from None
        if declared and not spec.contains(row.python + ".0", prereleases=True):
            errors.append(InputError(
                f"{package} {version} requires Python {declared}, the row has {row.python}",
                where=f"row {row.id}, field python",
                fix=f"pick a Python within {declared} (and a base that packages it), or another {package}",
            ))
    return errors

