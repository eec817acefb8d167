"""Built-in sources: files on disk and HTTP JSON APIs."""

from mendflow.sources.files import FileSource
from mendflow.sources.http import HttpSource, Pagination

__all__ = ["FileSource", "HttpSource", "Pagination"]
