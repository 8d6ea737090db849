"""``/docs``: Swagger UI for the OpenAPI document, served from this process, never from a CDN.

FastAPI's own docs page loads Swagger UI from jsDelivr and starts it with an inline script:
blank on a machine without internet, and refused by the page's Content-Security-Policy. Here
the assets come from the ``fastapi-offline`` wheel (Swagger UI 5, which reads the OpenAPI 3.1
that FastAPI writes; only its files are used) and the start-up script is a static file
(``static/docs.js``), so the docs render offline under the same CSP as the page.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
START_PATH = "/docs/start.js"
START_FILE = Path(__file__).resolve().parent / "static" / "docs.js"
SWAGGER_UI_FILES = Path(fastapi_offline.__file__).resolve().parent / "static"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} · API docs</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{start}"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` (the app must be made with ``docs_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(SWAGGER_UI_FILES)), name="swagger-ui")
    page = _PAGE.format(title=app.title, assets=ASSETS_PATH, start=START_PATH,
                        openapi=app.openapi_url or "/openapi.json")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(START_PATH, include_in_schema=False)
    async def start() -> FileResponse:
        # Also without the web page (create_app(web=False)), which serves the rest of static/.
        return FileResponse(START_FILE, media_type="text/javascript")
