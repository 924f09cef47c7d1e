"""The one exception type users see as a clean `error: …` line instead of a traceback."""


class MedsegError(Exception):
    """Bad input or configuration: the message names the file and the problem."""
