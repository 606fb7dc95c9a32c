"""The base of clmr's user-facing errors: each message names the file or key and the problem."""


class ClmrError(ValueError):
    """A problem with the user's input (a file, a checkpoint, a config, a store), not a bug.

    The command line prints its message without a traceback.
    """
