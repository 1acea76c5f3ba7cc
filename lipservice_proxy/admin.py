"""The admin server (:8888): the status page at /, /metrics, /healthz, /readyz and the JSON API under
/api/v1 (the page's read-outs, readouts.py, at /api/v1/summary).

It reads: every answer comes from the `AdminSource` it is handed (the running service's views:
`views.ProxyViews`, `fleet.analyzer.AnalyzerViews`), plus the archived policies of `policy_history`;
the one thing it changes is a proposal's fate (the `ProposalDesk`, in `analysis.mode: propose`), by the
API or the status page's forms. With `admin.auth` set, everything but the probes needs the token.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .analysis.proposals import Proposal, ProposalBook, ProposalNotFound, ProposalNotOpen
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


class ProposalDesk(Protocol):
    """Where proposals are held and decided (the analysis loop: analysis/proposals.py)."""

    proposals: ProposalBook

    async def apply_proposal(self, proposal_id: str, by: str) -> Proposal: ...

    async def reject_proposal(self, proposal_id: str, by: str) -> Proposal: ...


PROPOSAL_FORM_PREFIX = "/proposals/"  # the status page's forms post to /proposals/{id}/apply|reject
_MAX_BY = 100


def same_origin(request: web.Request) -> bool:
    """Whether a browser's form post comes from this server's own page: its Origin (else its Referer)
    names the host it was sent to. A post without either, or from another origin, is refused, so
    another site cannot make a signed-in browser apply a proposal."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return _names_host(source, request)


def from_another_origin(request: web.Request) -> bool:
    """Whether an API call was made by a page of another origin: browsers send Origin with every
    cross-origin POST (a plain form can target the API too); the CLI and curl send none."""
    origin = request.headers.get("Origin")
    return origin is not None and not _names_host(origin, request)


def _names_host(url: str, request: web.Request) -> bool:
    host = request.headers.get("Host", "").lower()
    parsed = urlsplit(url)
    return bool(host) and parsed.scheme in ("http", "https") and parsed.netloc.lower() == host


def _who(name: object, channel: str) -> str:
    """Who decided, as recorded: a name the caller gives (printable, bounded) and the channel."""
    text = "".join(ch for ch in str(name or "") if ch.isprintable()).strip()[:_MAX_BY]
    return f"{text or 'admin'} ({channel})"


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
        proposals: ProposalDesk | None = None,
    ) -> None:
        self._config = config
        self._source = source
        self._auth = auth
        self._desk = proposals
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
        app.router.add_get("/api/v1/proposals", self._proposals)
        app.router.add_get("/api/v1/proposals/{id}", self._proposal)
        app.router.add_post("/api/v1/proposals/{id}/{action:apply|reject}", self._decide_api)
        app.router.add_post(PROPOSAL_FORM_PREFIX + "{id}/{action:apply|reject}", self._decide_form)
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
        guarded = self._auth is not None and request.path not in ("/healthz", "/readyz")
        if guarded and not await self._authorised(request):
            refusal = json_response({"error": "missing or invalid bearer token"}, status=401)
            refusal.headers["WWW-Authenticate"] = 'Bearer realm="lipservice-proxy admin"'
            return refusal
        response: web.StreamResponse = await handler(request)
        return response

    async def _authorised(self, request: web.Request) -> bool:
        assert self._auth is not None
        if self._auth.accepts(request.headers.get("Authorization")):
            return True
        # a browser's form cannot set a header: the status page's forms carry the token as a field
        if request.method == "POST" and request.path.startswith(PROPOSAL_FORM_PREFIX):
            token = (await request.post()).get("token")
            return isinstance(token, str) and bool(token) and self._auth.accepts(f"Bearer {token}")
        return False

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

    # ---- proposals ----

    def _no_desk(self) -> web.Response:
        return json_response(
            {"error": "no proposals here: the analysis loop is off, or runs in the fleet's analyzer"},
            status=404,
        )

    async def _proposals(self, request: web.Request) -> web.Response:
        if self._desk is None:
            return self._no_desk()
        status = request.query.get("status")
        proposals = [p.as_dict() for p in self._desk.proposals.all() if status in (None, p.status)]
        return json_response({"proposals": proposals})

    async def _proposal(self, request: web.Request) -> web.Response:
        if self._desk is None:
            return self._no_desk()
        try:
            return json_response(self._desk.proposals.get(request.match_info["id"]).as_dict())
        except ProposalNotFound as exc:
            return json_response({"error": str(exc)}, status=404)

    async def _decide(self, proposal_id: str, action: str, by: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of applying or rejecting a proposal."""
        assert self._desk is not None
        try:
            if action == "apply":
                proposal = await self._desk.apply_proposal(proposal_id, by)
            else:
                proposal = await self._desk.reject_proposal(proposal_id, by)
        except ProposalNotFound as exc:
            return 404, {"error": str(exc), "retryable": False}
        except ProposalNotOpen as exc:
            return 409, {"error": str(exc), "retryable": False}
        except OSError as exc:
            message = f"cannot write the policy: {exc.strerror or exc}; the proposal stays open"
            log.error("proposal %s: %s", proposal_id, message)
            return 503, {"error": message, "retryable": True}
        return 200, {"proposal": proposal.as_dict()}

    async def _decide_api(self, request: web.Request) -> web.Response:
        if from_another_origin(request):
            return json_response(
                {"error": "refused: a page of another origin", "retryable": False}, status=403
            )
        if self._desk is None:
            return self._no_desk()
        by: object = None
        if request.can_read_body:
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return json_response({"error": 'the body must be JSON, such as {"by": "alice"}'}, status=400)
            by = body.get("by") if isinstance(body, dict) else None
        status, answer = await self._decide(
            request.match_info["id"], request.match_info["action"], _who(by, "API")
        )
        return json_response(answer, status=status)

    async def _decide_form(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return web.Response(status=403, text="refused: the form was not posted from this status page")
        if self._desk is None:
            return web.Response(status=404, text="no proposals here")
        status, answer = await self._decide(
            request.match_info["id"], request.match_info["action"], _who(None, "status page")
        )
        if status != 200:
            return web.Response(status=status, text=str(answer["error"]))
        raise web.HTTPSeeOther("/")

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
            proposals=[p.as_dict() for p in self._desk.proposals.open()] if self._desk else [],
            token_field=self._auth is not None,
        )
        response = web.Response(text=page, content_type="text/html", charset="utf-8")
        # the page shows log templates: no script may run, no other origin may frame it, and its
        # forms post only back to this server
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        return response
