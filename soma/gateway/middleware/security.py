"""Headers on every answer, and the policies of the pages: the docs and the web console."""

from __future__ import annotations

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # JSON answers never need to load or frame anything.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
"""Raw ASGI headers appended to every response of the app and of the HTTP server itself."""

CDN = "https://cdn.jsdelivr.net"

DOCS_CSP = (
    "default-src 'none'; "
    # Swagger UI from one CDN origin, pinned by version and Subresource Integrity; the page's
    # own init script is served from here, so no inline script is allowed.
    f"script-src 'self' {CDN}; "
    f"style-src {CDN}; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode()


def headers_for_docs() -> tuple[tuple[bytes, bytes], ...]:
    """The security headers with the docs page's CSP instead of the API's."""
    kept = tuple(h for h in SECURITY_HEADERS if h[0] != b"content-security-policy")
    return (*kept, (b"content-security-policy", DOCS_CSP))


CONSOLE_CSP = (
    b"default-src 'self'; "
    # Modules and styles from this origin only: no inline script or style, no eval, nothing
    # third-party; API calls to this origin only.
    b"script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"font-src 'none'; object-src 'none'; media-src 'none'; frame-src 'none'; worker-src 'none'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    # The console builds DOM nodes and never parses HTML strings: the browser enforces it.
    b"require-trusted-types-for 'script'; trusted-types 'none'"
)


def headers_for_console() -> tuple[tuple[bytes, bytes], ...]:
    """The security headers with the console's CSP instead of the API's."""
    kept = tuple(h for h in SECURITY_HEADERS if h[0] != b"content-security-policy")
    return (*kept, (b"content-security-policy", CONSOLE_CSP))
