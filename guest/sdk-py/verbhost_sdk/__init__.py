"""verbhost's Python SDK: what a verb plugin written in Python needs besides the bindings.

- :mod:`verbhost_sdk.verb`: the verb reader (both jambonz forms, unquoted phone numbers,
  errors that name the property, unknown properties before missing ones);
- :mod:`verbhost_sdk.headers`: the header rules (stack-owned names, compact forms, injection);
- :mod:`verbhost_sdk.refer`: Refer-To / Referred-By formatting, the sipfrag status line;
- :mod:`verbhost_sdk.plugin`: the bridge to the generated bindings (``wit_world``): hooks and
  headers in the contract's types, ``emit_event``, and :func:`verbhost_sdk.plugin.run_verb`,
  which turns a :class:`VerbError` into the contract's ``verb-error``.

Everything but :mod:`verbhost_sdk.plugin` is plain Python and runs in CPython too.
"""

from .errors import VerbError, kind_of
from .verb import Hook, Props, Verb

__all__ = ["VerbError", "kind_of", "Hook", "Props", "Verb"]
