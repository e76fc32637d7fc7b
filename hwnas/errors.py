"""The base of every error that is the user's input, not a bug: the CLI and the stages
report it as one line naming the file, key or field, and exit 2."""


class UserError(ValueError):
    """Bad input (a file, a key, a field); the message names it."""


def one_line(message, limit: int = 300) -> str:
    """The first line of ``message``, at most ``limit`` characters (a bad 10 MB input line
    is named, not echoed)."""
    line = (str(message).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."
