"""The base of every error that is the user's input, not a bug: the CLI and the stages
report it as one line naming the file, key or field, and exit 2."""


class UserError(ValueError):
    """Bad input (a file, a key, a field); the message names it."""
