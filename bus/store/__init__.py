"""Store backends: ``sqlite`` (embedded default) and ``postgres`` (production)."""

from bus.store.base import MessageState, Store, StoredMessage

__all__ = ["MessageState", "Store", "StoredMessage"]
