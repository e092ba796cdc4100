"""Where the online feature state is published: a folder under RETAIL_ML_HOME (the default), or
Redis (RETAIL_ML_ONLINE_STORE=redis://host:port/db), for forecasters on other hosts than the
run that built the state.

Both publish a whole state at once and move one `CURRENT` name to it: a reader sees the
previous state or the new one, never half of one. Both keep the last `keep` states, since a
reader may still be loading the previous one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.forecasting.online import (
    CURRENT,
    OnlineState,
    decode_state,
    encode_state,
    load_state,
    new_state_name,
    save_state,
)
from resources.settings import Settings

PASSWORD_ENV = "RETAIL_ML_ONLINE_STORE_PASSWORD"  # kept out of the URL, which the UI shows


@dataclass(frozen=True)
class FolderStore:
    root: Path

    def publish(self, state: OnlineState, keep: int = 2) -> str:
        return save_state(state, self.root, keep).name

    def current(self) -> str:
        """The published state's name; "" when none is."""
        pointer = self.root / CURRENT
        return pointer.read_text().strip() if pointer.is_file() else ""

    def load(self, name: str) -> OnlineState:
        return load_state(self.root, name)

    def __str__(self) -> str:
        return str(self.root)


@dataclass
class RedisStore:
    """One hash per state (`<prefix>:state:<name>`, a field per part), the `<prefix>:CURRENT`
    key naming the served one and the `<prefix>:states` list, newest first."""

    url: str
    prefix: str = "retail_ml:online"
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def client(self) -> Any:
        if self._client is None:  # connected on first use, never at import or construction
            import redis

            self._client = redis.Redis.from_url(
                self.url, password=os.environ.get(PASSWORD_ENV) or None,
                socket_timeout=10, socket_connect_timeout=5)
        return self._client

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def publish(self, state: OnlineState, keep: int = 2) -> str:
        name = new_state_name()
        with self.client.pipeline(transaction=True) as tx:  # MULTI/EXEC: all of it or nothing
            tx.hset(self._key("state", name), mapping=encode_state(state))
            tx.set(self._key(CURRENT), name)
            tx.lpush(self._key("states"), name)
            tx.execute()
        old = [n.decode() for n in self.client.lrange(self._key("states"), keep, -1)]
        if old:
            with self.client.pipeline(transaction=True) as tx:
                tx.delete(*(self._key("state", n) for n in old))
                tx.ltrim(self._key("states"), 0, keep - 1)
                tx.execute()
        return name

    def current(self) -> str:
        name = self.client.get(self._key(CURRENT))
        return name.decode() if name else ""

    def load(self, name: str) -> OnlineState:
        parts = self.client.hgetall(self._key("state", name))
        if not parts:
            raise FileNotFoundError(f"no online feature state {name!r} in {self}: materialize "
                                    "`online_features`")
        return decode_state({k.decode(): v for k, v in parts.items()})

    def __str__(self) -> str:
        return f"{self.url} ({self.prefix})"


OnlineStore = FolderStore | RedisStore


def online_store(settings: Settings) -> OnlineStore:
    if settings.online_store:
        return RedisStore(settings.online_store)
    return FolderStore(settings.online_dir)

