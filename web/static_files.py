"""Static files cached for good by the browser, fetched again only when they change.

Every URL for a static file carries ``?v=<version>``, a digest of the file's size and modification
time (``url_defaults``, so ``url_for('static', ...)`` in every template gets it). A request that
names the file's current version is answered with ``Cache-Control: public, max-age=<a year>,
immutable``: a page the user opens again loads its scripts and stylesheet from the browser's cache
without even a revalidation round trip (three of them on every page before). A new release, or an
edited file, has a new version, so the browser fetches it. A request without ``v``, or with an old
one, is revalidated as before.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from flask import Flask, Response, request

YEAR = 365 * 24 * 3600


def static_version(app: Flask, filename: str) -> str | None:
    folder = app.static_folder
    if folder is None:
        return None
    try:
        st = os.stat(os.path.join(folder, filename))
    except (OSError, ValueError):
        return None
    return hashlib.sha256(f"{filename}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def init_app(app: Flask) -> None:
    @app.url_defaults
    def _add_version(endpoint: str, values: dict[str, Any]) -> None:
        if endpoint == "static" and "filename" in values and "v" not in values:
            version = static_version(app, values["filename"])
            if version:
                values["v"] = version

    @app.after_request
    def _cache_for_good(response: Response) -> Response:
        if request.endpoint != "static" or response.status_code != 200:
            return response
        filename = (request.view_args or {}).get("filename")
        wanted = request.args.get("v")
        if wanted and filename and wanted == static_version(app, filename):
            response.cache_control.no_cache = None
            response.cache_control.public = True
            response.cache_control.max_age = YEAR
            response.cache_control.immutable = True
        return response
