"""Where the online feature state is published: a folder under RETAIL_ML_HOME (the default), or
Redis (RETAIL_ML_ONLINE_STORE=redis://host:port/db), for forecasters on other hosts than the
run that built the state.

Both publish a whole state at once and move one `CURRENT` name to it: a reader sees the
previous state or the new one, never half of one. A reader that read CURRENT and then loads
that name may find it replaced twice over: the folder store keeps the last `keep` folders,
Redis lets replaced states expire after a grace period, and `load_current` retries once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.forecasting.online import (
    CURRENT,
    OnlineState,
    current_name,
    decode_state,
    encode_state,
    load_state,
    new_state_name,
    save_state,
)
from resources.settings import Settings

PASSWORD_ENV = "RETAIL_ML_ONLINE_STORE_PASSWORD"  # kept out of the URL, which the UI shows
GRACE = 900  # seconds a replaced state stays loadable in Redis
# KEYS: the new state's hash, CURRENT, the list of kept states (newest first). ARGV: the name,
# how many to keep, the grace in seconds, the state keys' prefix, then the hash's fields and
# values.
PUBLISH = """
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
local keep = tonumber(ARGV[2])
for _, old in ipairs(redis.call('LRANGE', KEYS[3], keep, -1)) do
  redis.call('EXPIRE', ARGV[4] .. old, ARGV[3])
end
redis.call('LTRIM', KEYS[3], 0, keep - 1)
return 1
"""


@dataclass(frozen=True)
class FolderStore:
    root: Path

    def publish(self, state: OnlineState, keep: int = 2) -> str:
        return save_state(state, self.root, keep).name

    def current(self) -> str:
        """The published state's name; "" when none is."""
        return current_name(self.root)

    def load(self, name: str) -> OnlineState:
        return load_state(self.root, name)

    def location(self, name: str) -> str:
        return str(self.root / name)

    def __str__(self) -> str:
        return str(self.root)


@dataclass
class RedisStore:
    """One hash per state (`<prefix>:state:<name>`, a field per part), the `<prefix>:CURRENT`
    key naming the served one and the `<prefix>:states` list of the kept ones, newest
    first."""

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

    def publish(self, state: OnlineState, keep: int = 2, grace_seconds: int = GRACE) -> str:
        """One script, so Redis runs it whole with nothing in between: the new hash, CURRENT,
        and the list; states falling off the list expire after `grace_seconds`, so a reader
        that read CURRENT just before can still load the name it got."""
        name = new_state_name()
        fields = [item for pair in encode_state(state).items() for item in pair]
        self.client.eval(PUBLISH, 3, self._key("state", name), self._key(CURRENT),
                         self._key("states"), name, keep, grace_seconds,
                         self._key("state", ""), *fields)
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

    def location(self, name: str) -> str:
        return f"{self.url} {self._key('state', name)}"

    def __str__(self) -> str:
        return f"{self.url} ({self.prefix})"


OnlineStore = FolderStore | RedisStore


def online_store(settings: Settings) -> OnlineStore:
    if settings.online_store:
        return RedisStore(settings.online_store)
    return FolderStore(settings.online_dir)


def load_current(store: OnlineStore, name: str) -> OnlineState:
    """The state `name`; if it was replaced and removed since it was read, the state CURRENT
    names now (a reader that follows sources then sees CURRENT moved, and loads again)."""
    try:
        return store.load(name)
    except FileNotFoundError:
        latest = store.current()
        if not latest or latest == name:
            raise
        return store.load(latest)
