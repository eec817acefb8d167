"""Run the orders pipeline once against an HTTP API, its breaker shared through a state store.

    python tests/healing_child.py STATE_URL API_URL DUCKDB_PATH

Prints one JSON object: the error the run ended with (``null`` when it succeeded) and its
``retry_after_s``.
"""

from __future__ import annotations

import json
import sys

from mendflow import (
    DuckDBSink,
    HttpSource,
    MendflowError,
    Pagination,
    Pipeline,
    Retry,
)
from mendflow.resilience.breaker import BreakerPolicy

#: The source name: the key of the breaker every worker shares.
DEPENDENCY = "orders-api"
#: Opens after four failed requests and stays open ten minutes: longer than any test runs.
POLICY = BreakerPolicy(window=4, min_calls=4, open_s=600.0, half_open_probes=1)


def pipeline(api_url: str, db: str) -> Pipeline:
    """Six attempts per request: more than the breaker lets through before it opens."""
    source = HttpSource(
        f"{api_url}/orders", records_path="data",
        pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
        params={"limit": "100"}, timeout_s=2, retry=Retry(attempts=6, base_s=0.001),
        breaker=POLICY, name=DEPENDENCY,
    )
    return Pipeline(name="orders", source=source, destination=DuckDBSink(db, table="orders"))


def main(argv: list[str]) -> None:
    state_url, api_url, db = argv[1:4]
    outcome: dict[str, object] = {"error": None, "retry_after_s": None}
    try:
        pipeline(api_url, db).run(state=state_url)
    except MendflowError as exc:
        wait = getattr(exc, "retry_after_s", None)
        outcome = {"error": type(exc).__name__, "retry_after_s": wait}
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv)
