"""The errors a verb raises; :mod:`verbhost_sdk.plugin` turns them into the contract's
``verb-error``."""


class VerbError(Exception):
    """Why a verb could not run. ``kind`` is ``"invalid-verb"`` (the verb's JSON is wrong; the
    message names the property) or ``"failed"`` (anything else)."""

    def __init__(self, message, kind="invalid-verb"):
        super().__init__(message)
        self.message = message
        self.kind = kind


def kind_of(value):
    """The JSON type of ``value`` in words, as error messages say it: ``a string``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
