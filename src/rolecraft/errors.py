"""The one exception type that reaches users: a readable message, no traceback."""


class RolecraftError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
