"""Where output goes: a local directory or S3, chosen by URI; shards and manifests on top."""

from medtrinity_tasks.storage.store import LocalStore, S3Store, Store, open_store

__all__ = ["LocalStore", "S3Store", "Store", "open_store"]
