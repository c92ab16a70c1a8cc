"""Errors raised for unusable input. Each message is one line: what is wrong and what to do."""


class InputError(ValueError):
    """Bad user input (image, caption, pairs file, model folder). The message is shown as is."""
