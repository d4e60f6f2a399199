"""The one exception type nsae turns into a one-line message and a non-zero exit, and how
any error is said in one line."""

from __future__ import annotations


class NsaeError(Exception):
    """A bad input or an unrecoverable run condition, stated in one line."""


class Interrupted(NsaeError):
    """The run stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class WorkersInterrupted(Exception):
    """A sweep job in a worker process or thread (hydra/launcher=parallel or nsae_bank)
    stopped on a signal after saving its step; raised to the sweep's own process, which
    ends the sweep."""


def one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def describe(err: Exception) -> str:
    """nsae's own errors as they are; configuration errors and anything unexpected (a bug,
    out of memory, ...) with their kind."""
    if isinstance(err, NsaeError):
        return one_line(err)
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, OmegaConfBaseException):
        return f"config: {one_line(err)}"
    return f"{type(err).__name__}: {one_line(err)}"
