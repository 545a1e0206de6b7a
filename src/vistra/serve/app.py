"""The HTTP side of ``vistra serve``: LitServe's server with vistra's page, ``/info``,
``/health``, the API key and one-line JSON errors.

LitServe's own ``/``, ``/health`` and ``/info`` are replaced: the page takes ``/``, ``/info``
describes the model, and ``/health`` reports the model workers, including one that died and
is being replaced (LitServe's monitor starts a new worker in its place).
"""

from __future__ import annotations

import hmac
import json
import multiprocessing
import sys
from importlib import resources
from urllib.parse import parse_qs

import litserve
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from vistra.serve.api import VistraAPI

READY, FAILED = "ready", "error"  # LitServe's WorkerSetupStatus values
# LitServe's own endpoints, moved out of the way and then removed.
LITSERVE_HEALTH, LITSERVE_INFO = "/litserve-health", "/litserve-info"


class VistraServer(litserve.LitServer):
    """LitServe's server, counting the workers it had to start again and saying when it is
    ready."""

    def __init__(self, api: VistraAPI, address: str, **kwargs) -> None:
        super().__init__(api, healthcheck_path=LITSERVE_HEALTH, info_path=LITSERVE_INFO,
                         disable_openapi_url=True, restart_workers=True, **kwargs)  # fmt: skip
        self.address = address
        # Shared with the HTTP processes, which LitServe forks from this one.
        self.restarts = multiprocessing.get_context("fork").Value("i", 0)

    def verify_worker_status(self) -> None:
        super().verify_worker_status()
        print(f"vistra serve: ready on {self.address} (POST /predict, the page at /)",
              file=sys.stderr, flush=True)  # fmt: skip

    def launch_single_inference_worker(self, lit_api, worker_id: int):
        with self.restarts.get_lock():
            self.restarts.value += 1
        print(f"vistra serve: model worker {worker_id} died; starting a new one",
              file=sys.stderr, flush=True)  # fmt: skip
        return super().launch_single_inference_worker(lit_api, worker_id)


def build_server(api: VistraAPI, info: dict, options, key: str | None) -> VistraServer:
    """The server for ``api`` with ``info`` at ``/info``; ``options``: the parsed command line
    (device, devices, workers per device, timeout, body limit); ``key``: required on every
    request but ``/health`` when given."""
    address = f"http://{options.host}:{options.port}/"
    server = VistraServer(api, address, accelerator=options.device.split(":")[0],
                          devices=options.devices, workers_per_device=options.workers_per_device,
                          timeout=options.timeout)  # fmt: skip
    app = server.app
    app.state.max_body_bytes = int(options.max_body_mb * 2**20)
    replaced = {"/", LITSERVE_HEALTH, LITSERVE_INFO}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") not in replaced]
    app.add_exception_handler(HTTPException, _error)
    page = resources.files("vistra.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/info")
    async def describe() -> JSONResponse:
        return JSONResponse(info)

    @app.get("/health")
    async def health() -> JSONResponse:
        return _health(dict(server.workers_setup_status), server.restarts.value)

    if key:
        app.add_middleware(KeyCheck, key=key)
    return server


async def _error(request: Request, error: HTTPException) -> JSONResponse:
    """Every refusal as ``{"error": "<one line>"}`` with its status."""
    text = " ".join(str(error.detail).split())
    return JSONResponse({"error": text}, status_code=error.status_code, headers=error.headers)


def _health(statuses: dict, restarts: int) -> JSONResponse:
    """200 when every model worker is ready; 503 while one starts (again) or when one could
    not start, saying which."""
    body = {"workers": len(statuses), "ready": sum(v == READY for v in statuses.values()),
            "restarts": restarts}  # fmt: skip
    if statuses and body["ready"] == len(statuses):
        return JSONResponse({"status": "ok", **body})
    if any(v == FAILED for v in statuses.values()):
        return JSONResponse({"status": "failed", **body, "error": "a model worker could not "
                             "load the model; see the server's log"}, status_code=503)  # fmt: skip
    state = "restarting" if restarts else "starting"
    message = "a model worker died and a new one is loading the model" if restarts else (
        "the model workers are loading the model")  # fmt: skip
    return JSONResponse({"status": state, **body, "error": message}, status_code=503)


class KeyCheck:
    """Refuses (401) every request but ``/health`` without the key, given as the header
    ``X-API-Key`` or ``Authorization: Bearer KEY`` (the page: ``/?key=KEY``, which the page
    then sends as the header)."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"")
        bearer = headers.get(b"authorization", b"")
        if not given and bearer.lower().startswith(b"bearer "):
            given = bearer[7:].strip()
        if not given and scope["path"] == "/":
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[0]
            given = given.encode()
        if hmac.compare_digest(given, self.key):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "this server needs its API key: send the header "
                           "X-API-Key (or Authorization: Bearer KEY)"}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
