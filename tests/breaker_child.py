"""Make calls through a circuit breaker that shares its state in a state store (SQLite or
PostgreSQL: any URL ``StateStore`` takes).

    python tests/breaker_child.py STATE_URL fail|succeed COUNT

Each call fails with SourceUnavailable or succeeds; calls refused by the open breaker are
counted. Prints ``<state> <calls made> <calls refused>`` at the end.
"""

from __future__ import annotations

import sys

from mendflow.exceptions import DependencyDown, SourceUnavailable
from mendflow.resilience.breaker import BreakerPolicy, CircuitBreaker
from mendflow.state.breakers import SqlBreakerStore

DEPENDENCY = "orders-api"
POLICY = BreakerPolicy(window=4, min_calls=4, open_s=1.0, half_open_probes=2, sync_s=0.1)


def main(argv: list[str]) -> None:
    url, action, count = argv[1], argv[2], int(argv[3])
    breaker = CircuitBreaker(DEPENDENCY, policy=POLICY, store=SqlBreakerStore.from_url(url))
    made = refused = 0
    for _ in range(count):
        try:
            with breaker.guard():
                made += 1
                if action == "fail":
                    raise SourceUnavailable("connection refused", dependency=DEPENDENCY)
        except SourceUnavailable:
            pass
        except DependencyDown:
            refused += 1
    print(breaker.state.value, made, refused)


if __name__ == "__main__":
    main(sys.argv)
