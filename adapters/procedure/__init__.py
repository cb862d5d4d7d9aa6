"""A simulator of the provincial procedure system (dossier status), served by the ``rest``
kind to X-Road callers (``provider:`` in routing.yaml). Not an adapter kind."""
