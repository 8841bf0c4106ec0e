"""`/docs`: Swagger UI over `/openapi.json`, pinned and integrity-checked, under a strict CSP.

Swagger UI comes from the jsDelivr CDN (as FastAPI's default page does) rather than being
vendored: the bundle is 1.5 MB and the Python packages that ship it are years behind. The
risks of a CDN are closed instead: the exact version is pinned and each file carries its
Subresource Integrity hash (of the npm package jsDelivr mirrors byte for byte), so a changed
file is refused; the page's CSP allows scripts and styles from that one origin and this one
only, no inline script, and network requests to this origin only. Air-gapped or strict
deployments turn the page off with `http.docs = false`.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from soma.gateway.middleware.security import CDN

DOCS_URL = "/docs"
INIT_URL = "/docs/init.js"
SWAGGER_UI = "5.35.0"
_BASE = f"{CDN}/npm/swagger-ui-dist@{SWAGGER_UI}"
_JS = (
    f"{_BASE}/swagger-ui-bundle.js",
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
)
_CSS = (
    f"{_BASE}/swagger-ui.css",
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
)


def docs_page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API</title>
<link rel="stylesheet" href="{_CSS[0]}" integrity="{_CSS[1]}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{_JS[0]}" integrity="{_JS[1]}" crossorigin="anonymous"></script>
<script src="{INIT_URL}"></script>
</body>
</html>
"""


def init_script(openapi_url: str) -> str:
    options = {"url": openapi_url, "dom_id": "#swagger-ui", "deepLinking": True}
    return (
        f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(options)}, {{\n"
        # No standalone preset: its top bar (unused by BaseLayout) carries an inline style.
        "  presets: [SwaggerUIBundle.presets.apis],\n"
        '  layout: "BaseLayout"\n'
        "}));\n"
    )


def docs_router(title: str, openapi_url: str) -> APIRouter:
    """The docs page and its init script (not part of the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    page = docs_page(title).encode()
    script = init_script(openapi_url).encode()

    @router.get(DOCS_URL)
    async def docs() -> Response:
        return HTMLResponse(page)

    @router.get(INIT_URL)
    async def docs_init() -> Response:
        return Response(script, media_type="text/javascript")

    return router
