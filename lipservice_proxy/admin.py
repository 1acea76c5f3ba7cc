"""The admin server (:8888): the status page at /, /metrics, /healthz, /readyz and the JSON API under
/api/v1 (the page's read-outs, readouts.py, at /api/v1/summary).

It only reads: every answer comes from the `AdminSource` it is handed (the running service's views:
`views.ProxyViews`, `fleet.analyzer.AnalyzerViews`), plus the archived policies of `policy_history`.
With `admin.auth` set, everything but the probes needs the token.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import BearerAuthenticator
from .config import AdminConfig, host_port
from .listen import listen_error
from .readouts import summary_view
from .status_page import render_status_page
from .timeline import Timeline

log = logging.getLogger(__name__)


STATUS_PAGE_PATTERNS = 50
HISTORY_SUMMARY_KEYS = ("version", "generated_by", "generated_at", "reasoning")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AdminSource(Protocol):
    """The views the admin reads, one member per view."""

    @property
    def ready(self) -> bool: ...

    @property
    def timeline(self) -> Timeline: ...

    def metrics_text(self) -> bytes: ...

    def policy_view(self) -> dict[str, Any]: ...

    def patterns_view(self, limit: int) -> dict[str, Any]: ...

    def anomalies_view(self) -> list[dict[str, Any]]:
        """The anomalies of the last hour with their boosts, newest first."""
        ...


def policy_summary(path: Path) -> dict[str, Any]:
    """The top-level scalars of HISTORY_SUMMARY_KEYS in a policy file, read from the YAML event stream
    (no document is built, so a file of thousands of rules costs little)."""
    found: dict[str, Any] = {"file": path.name}
    depth, key = 0, None
    try:
        with path.open("rb") as handle:
            for event in yaml.parse(handle, Loader=_YAML_LOADER):
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                elif isinstance(event, yaml.CollectionEndEvent | yaml.AliasEvent):
                    depth -= isinstance(event, yaml.CollectionEndEvent)
                    key = None  # a value that is not a scalar
                elif isinstance(event, yaml.ScalarEvent) and depth == 1:
                    if key is None:
                        key = event.value
                        continue
                    if key in HISTORY_SUMMARY_KEYS:
                        value: Any = event.value
                        found[key] = int(value) if key == "version" and value.isdigit() else value
                        if len(found) > len(HISTORY_SUMMARY_KEYS):
                            break
                    key = None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        found["error"] = f"unreadable: {type(exc).__name__}"
    return found


def policy_history(directory: Path, limit: int = 50) -> list[dict[str, Any]]:
    """Summaries of the archived policies in `directory` (the analysis writer's history/), newest first."""
    try:
        files = [path for path in directory.iterdir() if path.suffix in (".yaml", ".yml")]
    except OSError:
        return []
    summaries = [policy_summary(path) for path in files]
    summaries.sort(
        key=lambda s: (s.get("version") if isinstance(s.get("version"), int) else -1, s["file"]), reverse=True
    )
    return summaries[:limit]


def status_page_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the status page (a wildcard address serves loopback too)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class AdminServer:
    def __init__(
        self,
        config: AdminConfig,
        source: AdminSource,
        *,
        auth: BearerAuthenticator | None = None,
        extra_routes: list[web.RouteDef] | None = None,
    ) -> None:
        self._config = config
        self._source = source
        self._auth = auth
        self._extra_routes = extra_routes or []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        app = web.Application(middlewares=[self._auth_middleware])
        app.router.add_get("/", self._status_page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/api/v1/policy", self._policy)
        app.router.add_get("/api/v1/patterns", self._patterns)
        app.router.add_get("/api/v1/summary", self._summary)
        app.router.add_routes(self._extra_routes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = host_port(self._config.endpoint)
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise listen_error("admin.endpoint", self._config.endpoint, exc) from None
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # asyncio's or uvloop's Server: both have sockets
        url = status_page_url(host, self.port)
        log.info(
            "status page at %s (admin API and /metrics on the same port)", url, extra={"status_page": url}
        )
        return self.port

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Probes stay open so the kubelet needs no token; everything that shows data is guarded.
        auth = self._auth
        guarded = request.path not in ("/healthz", "/readyz")
        if auth is not None and guarded and not auth.accepts(request.headers.get("Authorization")):
            refusal = json_response({"error": "missing or invalid bearer token"}, status=401)
            refusal.headers["WWW-Authenticate"] = 'Bearer realm="lipservice-proxy admin"'
            return refusal
        response: web.StreamResponse = await handler(request)
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._source.metrics_text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._source.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "not ready"}, status=503)

    async def _policy(self, request: web.Request) -> web.Response:
        return json_response(self._source.policy_view())

    async def _patterns(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 10_000))
        except ValueError:
            return json_response({"error": "limit must be an integer"}, status=400)
        return json_response(self._source.patterns_view(limit))

    async def _summary(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("patterns", str(STATUS_PAGE_PATTERNS))), 1000))
        except ValueError:
            return json_response({"error": "patterns must be an integer"}, status=400)
        return json_response(self._summary_view(time.time(), pattern_limit=limit))

    def _summary_view(
        self,
        now: float,
        *,
        pattern_keys: list[tuple[str, str]] | None = None,
        pattern_limit: int = STATUS_PAGE_PATTERNS,
    ) -> dict[str, Any]:
        return summary_view(
            self._source.timeline,
            now,
            price_per_gib=self._config.price_per_gib,
            anomalies=self._source.anomalies_view(),
            pattern_keys=pattern_keys,
            pattern_limit=pattern_limit,
        )

    async def _status_page(self, request: web.Request) -> web.Response:
        timeline = self._source.timeline
        now = time.time()
        policy_view = self._source.policy_view()
        patterns_view = self._source.patterns_view(STATUS_PAGE_PATTERNS)
        rows = [(p.get("service", ""), p.get("id", "")) for p in patterns_view.get("patterns", [])]
        page = render_status_page(
            ready=self._source.ready,
            policy_view=policy_view,
            patterns_view=patterns_view,
            points=timeline.points(now),
            totals=timeline.totals(now),
            step=timeline.step,
            now=now,
            summary=self._summary_view(now, pattern_keys=rows),
        )
        response = web.Response(text=page, content_type="text/html", charset="utf-8")
        # the page shows log templates: no script may run, no other origin may frame it
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        response.headers["X-Frame-Options"] = "DENY"
        return response
