"""The run store: a SQLite index of runs plus a folder of weights."""

from pathlib import Path

from kd_core.store.db import STATUSES, Store, StoreError

__all__ = ["STATUSES", "Store", "StoreError", "as_store"]


def as_store(store: Store | str | Path) -> Store:
    """A Store, or the store at a folder: the functions the CLI and the pages share take either."""
    return store if isinstance(store, Store) else Store(store)
