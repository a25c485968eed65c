"""Patterns shared by the routers' query parameters and request bodies.

Text that reaches the alert store must not hold NUL: PostgreSQL refuses it outright, so it is
refused here with a 422 that names the field, not as a 500 from the database."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import StringConstraints

# An id or name: no control characters (nothing we record has them, and no NUL).
NAME: Final = r"^[^\x00-\x1f]+$"
# Free text (comments, notes): at least one character that is not white space, and no NUL.
SAYS_SOMETHING: Final = r"^[^\x00]*[^\x00\s][^\x00]*$"

# For a list of names in a query (`?site=a&site=b`): the pattern applies to each.
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAME)]
