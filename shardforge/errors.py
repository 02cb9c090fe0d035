"""The errors every command shares, and the one exit-code rule (:mod:`shardforge.cli` applies it).

A command's module raises :class:`UserError` for a mistake in what was asked (exit 2) and
:class:`Interrupted` on Ctrl-C with what state it left behind (exit 130); anything else is exit 1.
Commands import these from here, never from the CLI module that dispatches to them.
"""

from __future__ import annotations

from shardforge.records.manifest import OutputError, OutputLocked


class UserError(Exception):
    """A mistake in what the user asked for; its message says what to do instead (exit 2)."""


class Interrupted(Exception):
    """Ctrl-C stopped a command; the message says what state it left behind, e.g.
    ``Interrupted("the previous output in out is intact; nothing was published")``."""


# The user's mistakes (exit 2): what was asked for is wrong, the message says what to change.
# Another job holding an output's lock (OutputLocked) is not one of them: exit 1.
USER_ERRORS = (UserError, ValueError, KeyError, FileNotFoundError, FileExistsError,
               NotADirectoryError, IsADirectoryError, PermissionError, OutputError)


def exit_code(err: BaseException) -> int:
    """The exit code of a command that raised ``err``: 2 for the user's mistake, else 1."""
    return 2 if isinstance(err, USER_ERRORS) and not isinstance(err, OutputLocked) else 1
