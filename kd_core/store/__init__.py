"""The run store: a SQLite index of runs plus a folder of weights."""

from kd_core.store.db import STATUSES, Store, StoreError

__all__ = ["STATUSES", "Store", "StoreError"]
