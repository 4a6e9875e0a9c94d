"""The one base of the errors a user can fix (an option, a file, a model, a run folder): the commands print
its message as one line and exit with status 2, and catch nothing broader, so a bug (a ``KeyError`` deep
in a method) keeps its traceback.

Each subclass also derives from the builtin a caller would expect (``ValueError`` for a value that cannot
be used, ``FileNotFoundError`` for a path that is not there), so library code may catch either.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, named with its fix in the message: what the commands turn into one line and exit 2."""


class InputError(UserError, ValueError):
    """A value the user gave (an option, a config field, a dataset or model name, a record) that cannot be used."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user named (or the default one) that is not there."""
