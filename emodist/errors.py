"""Errors shared by stages and models (kept apart so models need not import stages)."""


class ClipError(Exception):
    """A problem with one clip's input: the message says what and how to fix it.
    The clip becomes a failure row; the run goes on."""
