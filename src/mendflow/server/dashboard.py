"""The dashboard of ``mendflow serve``: server-rendered pages under ``/ui``.

    app.include_router(dashboard.router)       # app.state.control is a Control

Five pages, each a thin view over ``request.app.state.control`` (the one facade the JSON API and
the webhook use too): pipelines with health and freshness (``/ui/``), recent runs (``/ui/runs``),
incidents on a timeline with their healing actions (``/ui/incidents``), a dead-letter browser
(``/ui/dead-letters?pipeline=NAME``) and service levels with small charts (``/ui/slo``).

The pages are read-only. Their buttons ("run now", "replay") call the JSON API from the browser
with the token typed into the header's token box (kept in the browser's ``localStorage``, never
sent to or rendered by these pages); without a valid token the API refuses them (401) and the page
says so. Nothing loads from elsewhere: the charts are inline SVG drawn from geometry computed
here, the CSS and script come from ``/ui/static/``, and a Content-Security-Policy holds the pages
to their own origin. Jinja's autoescape is on for every template.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mendflow._redact import redact
from mendflow.exceptions import MendflowError, UnknownPipeline

router = APIRouter(prefix="/ui", include_in_schema=False)

#: Files served from ``static/`` and their media types (nothing else is served).
STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"}
#: Held by every page: only this origin's script, style and API; no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
NAV = (("pipelines", "/", "Pipelines"), ("runs", "/runs", "Runs"),
       ("incidents", "/incidents", "Incidents"), ("dead-letters", "/dead-letters", "Dead letters"),
       ("slo", "/slo", "Service levels"))


# -- pages ----------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def _bare(request: Request) -> Response:
    return RedirectResponse(f"{_root(request)}/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
def pipelines_page(request: Request) -> Response:
    """Every pipeline: health, freshness lag against its threshold, schedule, last run."""
    rows = _control(request).pipelines()
    return _render(request, "pipelines", "pipelines.html", pipelines=rows)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request, pipeline: str | None = None, limit: int = Query(50, ge=1, le=500)
) -> Response:
    """Recent runs, newest first (of one pipeline with ``?pipeline=``)."""
    control = _control(request)
    if pipeline and (missing := _unknown(control, pipeline)):
        return missing
    rows = control.runs(pipeline=pipeline or None, limit=limit)
    return _render(request, "runs", "runs.html", runs=rows, pipeline=pipeline,
                   names=_names(control))


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(
    request: Request, pipeline: str | None = None, limit: int = Query(50, ge=1, le=500)
) -> Response:
    """Incidents on a timeline, and each one's healing actions in order."""
    control = _control(request)
    if pipeline and (missing := _unknown(control, pipeline)):
        return missing
    rows = control.incidents(pipeline=pipeline or None, limit=limit)
    return _render(request, "incidents", "incidents.html", incidents=rows, pipeline=pipeline,
                   names=_names(control), timeline=timeline(rows, now=_now(control)))


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters_page(
    request: Request, pipeline: str | None = None,
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
) -> Response:
    """One pipeline's dead letters, each with a replay button (the first pipeline by default)."""
    control = _control(request)
    names = _names(control)
    chosen = pipeline or (names[0] if names else None)
    letters: list[dict[str, Any]] = []
    error, status = "", 200
    if chosen is not None:
        if missing := _unknown(control, chosen):
            return missing
        try:
            letters = control.dead_letters(chosen, limit=limit, offset=offset)
        except MendflowError as exc:  # the destination is locked, down or misdeclared
            error, status = redact(str(exc)), 503 if exc.retryable else 500
    page = _render(request, "dead-letters", "dead_letters.html", pipeline=chosen, names=names,
                   letters=letters, limit=limit, offset=offset, error=error)
    page.status_code = status
    return page


