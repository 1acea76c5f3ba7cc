"""`lipservice-proxy proposals list|show|apply|reject`: the analysis loop's proposals on a running proxy.

A client of the admin API (`/api/v1/proposals`), so it works against any proxy or fleet analyzer the
operator can reach, with the admin token when `admin.auth` is set (read from an environment variable
or a file, never from the command line, where `ps` would show it). Exit codes: 0 done, 1 the proxy
refused (unknown or closed proposal, no token) or could not be reached, 2 invalid usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .auth import BearerAuthenticator
from .config import BearerAuth
from .errors import AdminRequestFailed, ConfigError
from .status_page import percent

DEFAULT_ADMIN = "http://127.0.0.1:8888"
TIMEOUT = 30.0  # an apply writes a policy of up to thousands of rules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "show", "apply", "reject"))
    parser.add_argument("id", nargs="?", help="the proposal's id (show, apply, reject)")
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="URL",
        help=f"the proxy's admin URL (default {DEFAULT_ADMIN})",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-env", metavar="VAR", help="environment variable holding the admin token")
    token.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the admin token")
    parser.add_argument("--by", help="who decides, recorded with the decision (default: the login name)")
    parser.add_argument("--all", action="store_true", help="list: decided proposals too, not only open ones")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="list: output format")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.id:
        raise ConfigError(f"proposals {args.action} needs the proposal's id")
    # the token is read as the admin server reads its own (auth.py): from the variable or the file
    auth = BearerAuthenticator.from_config(
        BearerAuth(bearer_token_env=args.token_env, bearer_token_file=args.token_file)
    )
    client = AdminClient(args.admin, auth.header if auth else None)
    if args.action == "list":
        proposals = client.call("GET", "/api/v1/proposals" + ("" if args.all else "?status=open"))[
            "proposals"
        ]
        if args.format == "json":
            sys.stdout.write(
                orjson.dumps({"proposals": proposals}, option=orjson.OPT_INDENT_2).decode() + "\n"
            )
        else:
            sys.stdout.write(format_table(proposals))
    elif args.action == "show":
        proposal = client.call("GET", f"/api/v1/proposals/{args.id}")
        sys.stdout.write(orjson.dumps(proposal, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        by = args.by or _login()
        decided = client.call("POST", f"/api/v1/proposals/{args.id}/{args.action}", {"by": by})["proposal"]
        written = f": policy version {decided['policy_version']} written" if args.action == "apply" else ""
        print(f"{decided['id']} {decided['status']} by {decided['decided_by']}{written}")
    return 0


def format_table(proposals: list[dict[str, Any]]) -> str:
    if not proposals:
        return "no proposals\n"
    rows = [("ID", "STATUS", "CREATED", "BY", "KEEP NOW", "KEEP PROPOSED", "BYTES SAVED", "CHANGES")]
    for p in proposals:
        projected, in_force = p.get("projected", {}), p.get("in_force", {})
        rows.append(
            (
                p["id"],
                p["status"],
                p["created_at"],
                p["generated_by"],
                percent(in_force.get("keep_ratio")),
                percent(projected.get("keep_ratio")),
                percent(projected.get("bytes_saved_ratio")),
                str(len(p.get("changes", []))),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli"


class AdminClient:
    def __init__(self, base_url: str, authorization: str | None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if authorization:
            self._headers["Authorization"] = authorization

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self._base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AdminRequestFailed(f"{method} {path}: HTTP {error.code}: {_error_text(error)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminRequestFailed(f"cannot reach the admin API at {self._base}: {reason}") from None
        except orjson.JSONDecodeError:
            raise AdminRequestFailed(f"{method} {path}: the answer is not JSON") from None


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        answer = orjson.loads(error.read())
    except (orjson.JSONDecodeError, OSError):
        return error.reason or "no detail"
    return str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)
