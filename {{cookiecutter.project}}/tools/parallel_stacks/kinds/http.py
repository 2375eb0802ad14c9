"""Kind `http`: a web service (the API, the UI). Its URL; nothing to isolate per worker."""

from __future__ import annotations

from .base import Kind

__all__ = ["KIND"]


class Http(Kind):
    name = "http"


KIND = Http()
