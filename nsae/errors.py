"""The one exception type nsae turns into a one-line message and a non-zero exit."""


class NsaeError(Exception):
    """A bad input or an unrecoverable run condition, stated in one line."""
