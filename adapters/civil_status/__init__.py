"""MOJ Electronic Civil Status DB: birth, marriage and death registrations over REST/JSON.

Modules: :mod:`.models` (canonical messages), :mod:`.dates` (partial dates and MOJ date
spellings), :mod:`.mapping` (canonical ⇄ MOJ, pure), :mod:`.adapter` (the ``civil_status``
kind and its adapter), :mod:`.data` and :mod:`.simulator` (a sandbox MOJ server with
deterministic records and fault knobs).
"""

from adapters.civil_status.adapter import (
    KIND,
    CivilStatusAdapter,
    CivilStatusKind,
    CivilStatusOptions,
)
from adapters.civil_status.models import CivilStatusLookup, CivilStatusLookupResult, RecordType

__all__ = [
    "KIND",
    "CivilStatusAdapter",
    "CivilStatusKind",
    "CivilStatusLookup",
    "CivilStatusLookupResult",
    "CivilStatusOptions",
    "RecordType",
]
