"""Adapters to national databases: built-in kinds and the registry (see ``adapters.base``)."""
