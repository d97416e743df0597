"""Errors a user can cause and fix. Every LoraSmith CLI prints them as one line, without a traceback."""


class LoraSmithError(Exception):
    """A problem with the user's input: the message names what is wrong and how to fix it."""


class DatasetError(LoraSmithError):
    """A dataset folder that does not follow the expected layout."""
