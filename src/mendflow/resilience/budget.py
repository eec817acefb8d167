"""A retry budget: retries may add at most a fixed share of load to a dependency.

Per-call retry limits do not stop a retry storm: when a dependency is down, every caller retries
up to its limit and the load multiplies just when the dependency can bear it least. A budget
shared by all calls to one dependency caps retries as a share of first attempts instead (the
idea of gRPC's retry throttling and Finagle's retry budgets)::

    budget = RetryBudget()  # one per dependency, shared by every caller
    for attempt in retrying(Retry(), dependency="orders-api", budget=budget):
        with attempt:
            response = client.get(url)

Two pools of tokens, each updated in O(1) under one lock, from the injected clock:

- **The balance.** Every first attempt deposits ``ratio`` tokens (0.2: retries add at most 20 %
  to the load), up to ``max_tokens``. The balance decays exponentially with time constant
  ``ttl_s``, so deposits expire: under a steady stream of calls the balance equals what the last
  ``ttl_s`` seconds deposited, as a sliding window would, but with one float and no buckets.
- **The floor.** A token bucket that refills at ``min_per_s`` tokens a second and holds one
  second's worth (at least one token), so a quiet dependency that sees few first attempts can
  still be retried ``min_per_s`` times a second. It starts full.

A retry takes one token from the balance, or from the floor when the balance holds less than
one, and is refused when neither can give a whole token. Decay only ever removes tokens, so in
the T seconds after the budget is made, the retries allowed are at most ``ratio`` x first
attempts + ``min_per_s`` x T + the floor's capacity (over a later span, add the balance held at
its start, at most ``max_tokens``). First attempts are never refused.
"""

from __future__ import annotations

import math
import threading

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError


class RetryBudget:
    """Retries allowed to one dependency: ``ratio`` per first attempt, plus ``min_per_s``."""

    __slots__ = (
        "_balance",
        "_clock",
        "_decay_per_s",
        "_floor",
        "_floor_cap",
        "_floor_stamp",
        "_lock",
        "_stamp",
        "max_tokens",
        "min_per_s",
        "ratio",
        "ttl_s",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_s: float = 1.0,
        max_tokens: float = 100.0,
        ttl_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _check("ratio", ratio, minimum=0.0)
        _check("min_per_s", min_per_s, minimum=0.0)
        _check("max_tokens", max_tokens, minimum=1.0)
        _check("ttl_s", ttl_s, minimum=0.0, strict=True)
        self.ratio = float(ratio)
        self.min_per_s = float(min_per_s)
        self.max_tokens = float(max_tokens)
        self.ttl_s = float(ttl_s)
        self._decay_per_s = -1.0 / self.ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._balance = 0.0
        self._stamp = self._floor_stamp = clock.monotonic()
        self._floor_cap = max(1.0, self.min_per_s) if self.min_per_s > 0 else 0.0
        self._floor = self._floor_cap

    def deposit(self) -> None:
        """Credit one first attempt: ``ratio`` tokens, up to ``max_tokens``."""
        now = self._clock.monotonic()
        with self._lock:
            balance = self._decayed(now) + self.ratio
            self._balance = balance if balance < self.max_tokens else self.max_tokens

    def try_withdraw(self) -> bool:
        """Take one token for a retry; False, and nothing taken, when the budget is spent."""
        now = self._clock.monotonic()
        with self._lock:
            balance = self._decayed(now)
            if balance >= 1.0:
                self._balance = balance - 1.0
                return True
            self._balance = balance
            floor = self._refilled(now)
            if floor >= 1.0:
                self._floor = floor - 1.0
                return True
            self._floor = floor
            return False

    def tokens(self) -> float:
        """The tokens a retry could draw on now: the balance plus the floor."""
        now = self._clock.monotonic()
        with self._lock:
            self._balance = self._decayed(now)
            self._floor = self._refilled(now)
            return self._balance + self._floor

    def _decayed(self, now: float) -> float:
        """The balance at ``now``, having moved the balance's clock there; hold the lock."""
        elapsed = now - self._stamp
        if elapsed <= 0.0:  # no time passed, or another thread read the clock later
            return self._balance
        self._stamp = now
        return self._balance * math.exp(elapsed * self._decay_per_s)

    def _refilled(self, now: float) -> float:
        """The floor at ``now``, having moved the floor's clock there; hold the lock."""
        elapsed = now - self._floor_stamp
        if elapsed <= 0.0:
            return self._floor
        self._floor_stamp = now
        return min(self._floor_cap, self._floor + elapsed * self.min_per_s)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_s={self.min_per_s}, "
            f"max_tokens={self.max_tokens}, ttl_s={self.ttl_s})"
        )


def _check(name: str, value: float, *, minimum: float, strict: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number at least (or above) ``minimum``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"above {minimum:g}" if strict else f"at least {minimum:g}"
        raise ConfigError(f"RetryBudget {name}={value!r} is invalid; give a finite number {bound}.")
