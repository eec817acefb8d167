"""The service: ``mendflow serve`` (scheduler, API, webhook, dashboard) and ``mendflow worker``.

Imports of FastAPI, uvicorn, prometheus_client and structlog stay inside the modules that need
them (the ``server`` extra); this package's ``__init__`` only re-exports what needs none.
"""

from mendflow.server.catalog import Catalog, Entry

__all__ = ("Catalog", "Entry")