@router.get("/slo", response_class=HTMLResponse)
def slo_page(request: Request) -> Response:
    """Availability, MTTR and auto-heal rate per pipeline, as a table and bar charts."""
    levels = _control(request).service_levels()
    return _render(request, "slo", "slo.html", levels=levels, charts=slo_charts(levels))


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The dashboard's stylesheet, script and icon."""
    if name not in STATIC:
        return _not_found(f"no static file named {name!r}")
    return Response(_static(name), media_type=STATIC[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# -- view geometry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a chart, in SVG user units: where it is, its label, its tooltip."""

    x: float
    y: float
    width: float
    height: float
    label: str
    title: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    """A small horizontal bar chart (or the incident timeline): its size, bars and axis ticks."""

    title: str
    width: float
    height: float
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...] = ()
    label_width: float = 0.0


LABEL_W, PLOT_W, ROW_H, BAR_H, AXIS_H = 190.0, 560.0, 24.0, 16.0, 22.0


def timeline(incidents: Sequence[Mapping[str, Any]], *, now: float) -> Chart | None:
    """One bar per incident, from detection to recovery (or ``now``), on a shared time axis;
    the oldest incident on top. None when no incident has a detection time."""
    spans = []
    for row in reversed(incidents):
        began = _epoch(row.get("detected_at"))
        if began is not None:
            spans.append((row, began, _epoch(row.get("recovered_at"))))
    if not spans:
        return None
    start = min(began for _, began, _ in spans)
    end = max([now, *(ended for _, _, ended in spans if ended is not None)])
    scale = PLOT_W / max(end - start, 1.0)
    bars = tuple(
        _span(row, began, ended, now=now, x=LABEL_W + (began - start) * scale,
              y=AXIS_H + i * ROW_H + 4, scale=scale)
        for i, (row, began, ended) in enumerate(spans)
    )
    ticks = tuple((LABEL_W + f * PLOT_W, when(start + f * (end - start))) for f in (0.0, 0.5, 1.0))
    return Chart("Incidents over time", LABEL_W + PLOT_W + 10, AXIS_H + len(bars) * ROW_H + 8,
                 bars, ticks, LABEL_W)


def _span(row: Mapping[str, Any], began: float, ended: float | None, *, now: float, x: float,
          y: float, scale: float) -> Bar:
    stop = ended if ended is not None else now
    status = str(row.get("status", ""))
    label = f"{row.get('failure_class', '?')} · {row.get('pipeline', '?')}"
    until = when(ended) if ended is not None else "now"
    title = f"{label}: {status}, {when(began)} to {until} ({duration(stop - began)})"
    return Bar(x, y, max((stop - began) * scale, 3.0), BAR_H, label, title, status)


def slo_charts(levels: Sequence[Mapping[str, Any]]) -> list[Chart]:
    """Bar charts of availability, MTTR and auto-heal rate, one bar per pipeline."""
    return [
        _bars("Availability", levels, "availability", 1.0, percent),
        _bars("MTTR (mean time to recover)", levels, "mttr_s", None, duration),
        _bars("Auto-heal rate", levels, "auto_heal_rate", 1.0, percent),
    ]


def _bars(title: str, levels: Sequence[Mapping[str, Any]], key: str, top: float | None,
          text: Callable[[Any], str]) -> Chart:
    values = [_number(level.get(key)) for level in levels]
    top = top or max((v for v in values if v is not None), default=0.0) or 1.0
    width, label_w = 300.0, 140.0
    bars = []
    for i, (level, value) in enumerate(zip(levels, values, strict=True)):
        shown = "n/a" if value is None else text(value)
        name = str(level.get("pipeline", "?"))
        bars.append(Bar(label_w, 4 + i * ROW_H, 0.0 if value is None else value / top * width,
                        BAR_H, name, f"{name}: {shown}", shown))
    return Chart(title, label_w + width + 70, 8 + len(bars) * ROW_H, tuple(bars), (), label_w)


# -- formatting (template filters) ----------------------------------------------------------------


def when(value: Any) -> str:
    """A time (epoch seconds or ISO text) as ``YYYY-MM-DD HH:MM:SSZ``; a dash when absent."""
    at = _epoch(value)
    if at is None:
        return "—" if value in (None, "") else str(value)
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(value: Any) -> str:
    """Seconds as a short human duration (``850 ms``, ``42 s``, ``3.5 min``, ``2.0 h``)."""
    seconds = _number(value)
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.0f} s"


def percent(value: Any) -> str:
    """A share (0..1) as a percentage with one decimal; ``n/a`` when unknown."""
    share = _number(value)
    return "n/a" if share is None else f"{share * 100:.1f} %"


def schedule(value: Any) -> str:
    """A schedule as the service reports it (``{every_s}``, ``{cron}`` or text)."""
    if value in (None, "", {}):
        return "manual"
    if isinstance(value, Mapping):
        if value.get("every_s") is not None:
            return f"every {duration(value['every_s'])}"
        if value.get("cron"):
            return f"cron {value['cron']}"
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def short(value: Any, size: int = 8) -> str:
    """The first ``size`` characters of an id."""
    return "" if value is None else str(value)[:size]


def checks_text(checks: Iterable[Any]) -> str:
    """Failed checks as ``check(column): message; ...``."""
    parts = []
    for check in checks or ():
        if isinstance(check, Mapping):
            column = f"({check['column']})" if check.get("column") else ""
            message = f": {check['message']}" if check.get("message") else ""
            parts.append(f"{check.get('check', '?')}{column}{message}")
        else:
            parts.append(str(check))
    return "; ".join(parts)


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# -- plumbing -------------------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mendflow.server", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters |= {"when": when, "duration": duration, "percent": percent,
                    "schedule": schedule, "short": short, "checks_text": checks_text}
    return env


@cache
def _static(name: str) -> bytes:
    return (importlib.resources.files("mendflow.server") / "static" / name).read_bytes()


def _control(request: Request) -> Any:
    return request.app.state.control


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _now(control: Any) -> float:
    clock = getattr(control, "clock", None)
    return float(clock.now()) if clock is not None else datetime.now(UTC).timestamp()


def _names(control: Any) -> list[str]:
    return list(control.catalog.names())


def _unknown(control: Any, pipeline: str) -> HTMLResponse | None:
    """A 404 page when ``pipeline`` is not served, else None."""
    names = _names(control)
    return None if pipeline in names else _not_found(str(UnknownPipeline(pipeline, names)))


def _render(request: Request, page: str, template: str, **context: Any) -> HTMLResponse:
    root = _root(request)
    html = _environment().get_template(template).render(
        page=page, nav=NAV, ui=f"{root}/ui", api=f"{root}/api", **context
    )
    return HTMLResponse(html, headers=HEADERS)


def _not_found(message: str) -> HTMLResponse:
    html = _environment().get_template("not_found.html").render(
        page="", nav=NAV, ui="/ui", api="/api", message=message
    )
    return HTMLResponse(html, status_code=404, headers=HEADERS)


__all__: Sequence[str] = ("duration", "percent", "router", "slo_charts", "timeline", "when")
