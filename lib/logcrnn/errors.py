"""The small exception hierarchy every command maps to an exit status.

``UsageError`` (exit 2) is for input a user can fix by changing the command line or config:
a missing path, an unknown source, a bad key.  ``DataError`` (exit 3) is for corrupt data
that stopped a run (a truncated ``.gz``, a foreign miner state).  Anything else derived from
``LogcrnnError`` exits 1.
"""

from __future__ import annotations


class LogcrnnError(Exception):
    """Base class: a failure with a message meant for the person running the job."""

    exit_code = 1


class UsageError(LogcrnnError):
    """Bad command line, config key, path or name."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid configuration: unknown key, wrong type, missing file."""


class DataError(LogcrnnError):
    """Input or stored data that cannot be processed as it is."""

    exit_code = 3


class LakeError(LogcrnnError):
    """A lake table could not be read or written; the table is left as it was."""
