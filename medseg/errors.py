"""The one error contract: bad input or configuration raises `MedsegError`, which the CLI prints as one `error: …`
line (no traceback). It subclasses ValueError, so library callers that catch ValueError (as for MONAI's
`look_up_option`) catch it too, and no call site needs to translate one into the other."""


class MedsegError(ValueError):
    """Bad input or configuration: the message names the file or option and the problem."""
