"""HttpSource against a real orders API on 127.0.0.1, and pagination against in-memory APIs."""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mendflow.batch import Batch
from mendflow.demo._api import DEFAULT_FAULTS, OrdersApi
from mendflow.exceptions import ConfigError, SchemaMismatch, SourceRejected, SourceUnavailable
from mendflow.resilience.budget import RetryBudget
from mendflow.resilience.retry import Retry
from mendflow.sources.http import HTTPX_ERRORS, HTTPX_UNUSED, HttpSource, Pagination
from mendflow.testing import FakeClock
from mendflow.typing import Source

FAST = Retry(attempts=5, base_s=0.05, cap_s=0.5)


class Counting(httpx.BaseTransport):
    """A transport that counts requests and remembers being closed."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests = 0
        self.closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


@pytest.fixture
def api() -> Iterator[OrdersApi]:
    with OrdersApi(orders=250) as running:
        yield running


def orders_source(api: OrdersApi, **options: Any) -> HttpSource:
    defaults: dict[str, Any] = {
        "records_path": "data",
        "pagination": Pagination("cursor", limit=100),
        "incremental_field": "updated_at",
        "incremental_param": "updated_since",
        "retry": FAST,
        "timeout_s": 0.5,
        "clock": FakeClock(),
    }
    return HttpSource(f"{api.url}/orders", **(defaults | options))


def ids(batches: list[Batch]) -> list[int]:
    return [i for batch in batches for i in batch.data.column("id").to_pylist()]


def mock(handler: Callable[[httpx.Request], httpx.Response]) -> Counting:
    return Counting(httpx.MockTransport(handler))


def test_cursor_pagination_reads_every_order_once(api: OrdersApi) -> None:
    """A first read follows the cursor through every page and yields each order exactly once."""
    batches = list(orders_source(api).read({}))
    assert [b.data.num_rows for b in batches] == [100, 100, 50]
    assert ids(batches) == list(range(1, 251))
    assert len({b.id for b in batches}) == 3
    assert batches[-1].position == {"cursor": api.records[-1]["updated_at"], "window": None}


def test_mid_window_position_resumes_at_next_page_with_same_ids(api: OrdersApi) -> None:
    """Reading from a mid-window position continues at the next page with the same batch ids."""
    source = orders_source(api)
    first = list(source.read({"cursor": None}))
    assert first[0].position["window"] == {
        "since": None,
        "next": "100",
        "max": api.records[99]["updated_at"],
    }
    resumed = list(source.read(first[0].position))
    assert [b.id for b in resumed] == [b.id for b in first[1:]]
    assert ids(resumed) == list(range(101, 251))
    assert resumed[-1].position == first[-1].position


def test_read_from_final_position_yields_no_rows(api: OrdersApi) -> None:
    """A read from the final position asks for newer orders only and gets none."""
    source = orders_source(api)
    final = list(source.read({}))[-1].position
    again = list(source.read(final))
    assert sum(b.data.num_rows for b in again) == 0
    assert again[-1].position == final
    query = parse_qs(urlsplit(api.log[-1].path).query)
    assert query["updated_since"] == [final["cursor"]]


def test_new_orders_after_final_position_are_read_exactly(api: OrdersApi) -> None:
    """Orders added after a complete read are the only ones the next read yields, in a new batch."""
    source: Source = orders_source(api)
    final = list(source.read({}))[-1].position
    [empty] = list(source.read(final))
    api.add_orders(7)
    batches = list(source.read(final))
    assert ids(batches) == list(range(251, 258))
    assert batches[0].id != empty.id  # the same request, but a different page now
    assert batches[-1].position == {"cursor": api.records[-1]["updated_at"], "window": None}


@pytest.mark.parametrize(
    "faults",
    [
        {2: "503", 3: "500", 4: "timeout:1.5", 5: "reset"},
        dict(DEFAULT_FAULTS),
    ],
    ids=["5xx-timeout-reset", "demo-script"],
)
def test_faults_are_retried_and_heal(faults: dict[int, str]) -> None:
    """Server errors, a timeout and a reset connection are retried to the same rows as no faults."""
    with OrdersApi() as clean, OrdersApi(faults=faults) as faulty:
        expected = list(orders_source(clean).read({}))
        healed = list(orders_source(faulty).read({}))
        assert faulty.faults_served == len(faults)
    assert [b.data for b in healed] == [b.data for b in expected]
    assert [b.position for b in healed] == [b.position for b in expected]


def test_rate_limit_waits_as_long_as_retry_after_says() -> None:
    """A 429 with Retry-After: 7 makes the retry wait exactly 7 seconds, then succeed."""
    clock = FakeClock()
    with OrdersApi(orders=10, faults={1: "429:7"}) as api:
        batches = list(orders_source(api, clock=clock).read({}))
    assert clock.sleeps == [7.0]
    assert ids(batches) == list(range(1, 11))


def test_retry_after_as_http_date_is_relative_to_the_clock() -> None:
    """A 503 whose Retry-After is an HTTP date 30 s ahead of the clock waits 30 seconds."""
    clock = FakeClock()
    later = email.utils.formatdate(clock.now() + 30, usegmt=True)
    answers = iter(
        [httpx.Response(503, headers={"Retry-After": later}), httpx.Response(200, json=[])]
    )
    source = HttpSource("http://api.test/x", clock=clock, transport=mock(lambda _: next(answers)))
    assert [b.data.num_rows for b in source.read({})] == [0]
    assert clock.sleeps == [30.0]


@pytest.mark.parametrize(
    ("faults", "path"), [({1: "401"}, "/orders"), ({}, "/nothing-here")], ids=["401", "404"]
)
def test_client_errors_are_rejected_without_retrying(faults: dict[int, str], path: str) -> None:
    """A 401 or 404 raises SourceRejected after exactly one request."""
    with OrdersApi(orders=10, faults=faults) as api:
        source = orders_source(api)
        source.url = api.url + path
        with pytest.raises(SourceRejected, match="Retrying will not help") as caught:
            list(source.read({}))
        assert len(api.log) == 1
    assert caught.value.status in (401, 404)


def test_refused_connection_is_unavailable_after_every_attempt() -> None:
    """A refused connection is retried for every attempt, then raises SourceUnavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    counting = Counting(httpx.HTTPTransport())
    source = HttpSource(
        f"http://127.0.0.1:{port}/orders",
        retry=Retry(attempts=3),
        clock=FakeClock(),
        transport=counting,
    )
    with pytest.raises(SourceUnavailable, match="check the service is up") as caught:
        list(source.read({}))
    assert counting.requests == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def paged(records: list[dict[str, Any]], param: str, size: int) -> Callable[..., httpx.Response]:
    """An in-memory API answering `?<param>=<n>` pages of `size` records (1-based pages)."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params[param])
        return httpx.Response(200, json={"items": records[(page - 1) * size : page * size]})

    return handler


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "v": i * 10} for i in range(1, n + 1)]


def test_page_pagination_ends_at_a_short_page_when_page_size_is_known() -> None:
    """Page mode with a page size stops at the first page shorter than it."""
    kind = Pagination("page", size_param="per_page", page_size=10)
    transport = mock(paged(rows(25), "page", 10))
    source = HttpSource(
        "http://api.test/r", records_path="items", pagination=kind, transport=transport
    )
    batches = list(source.read({}))
    assert ids(batches) == list(range(1, 26))
    assert [b.position["window"] for b in batches[:2]] == [
        {"since": None, "next": 2, "max": None},
        {"since": None, "next": 3, "max": None},
    ]
    assert transport.requests == 3


def test_page_pagination_ends_at_an_empty_page_as_a_zero_row_batch() -> None:
    """Without a page size, page mode reads until an empty page, yielded with the final position."""
    source = HttpSource(
        "http://api.test/r",
        records_path="items",
        pagination=Pagination("page"),
        transport=mock(paged(rows(20), "page", 10)),
    )
    batches = list(source.read({}))
    assert [b.data.num_rows for b in batches] == [10, 10, 0]
    assert batches[-1].position == {"cursor": None, "window": None}


def test_offset_pagination_sends_offset_and_limit_and_stops_at_a_short_page() -> None:
    """Offset mode advances by the rows received and stops at a page shorter than the limit."""
    records = rows(25)

    def handler(request: httpx.Request) -> httpx.Response:
        start, limit = int(request.url.params["skip"]), int(request.url.params["take"])
        return httpx.Response(200, json=records[start : start + limit])

    kind = Pagination("offset", offset_param="skip", limit_param="take", limit=10)
    source = HttpSource("http://api.test/r", pagination=kind, transport=mock(handler))
    batches = list(source.read({}))
    assert [b.data.num_rows for b in batches] == [10, 10, 5]
    assert [b.position["window"]["next"] for b in batches[:2]] == [10, 20]


@pytest.mark.parametrize("where", ["body", "header"])
def test_link_pagination_follows_next_links(where: str) -> None:
    """Link mode follows a relative next URL from the body, or from the Link header."""
    pages = {
        "/r": ([1, 2], "/r?after=2"),
        "/r?after=2": ([3, 4], "r?after=4"),
        "/r?after=4": ([5], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        found, nxt = pages[target]
        records = [{"id": i} for i in found]
        if where == "body":
            return httpx.Response(200, json={"items": records, "links": {"next": nxt}})
        headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
        return httpx.Response(200, json={"items": records}, headers=headers)

    kind = Pagination("link", next_path="links.next")
    source = HttpSource(
        "http://api.test/r", records_path="items", pagination=kind, transport=mock(handler)
    )
    batches = list(source.read({}))
    assert ids(batches) == [1, 2, 3, 4, 5]
    assert batches[0].position["window"]["next"] == "http://api.test/r?after=2"


def test_records_not_after_the_cursor_are_dropped_and_cursor_is_the_window_max() -> None:
    """An API that filters with >= sends the boundary record again; the source drops it."""
    records = [{"id": i, "ts": i * 100} for i in range(1, 8)]

    def handler(request: httpx.Request) -> httpx.Response:
        since = int(request.url.params.get("since", 0))
        offset = int(request.url.params["offset"])
        matching = [r for r in records if r["ts"] >= since]
        return httpx.Response(200, json=matching[offset : offset + 3])

    source = HttpSource(
        "http://api.test/r",
        pagination=Pagination("offset", limit=3),
        incremental_field="ts",
        incremental_param="since",
        transport=mock(handler),
    )
    batches = list(source.read({"cursor": 300, "window": None}))
    assert ids(batches) == [4, 5, 6, 7]
    assert batches[-1].position == {"cursor": 700, "window": None}


def test_records_keep_fields_that_only_later_records_have() -> None:
    """Columns come from every record of the page, not only the first one."""
    answer = [{"id": 1}, {"id": 2, "note": "late"}]
    source = HttpSource(
        "http://api.test/r", transport=mock(lambda _: httpx.Response(200, json=answer))
    )
    table = next(iter(source.read({}))).data
    assert table.to_pylist() == [{"id": 1, "note": None}, {"id": 2, "note": "late"}]


def test_missing_records_path_names_the_path_and_the_keys_found() -> None:
    """A records_path that is not in the response raises SchemaMismatch naming what is there."""
    body = {"result": {"rows": [], "total": 0}}
    transport = mock(lambda _: httpx.Response(200, json=body))
    source = HttpSource("http://api.test/r", records_path="result.items", transport=transport)
    with pytest.raises(SchemaMismatch, match=r"'result.items'.*at result: \['rows', 'total'\]"):
        list(source.read({}))


def test_a_body_that_is_not_json_is_a_schema_mismatch() -> None:
    """A 200 answer that is not JSON raises SchemaMismatch after one request."""
    transport = mock(lambda _: httpx.Response(200, text="<html>maintenance</html>"))
    source = HttpSource("http://api.test/r", transport=transport)
    with pytest.raises(SchemaMismatch, match="not JSON"):
        list(source.read({}))
    assert transport.requests == 1


def test_unknown_pagination_kind_lists_the_kinds() -> None:
    """An unknown pagination kind raises ConfigError listing the valid ones."""
    with pytest.raises(ConfigError, match="none, page, offset, cursor, link"):
        Pagination("pages")


def test_closing_the_reader_closes_the_client() -> None:
    """Closing the batch generator early closes the HTTP client and its transport."""
    transport = mock(paged(rows(30), "page", 10))
    reader = HttpSource(
        "http://api.test/r",
        records_path="items",
        pagination=Pagination("page"),
        transport=transport,
    ).read({})
    next(reader)
    reader.close()
    assert transport.closed


def test_every_httpx_error_is_mapped() -> None:
    """Every exception class httpx defines maps to a mendflow error or is declared unused."""

    def family(cls: type[Exception]) -> Iterator[type[Exception]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from family(sub)

    exported = (getattr(httpx, name) for name in httpx.__all__)
    errors = {obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)}
    errors |= {cls for cls in family(httpx.HTTPError) if cls.__module__.startswith("httpx")}
    unmapped = sorted(c.__name__ for c in errors if c not in HTTPX_ERRORS and c not in HTTPX_UNUSED)
    assert unmapped == []


def test_the_urls_own_query_is_kept_next_to_paging_params() -> None:
    """Query parameters written in the URL are sent together with the source's own parameters."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=[])

    source = HttpSource(
        "http://api.test/r?format=json",
        params={"region": "eu"},
        pagination=Pagination("offset", limit=5),
        incremental_param="since",
        initial_cursor=7,
        transport=mock(handler),
    )
    list(source.read({}))
    assert seen == [{"format": "json", "region": "eu", "since": "7", "offset": "0", "limit": "5"}]


