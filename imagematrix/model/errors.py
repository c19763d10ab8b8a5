"""Errors with the exit codes the CLI promises: 2 for bad input, 1 for runtime failures."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (matrix, patch data, CLI arguments): exit code 2.

    The message names where the problem is (file, row, field) and how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.where = where
        self.fix = fix
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class InputErrors(InputError):
    """Several input errors found in one pass (all are reported, not only the first)."""

    def __init__(self, errors: list[InputError]):
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))

    def render(self) -> str:  # the joined message built in __init__
        return "\n".join(e.render() for e in self.errors)


class RuntimeFailure(Exception):
    """A failure of the environment or a tool (network, daemon, build): exit code 1."""

    exit_code = 1
