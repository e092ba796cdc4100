"""The Redis server the online store tests use (127.0.0.1:6379, started before every session
and CI), and their clean-up."""

from __future__ import annotations

import socket

import pytest

from ml_assets.forecasting.online_store import RedisStore

# A database of the tests' own. The asset and the forecaster use the default prefix there (one
# test session at a time on a Redis); the store's own tests use a prefix each.
URL = "redis://127.0.0.1:6379/13"


def _answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not _answers(), reason="no Redis on 127.0.0.1:6379")


def drop(store: RedisStore) -> None:
    """Deletes every key under the store's prefix."""
    keys = list(store.client.scan_iter(f"{store.prefix}:*"))
    if keys:
        store.client.delete(*keys)
