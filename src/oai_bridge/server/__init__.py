"""The HTTP layer (Starlette): thin handlers over the router and backends."""

from .app import create_app

__all__ = ["create_app"]
