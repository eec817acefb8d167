"""The service's HTTP face: JSON API, Alertmanager webhook, metrics, health, dashboard.

    app = create_app(control, token=os.environ.get("MENDFLOW_API_TOKEN"))
    uvicorn.run(app, host="127.0.0.1", port=8470)

Every route is a thin adapter over ``Control`` (reads and actions) or ``AlertHandler`` (the
webhook). GETs are open; every POST needs ``Authorization: Bearer <token>`` (``auth``). Errors
are JSON ``{"error": "..."}``: an unknown pipeline, run or incident is 404, a pipeline busy with
a worker 409 (with ``Retry-After``), a bad request 422; bad input never makes a 5xx. The OpenAPI
schema is at ``/openapi.json`` (and the docs at ``/docs``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mendflow import metrics
from mendflow._redact import redact
from mendflow.exceptions import ConfigError, MendflowError, PipelineBusy, UnknownPipeline
from mendflow.server import dashboard
from mendflow.server.alerts import AlertHandler, AlertmanagerPayload
from mendflow.server.auth import Unauthorized, check
from mendflow.server.control import Control, job_dict
from mendflow.server.models import (
    AlertsOut,
    BreakerIn,
    BreakerMoveOut,
    BreakerOut,
    DeadLetterOut,
    ErrorOut,
    EventOut,
    IncidentOut,
    MaintenanceIn,
    PausedOut,
    PauseIn,
    PipelineOut,
    ReplayIn,
    ReplayOut,
    RunOut,
    RunQueuedOut,
    ServiceLevelOut,
    StatusOut,
    WindowOut,
)
from mendflow.state.jobs import Job

log = logging.getLogger("mendflow.server")

def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in codes}


_ID = Annotated[str, Path(min_length=1, max_length=128)]
_PIPELINE_FILTER = Annotated[str | None, Query(max_length=128)]
_LIMIT = Annotated[int, Query(ge=1, le=1000)]

# -- the app --------------------------------------------------------------------------------------


def create_app(
    control: Control, *, token: str | None, metrics_registry: Any = None
) -> FastAPI:
    """The FastAPI app over ``control``; POSTs need ``token`` (None: they are all refused)."""
    app = FastAPI(
        title="mendflow",
        summary="Self-healing data pipelines: runs, incidents, dead letters, SLOs, actions.",
        version=_version(),
    )
    app.state.control = control
    app.state.token = token
    app.router.route_class = _Guarded
    app.add_middleware(_NoNul)
    _handlers(app)
    auth = [Security(_BEARER)]
    alerts = AlertHandler(control)
    registry = metrics_registry
    if registry is None:
        registry = metrics.registry(control.store, control.catalog, clock=control.clock)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/healthz", response_model=StatusOut, tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=StatusOut, tags=["health"], responses=_errors(503))
    def readyz() -> Any:
        """The state store answers (503 when it does not)."""
        if control.ready():
            return {"status": "ready"}
        return JSONResponse({"error": "the state store does not answer"}, status_code=503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus metrics, computed from the state store at scrape time."""
        return _metrics(registry)

    @app.get("/api/pipelines", response_model=list[PipelineOut], tags=["pipelines"])
    def pipelines() -> Any:
        """Every served pipeline with its health and freshness."""
        return control.pipelines()

    @app.get("/api/pipelines/{name}", response_model=PipelineOut, tags=["pipelines"],
             responses=_errors(404))
    def pipeline(name: _ID) -> Any:
        """One pipeline."""
        return control.pipeline(name)

    @app.get("/api/runs", response_model=list[RunOut], tags=["runs"])
    def runs(pipeline: _PIPELINE_FILTER = None, limit: _LIMIT = 50) -> Any:
        """Recent runs, newest first."""
        return control.runs(pipeline=pipeline, limit=limit)

    @app.get("/api/runs/{run_id}/events", response_model=list[EventOut], tags=["runs"],
             responses=_errors(404))
    def run_events(run_id: _ID) -> Any:
        """Every event of one run, in order."""
        return control.run_events(run_id)

    @app.get("/api/incidents", response_model=list[IncidentOut], tags=["incidents"])
    def incidents(pipeline: _PIPELINE_FILTER = None, limit: _LIMIT = 50) -> Any:
        """Incidents with their healing actions, newest first."""
        return control.incidents(pipeline=pipeline, limit=limit)

    @app.get("/api/incidents/{incident_id}", response_model=IncidentOut, tags=["incidents"],
             responses=_errors(404))
    def incident(incident_id: _ID) -> Any:
        """One incident (by id or a unique prefix of it)."""
        return control.incident(incident_id)

    @app.get("/api/pipelines/{name}/dead-letters", response_model=list[DeadLetterOut],
             tags=["dead letters"], responses=_errors(404, 422))
    def dead_letters(
        name: _ID, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Any:
        """The pipeline's dead letters, oldest first."""
        return control.dead_letters(name, limit=limit, offset=offset)

    @app.get("/api/slo", response_model=list[ServiceLevelOut], tags=["incidents"])
    def slo() -> Any:
        """Availability, MTTR and auto-heal rate per pipeline."""
        return control.service_levels()

    @app.get("/api/jobs", response_model=list[Job], tags=["runs"])
    def jobs(pipeline: _PIPELINE_FILTER = None, limit: _LIMIT = 50) -> Any:
        """Recent jobs of the run queue, newest first."""
        return [job_dict(job) for job in control.job_list(pipeline=pipeline, limit=limit)]

    @app.get("/api/breakers", response_model=list[BreakerOut], tags=["breakers"])
    def breakers() -> Any:
        """Every dependency's circuit breaker that ever changed state."""
        return control.breakers()

    # -- actions (token) ------------------------------------------------------------------------

    @app.post("/api/pipelines/{name}/run", response_model=RunQueuedOut, status_code=202,
              tags=["pipelines"], dependencies=auth, responses=_errors(401, 404))
    def run(name: _ID) -> Any:
        """Queue a run now (the queued one if a run is queued already)."""
        job = control.rerun(name, reason="manual")
        if job is not None:
            return {"job": job_dict(job), "created": True}
        queued = control.jobs.jobs(pipeline=name, status="queued", limit=1)
        return {"job": job_dict(queued[0]) if queued else None, "created": False}

    @app.post("/api/pipelines/{name}/pause", response_model=PausedOut, tags=["pipelines"],
              dependencies=auth, responses=_errors(401, 404))
    def pause(name: _ID, body: PauseIn | None = None) -> Any:
        """Pause the pipeline's scheduled and alert-driven runs."""
        reason = body.reason if body is not None else ""
        changed = control.pause(name, reason=reason or "paused through the API")
        return {"pipeline": name, "paused": True, "changed": changed}

    @app.post("/api/pipelines/{name}/resume", response_model=PausedOut, tags=["pipelines"],
              dependencies=auth, responses=_errors(401, 404))
    def resume(name: _ID) -> Any:
        """Resume them."""
        return {"pipeline": name, "paused": False, "changed": control.resume(name)}

    @app.post("/api/pipelines/{name}/maintenance", response_model=WindowOut, status_code=201,
              tags=["pipelines"], dependencies=auth, responses=_errors(401, 404))
    def maintenance(name: _ID, body: MaintenanceIn) -> Any:
        """Add a maintenance window: healing actions are suppressed inside it."""
        return control.add_maintenance(name, starts_at=body.starts_at, ends_at=body.ends_at,
                                       reason=body.reason)

    @app.post("/api/pipelines/{name}/dead-letters/replay", response_model=ReplayOut,
              tags=["dead letters"], dependencies=auth, responses=_errors(401, 404, 409))
    def replay(name: _ID, body: ReplayIn | None = None) -> Any:
        """Replay the pipeline's dead letters (those ``ids``, or all); 409 while it runs."""
        ids = tuple(body.ids or ()) if body is not None else ()
        return control.replay(name, ids=ids).as_dict()

    @app.post("/api/breakers/reset", response_model=BreakerMoveOut, tags=["breakers"],
              dependencies=auth, responses=_errors(401, 404))
    def reset_breaker(body: BreakerIn) -> Any:
        """Force the dependency's breaker closed."""
        previous = control.reset_breaker(body.dependency)
        return {"dependency": body.dependency, "previous": previous, "state": "closed"}

    @app.post("/api/breakers/probe", response_model=BreakerMoveOut, tags=["breakers"],
              dependencies=auth, responses=_errors(401, 404))
    def probe_breaker(body: BreakerIn) -> Any:
        """Let the next call to the dependency through as a probe (open -> half_open)."""
        return {"dependency": body.dependency, "state": control.probe_breaker(body.dependency)}

    @app.post("/hooks/alertmanager", response_model=AlertsOut, tags=["alerts"],
              dependencies=auth, responses=_errors(401))
    def alertmanager(payload: AlertmanagerPayload) -> Any:
        """Alertmanager's webhook (payload version 4): each alert becomes a healing action."""
        return {"results": [r.as_dict() for r in alerts.handle(payload)]}

    app.include_router(dashboard.router)
    return app


# -- auth -----------------------------------------------------------------------------------------

#: Declares the bearer scheme in the OpenAPI schema; ``_Guarded`` enforces it.
_BEARER = HTTPBearer(auto_error=False, description="The API token (MENDFLOW_API_TOKEN).")


class _Guarded(APIRoute):
    """A route whose POSTs need the app's token, checked before the body is even read (so a
    request without a token is 401 whatever it carries)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method == "POST":
                check(request.app.state.token, request.headers.get("authorization"))
                if _NUL_JSON.search(await request.body()):  # read once, kept for the handler
                    return _error(422, _NUL_MESSAGE)
            return await handler(request)

        return guarded


_NUL_JSON = re.compile(rb"\\u0000|\x00", re.IGNORECASE)
_NUL_MESSAGE = ("invalid request: text must not contain NUL (\\u0000) characters; no name, "
                "id or reason holds one.")


class _NoNul:
    """Refuse (422) a URL whose path or query holds a NUL character: no pipeline, run or
    incident is named with one, and PostgreSQL cannot even compare such text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")
            or b"%00" in scope.get("raw_path", b"")
        ):
            await _error(422, _NUL_MESSAGE)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- errors ---------------------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": redact(message)}, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    """Mendflow's errors as JSON 4xx; anything else as a JSON 500 that names no secret."""

    @app.exception_handler(Unauthorized)
    def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(UnknownPipeline)
    def unknown(request: Request, exc: UnknownPipeline) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(LookupError)
    def not_found(request: Request, exc: LookupError) -> JSONResponse:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(PipelineBusy)
    def busy(request: Request, exc: PipelineBusy) -> JSONResponse:
        return _error(409, str(exc), {"Retry-After": "5"})

    @app.exception_handler(ConfigError)
    def config(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(MendflowError)
    def mendflow(request: Request, exc: MendflowError) -> JSONResponse:
        if exc.retryable:  # a dependency (the destination, the store) is busy or down
            return _error(503, str(exc), {"Retry-After": "5"})
        log.error("request %s %s failed: %s", request.method, request.url.path, redact(str(exc)))
        return _error(500, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        where = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5]
        )
        body = {"error": redact(f"invalid request: {where}"), "detail": details}
        return JSONResponse(jsonable_encoder(body), status_code=422)

    @app.exception_handler(Exception)
    def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in mendflow, "
                           "see the server log and report it.")

    @app.exception_handler(StarletteHTTPException)
    def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


# -- metrics ------------------------------------------------------------------------


def _metrics(registry: Any) -> Response:
    return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mendflow")
    except PackageNotFoundError:
        return "0"


__all__: Sequence[str] = ("create_app",)
