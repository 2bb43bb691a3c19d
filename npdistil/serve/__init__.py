"""``npdistil serve``: an embedding server that OpenAI and text-embeddings-inference clients
call unchanged (``pip install "npdistil[serve]"``: Starlette on uvicorn).

The layout, each module importing only those above it in this list:

- ``settings.py``: what a server is started with (limits, key, address)
- ``metrics.py``: the counters, gauges and histograms of ``GET /metrics``
- ``protocol.py``: request bodies checked field by field; OpenAI's and TEI's answer shapes
- ``openapi.py``: the ``GET /openapi.json`` document
- ``pipeline.py``: requests -> token sequences (jobs) -> one packed forward pass -> answers
- ``batching.py``: the token-budget queue and its one model worker
- ``app.py``: the routes, admission (key, concurrency, draining) and errors
- ``server.py``: uvicorn, the startup line, the drain on SIGTERM/SIGINT

``import npdistil`` never imports this package: Starlette and uvicorn are loaded only here.
"""

from ..api import Model
from .app import Service, create_app
from .settings import Settings

__all__ = ["Settings", "Service", "create_app", "serve"]


def serve(model: Model, settings: Settings | None = None) -> int:
    """Serve ``model`` with uvicorn until SIGTERM or SIGINT has drained it; returns the exit
    status (0: every accepted request answered; 1: the drain ran out of time)."""
    from .server import serve as run

    return run(model, settings or Settings())
