"""The one error type for user mistakes.

The CLI catches `UserError`, prints its one-line message (which names the file, row or key and gives a
hint) and exits with status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a bad file, row, key or value. The message is shown as it is."""
