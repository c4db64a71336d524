"""Public model name → backend, and the merged model list for ``/v1/models``.

Model names pass through to the upstream unchanged. A name a backend lists goes to that backend;
any other name goes to the default backend (the gateway decides whether it serves it).
"""

from __future__ import annotations

from .backends.base import Backend
from .types import Model

__all__ = ["Router"]


class Router:
    def __init__(self, backends: list[Backend]) -> None:
        if not backends:
            raise ValueError("a router needs at least one backend")
        self.backends = backends
        self.default = backends[0]
        self._owner: dict[str, Backend] = {}

    def route(self, model: str) -> Backend:
        return self._owner.get(model, self.default)

    async def models(self) -> list[Model]:
        merged: dict[str, Model] = {}
        for backend in self.backends:
            for model in await backend.models():
                if model["id"] not in merged:
                    merged[model["id"]] = model
                    self._owner[model["id"]] = backend
        return list(merged.values())

    async def model(self, model_id: str) -> Model | None:
        for model in await self.models():
            if model["id"] == model_id:
                return model
        return None

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
