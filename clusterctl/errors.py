"""Exceptions that clusterctl raises on purpose; the CLI maps them to exit codes."""

from __future__ import annotations


class ClusterctlError(Exception):
    """Something went wrong that the user can act on (CLI exit status 1)."""

    exit_code = 1


class UserInputError(ClusterctlError):
    """Bad input: a spec, flag, name or port the user can fix (CLI exit status 2)."""

    exit_code = 2


class SpecError(UserInputError):
    """A spec field is invalid; the message names the field and what is allowed."""


class ClusterNotFound(UserInputError):
    """No running cluster has the given name."""


class EnvironmentMismatchWarning(UserWarning):
    """The cluster lacks packages this client has, or has them at other versions: tasks
    that use them will fail there."""


class IgnoredFieldsWarning(UserWarning):
    """The spec sets fields the chosen backend does not use (a spec shared across backends
    may): they are named, and the cluster starts without them."""
