"""Pure ASGI middleware of the HTTP edge: body limit, error boundary, security headers."""

from soma.gateway.middleware.edge import EdgeMiddleware
from soma.gateway.middleware.security import DOCS_CSP, SECURITY_HEADERS

__all__ = ["DOCS_CSP", "SECURITY_HEADERS", "EdgeMiddleware"]