def test_a_cursor_that_does_not_move_is_a_schema_mismatch() -> None:
    """An API that names the page it answered as the next one raises instead of looping."""
    body = {"data": [{"id": 1}], "next_cursor": "same"}
    transport = mock(lambda _: httpx.Response(200, json=body))
    kind = Pagination("cursor")
    source = HttpSource(
        "http://api.test/r", records_path="data", pagination=kind, transport=transport
    )
    with pytest.raises(SchemaMismatch, match="same page as next"):
        list(source.read({}))
    assert transport.requests == 2


def test_a_position_from_another_source_is_a_config_error() -> None:
    """A window without the HTTP source's keys raises ConfigError saying to reset the checkpoint."""
    source = HttpSource("http://api.test/r", transport=mock(lambda _: httpx.Response(200, json=[])))
    with pytest.raises(ConfigError, match="reset the pipeline's checkpoint"):
        list(source.read({"cursor": None, "window": {"files": {}}}))


def test_a_dead_endpoint_gets_few_retries_from_its_budget() -> None:
    """50 attempts allowed per request, but the endpoint's retry budget (20 % of first attempts
    plus a floor of 1 a second) refuses most of them: an outage is not stormed."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    with OrdersApi(orders=10, faults=dict.fromkeys(range(1, 100), "503")) as api:
        source = HttpSource(
            f"{api.url}/orders", records_path="data", clock=clock, breaker=None,
            retry=Retry(attempts=50, base_s=0.001, cap_s=0.001), retry_budget=budget,
            name="storm",
        )
        with pytest.raises(SourceUnavailable):
            list(source.read({}))
        sent = len(api.log)
    assert 2 <= sent <= 3  # the first attempt, and what the budget's floor lets through
