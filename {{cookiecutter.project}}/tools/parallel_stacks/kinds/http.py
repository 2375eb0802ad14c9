"""Kind `http`: a web service (the API, the UI). Its URL, and a named URL
(`http://<service>.<copy>.localhost:<NAMED_URLS_PORT>`) through the machine's proxy;
nothing to isolate per worker."""

from __future__ import annotations

from .base import Kind

__all__ = ["KIND"]


class Http(Kind):
    name = "http"
    routed = True


KIND = Http()
