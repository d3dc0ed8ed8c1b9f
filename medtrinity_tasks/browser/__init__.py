"""The dataset browser: pages over the output store, served inside the Airflow UI by the plugin in
``plugins/medtrinity_browser.py``."""

from __future__ import annotations

import importlib


class LazyApp:
    """An ASGI app built by ``factory`` ("module:function") at its first request. Airflow imports
    every plugin in every component, task processes included; building the app there would import
    the API server's security module, pyarrow and PIL for nothing."""

    def __init__(self, factory: str):
        self.factory = factory
        self.app = None

    async def __call__(self, scope, receive, send):
        if self.app is None:
            module, function = self.factory.split(":")
            self.app = getattr(importlib.import_module(module), function)()
        await self.app(scope, receive, send)
