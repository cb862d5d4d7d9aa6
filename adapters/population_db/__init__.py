"""C06 National Population DB over SOAP 1.1: citizen lookup and verify (``population_db``).

``KIND`` is the adapter kind the registry loads; :mod:`.simulator` is a sandbox C06.
"""

from adapters.population_db.adapter import KIND, PopulationDbAdapter, PopulationDbKind
from adapters.population_db.models import PopulationLookup, PopulationVerify

__all__ = [
    "KIND",
    "PopulationDbAdapter",
    "PopulationDbKind",
    "PopulationLookup",
    "PopulationVerify",
]
