"""Shared fixtures: generated order files, pipeline YAML files, destination hashes, a webhook."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from mendflow.state.store import StateStore
from mendflow.testing import FakeClock


def write_orders(
    path: Path, *, start: int, count: int, seed: int = 0, bad_every: int = 0, repeat_from: int = 0
) -> None:
    """Write ``count`` orders as JSON lines, ids from ``start``.

    Every ``bad_every``-th row has a malformed amount; ``repeat_from`` > 0 makes ids wrap around
    to re-use earlier ids (updates, for merge mode).
    """
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            ident = start + i if not repeat_from else repeat_from + (i % 5000)
            amount: Any = round(rng.uniform(1, 900), 2)
            if bad_every and i % bad_every == bad_every - 1:
                amount = "n/a"
            record = {
                "id": ident,
                "updated_at": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                "amount": amount,
                "qty": rng.randint(1, 9),
                "note": None if i % 3 else f"note {i}",
            }
            out.write(json.dumps(record) + "\n")


def write_pipeline(path: Path, **spec: Any) -> Path:
    """Write a pipeline YAML file and return its path."""
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def table_hash(db: Path, table: str) -> tuple[int, str]:
    """(row count, order-independent hash of every row's content) of ``table``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            f'SELECT count(*), coalesce(md5(string_agg(h, \',\' ORDER BY h)), \'\') FROM '
            f'(SELECT md5(CAST(t AS VARCHAR)) AS h FROM "{table}" t)'
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), str(row[1])


def dead_letter_hash(db: Path) -> tuple[int, str]:
    """Hash of the dead letters' content, without run ids and times."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            "SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM (SELECT "
            "md5(concat_ws('|', pipeline, batch_id, row_index, stage, reason, hex(record))) AS h "
            "FROM _mendflow_dead_letters)"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), str(row[1])


@pytest.fixture
def orders_dir(tmp_path: Path) -> Path:
    """A folder with three JSON-lines files of 1,000 orders each, a few values malformed."""
    folder = tmp_path / "drops"
    folder.mkdir()
    for n in range(3):
        write_orders(folder / f"orders-{n}.jsonl", start=n * 1000 + 1, count=1000, seed=n,
                     bad_every=97)
    return folder


class WebhookReceiver:
    """A real webhook endpoint on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def pages(self, kind: str = "escalated") -> Counter[str]:
        """How many alerts of ``kind`` each incident got."""
        return Counter(b["mendflow"]["incident_id"] for b in self.bodies
                       if b["mendflow"]["kind"] == kind)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver, stopped after the test."""
    hook = WebhookReceiver()
    yield hook
    hook.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (libpq URL), dropped after it."""
    from tests._pg import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state store URL: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    """The state store at ``state_url``, closed after the test."""
    opened = StateStore(state_url)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FakeClock:
    """Fake time: monotonic starts at 0, nothing really sleeps."""
    return FakeClock()
