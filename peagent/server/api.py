"""The JSON API of ``peagent serve`` (``/api/v1``, docs/status.md): requests in, responses out.

:class:`Api` takes a parsed HTTP request (:class:`Request`: method, raw target, headers, body) and
returns a :class:`Response`; peagent.server.dp reads and writes the bytes, so everything here can be
tested without a socket, and the file-serving code stays about files. It does four jobs:

* **Ingest** (``POST /api/v1/events``, and the old ``POST /status``): a batch of events of one
  deployment, checked against the event schema (peagent.status.event) and stored atomically. The
  bearer token must be the deployment's: one this server handed out (it keeps only hashes), or,
  for a deployment it did not hand out, the ``status.token`` of a static task file under
  ``DIR/tasks/`` with that ``id`` (:class:`StaticTokens`).
* **Assign** (``GET /api/v1/task``, ``GET /boot.ipxe?...``, ``GET /api/v1/tasks/{id}``): decide by
  the rules (peagent.server.assign), record the deployment and a ``source: "server"`` event, and
  hand out the task with its ``id`` and ``status`` (URL and a fresh token) filled in, or the iPXE
  script (peagent.server.ipxe).
* **Read** (machines, deployments, timelines, errors): what the dashboard polls.
* **Administer** (approve, postpone, cancel a machine): with the admin bearer token only.

Every path segment is checked before use: ``..``, its encodings and NUL are refused (400), ids must
match their patterns, unknown paths are 404 and wrong methods 405, all as JSON ``{"error": ...}``,
with ``field`` naming the culprit when there is one. A bad request never reaches the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from peagent.server import ipxe
from peagent.server.assign import (
    MAX_MACS,
    Decision,
    Identity,
    IdentityError,
    decide,
    parse_identity,
)
from peagent.server.ondisk import ConfigSource, StaticTokens
from peagent.server.openapi import CURSOR_PATTERN, MAX_BATCH, STATUSES, document
from peagent.server.store import MAX_PAGE, StatusStore
from peagent.state.model import Secret
from peagent.status.event import DEPLOYMENT_ID, MACHINE_KEYS, EventError, validate_event

log = logging.getLogger("peagent.serve")

MAX_EVENTS_BODY = 4 << 20  # bytes of one POST of events
MAX_SMALL_BODY = 64 << 10  # any other request's body
DEFAULT_LIMIT = 50
MAX_POSTPONE = 366 * 86400
_KEY = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ASSET = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_CURSOR = re.compile(CURSOR_PATTERN[1:-1])
_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")
_JSON = "application/json"


@dataclass(frozen=True)
class Request:
    """One HTTP request: ``target`` is the raw request target (path and query, as sent); header names lower case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class ApiError(Exception):
    """A request the API refuses: its status, a message for people, the field at fault (if one is)."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def error_response(status: int, message: str, field: str | None = None,
                   headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The JSON error every refusal of the API looks like: ``{"error": ..., "field": ...}``."""
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return _json_response(status, body, headers)


def _json_response(status: int, obj: object, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), _JSON,
                    (("Cache-Control", "no-store"), *headers))


def read_task(root: Path, name: str) -> dict[str, Any] | None:
    """The task file ``name`` under ``root`` (a JSON object), None when there is no such file.

    Raises ApiError (500) when the file is there but not a task: that is the DP's configuration to fix.
    """
    path = root / name  # a symlink may lead out of DIR: the administrator's choice, as for the files served
    try:
        text = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the task file {name}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"the task file {name} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"the task file {name} is not a JSON object")
    return doc


def new_deployment_id(task: Mapping[str, Any], task_name: str) -> str:
    """The task's id (else its file's name) and a short random suffix, within the 64 characters of an event's."""
    base = task.get("id") if isinstance(task.get("id"), str) else Path(task_name).stem
    base = re.sub(r"[^A-Za-z0-9._:-]", "-", str(base)).lstrip("._:-")[:55] or "deployment"
    return f"{base}-{secrets.token_hex(4)}"


def upgrade_legacy(item: object) -> object:
    """An event in the shape posted to ``/status`` before schema 1, as a schema 1 event.

    The first-boot program of images deployed before (peagent.state.firstboot_linux) and older PEs
    post ``{"phase", "message", "deployment_id", "machine", "time", ...}`` with ``error_code``.
    The id is derived from the content, so a repost of the same report is recognised as a replay.
    Anything else is left for :func:`validate_event` to judge.
    """
    if not isinstance(item, dict) or "schema" in item:
        return item
    out = {k: v for k, v in item.items() if k not in ("error_code", "machine")}
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
    out["schema"] = 1
    out["id"] = f"legacy-{digest[:32]}"
    out["source"] = "firstboot" if item.get("phase") == "complete" else "pe"
    moment = item.get("time")
    out["seq"] = int(moment * 1000) if isinstance(moment, int | float) and 0 <= moment < 1e12 else 0
    machine = item.get("machine")
    if isinstance(machine, dict):
        out["machine"] = {k: v for k, v in machine.items() if k in MACHINE_KEYS}  # machine_id had no place
    elif "machine" in item:
        out["machine"] = machine
    code = item.get("error_code")
    if code is not None:
        out["error"] = {"code": code, "message": item.get("message")}
        out["level"] = "error"
    return out


def _parse_json(body: bytes, what: str) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{what}: the body is not JSON: {exc}", "body") from None
    except RecursionError:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{what}: the body nests too deeply", "body") from None


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        return None
    return token


def _unauthorized(message: str) -> ApiError:
    return ApiError(HTTPStatus.UNAUTHORIZED, message, headers=(("WWW-Authenticate", 'Bearer realm="peagent"'),))


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    if len(values) > 1:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} given {len(values)} times: give it once", name)
    return values[0] if values else None


Handler = Callable[[Request, Mapping[str, str], Mapping[str, list[str]]], Response]


class Api:
    """The API over a DP directory and a status store (see the module's docstring)."""

    def __init__(self, root: Path, store: StatusStore, *, config: ConfigSource | None = None,
                 admin_token: Secret | None = None, public_url: str | None = None, server_url: str = "",
                 status_log: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.store = store
        self.config = config or ConfigSource(None)
        self.admin_token = admin_token
        self.public_url = ipxe.check_url(public_url.rstrip("/")) if public_url else None
        self.server_url = server_url.rstrip("/")
        self.status_log = status_log
        self.clock = clock
        self.static_tokens = StaticTokens(root)
        self._assign_lock = threading.Lock()  # one decision at a time: two requests must not issue two deployments
        self._log_lock = threading.Lock()
        self._openapi = json.dumps(document(), separators=(",", ":")).encode()
        self._routes: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
            (("api", "v1", "openapi.json"), {"GET": self._get_openapi}),
            (("api", "v1", "events"), {"POST": self._post_events}),
            (("status",), {"POST": self._post_legacy}),
            (("api", "v1", "task"), {"GET": self._get_task}),
            (("api", "v1", "tasks", "{id}"), {"GET": self._get_handed_task}),
            (("boot.ipxe",), {"GET": self._get_boot_script}),
            (("api", "v1", "machines"), {"GET": self._get_machines}),
            (("api", "v1", "machines", "{key}"), {"GET": self._get_machine}),
            (("api", "v1", "machines", "{key}", "approve"), {"POST": self._approve}),
            (("api", "v1", "machines", "{key}", "postpone"), {"POST": self._postpone}),
            (("api", "v1", "machines", "{key}", "cancel"), {"POST": self._cancel}),
            (("api", "v1", "deployments"), {"GET": self._get_deployments}),
            (("api", "v1", "deployments", "{id}"), {"GET": self._get_deployment}),
            (("api", "v1", "deployments", "{id}", "events"), {"GET": self._get_timeline}),
            (("api", "v1", "errors"), {"GET": self._get_errors}),
            ((), {"GET": self._get_dashboard}),
            (("ui", "{asset}"), {"GET": self._get_dashboard}),
        ]

    # -- routing ---------------------------------------------------------------------------------

    def operations(self) -> set[tuple[str, str]]:
        """Every (path template, method) the API answers, e.g. ("/api/v1/deployments/{id}", "GET")."""
        return {("/" + "/".join(pattern), method) for pattern, methods in self._routes for method in methods}

    @staticmethod
    def handles(method: str, target: str) -> bool:
        """Whether a request is the API's (else it is about files). ``/boot.ipxe`` is, with a query."""
        parts = urlsplit(target)
        path = parts.path
        if path == "/":
            return method in ("GET", "HEAD")
        if path == "/boot.ipxe":
            return bool(parts.query) and method in ("GET", "HEAD")
        return path in ("/api", "/status") or path.startswith(("/api/", "/ui/"))

    @staticmethod
    def body_limit(method: str, target: str) -> int:
        """The largest body the request may carry."""
        path = urlsplit(target).path
        return MAX_EVENTS_BODY if method == "POST" and path in ("/api/v1/events", "/status") else MAX_SMALL_BODY

    def handle(self, request: Request) -> Response:
        """The response to ``request``; never raises for anything the client sent."""
        try:
            return self._route(request)
        except ApiError as exc:
            path = urlsplit(request.target).path
            if exc.status >= 500:
                log.error("%s %s: %s", request.method, path[:200], exc.message)
            if path == "/boot.ipxe":  # iPXE asked: it shows a script's echo, not JSON
                text = f"#!ipxe\necho peagent: the DP refused the request: {ipxe.say(exc.message)}\nexit 1\n"
                return Response(exc.status, text.encode(), "text/plain; charset=utf-8",
                                (("Cache-Control", "no-store"), *exc.headers))
            return error_response(exc.status, exc.message, exc.field, exc.headers)

    def _route(self, request: Request) -> Response:
        split = urlsplit(request.target)
        raw = split.path
        if "\0" in raw or "%00" in raw:
            raise ApiError(HTTPStatus.BAD_REQUEST, "path refused: it holds a NUL", "path")
        segments = [unquote(s) for s in raw.split("/")[1:]]
        if segments == [""]:
            segments = []
        if any(s in (".", "..") or "/" in s or "\\" in s for s in segments):
            raise ApiError(HTTPStatus.BAD_REQUEST, "path refused: no . or .. segments and no encoded slashes", "path")
        method = "GET" if request.method == "HEAD" else request.method
        for pattern, methods in self._routes:
            params = _match_path(pattern, segments)
            if params is None:
                continue
            handler = methods.get(method)
            if handler is None:
                allowed = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here: use {allowed}",
                               headers=(("Allow", allowed),))
            try:
                query = parse_qs(split.query, keep_blank_values=True, strict_parsing=False, max_num_fields=100)
            except ValueError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"malformed query: {exc}", "query") from None
            return handler(request, params, query)
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {raw[:200]} (see /api/v1/openapi.json)")

    # -- ingest ----------------------------------------------------------------------------------

    def _post_events(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        return self._ingest(request, legacy=False)

    def _post_legacy(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        return self._ingest(request, legacy=True)

    def _ingest(self, request: Request, legacy: bool) -> Response:
        token = _bearer(request.headers)
        if token is None:
            raise _unauthorized("events need Authorization: Bearer <the task's status.token>")
        doc = _parse_json(request.body, "events")
        if isinstance(doc, dict) and "events" in doc and "schema" not in doc:
            if set(doc) != {"events"}:
                extra = sorted(set(doc) - {"events"})[0]
                raise ApiError(HTTPStatus.BAD_REQUEST, f'a batch is {{"events": [...]}} only; found {extra!r} too',
                               extra)
            items, where = doc["events"], "events"
            if not isinstance(items, list) or not items:
                raise ApiError(HTTPStatus.BAD_REQUEST, "events: expected a list of 1 or more events", "events")
            if len(items) > MAX_BATCH:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"events: at most {MAX_BATCH} events per request, found {len(items)}", "events")
        elif isinstance(doc, dict):
            items, where = [doc], ""
        else:
            raise ApiError(HTTPStatus.BAD_REQUEST, 'expected an event (a JSON object) or {"events": [...]}', "body")
        if legacy:
            try:
                items = [upgrade_legacy(i) for i in items]
            except RecursionError:
                raise ApiError(HTTPStatus.BAD_REQUEST, "events: the body nests too deeply", "body") from None
        first = items[0].get("deployment_id") if isinstance(items[0], dict) else None
        if not isinstance(first, str) or not DEPLOYMENT_ID.fullmatch(first):
            field = f"{where}[0].deployment_id" if where else "deployment_id"
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{field}: expected a deployment id (1-64 of A-Z a-z 0-9 . _ : -)",
                           field)
        self._authorize(first, token)
        events = []
        for i, item in enumerate(items):
            prefix = f"{where}[{i}]" if where else ""
            try:
                event = validate_event(item)
            except RecursionError:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{prefix or 'event'}: nests too deeply", prefix or "event") \
                    from None
            except EventError as exc:
                field = exc.field if not prefix else (prefix if exc.field == "event" else f"{prefix}.{exc.field}")
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{field}: expected {exc.expected}, found {exc.found}",
                               field) from None
            name = f"{prefix}." if prefix else ""
            if event["deployment_id"] != first:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{name}deployment_id: one deployment per request "
                               f"({first}), found {event['deployment_id']}", f"{name}deployment_id")
            if event["source"] == "server":
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{name}source: expected pe or firstboot "
                               "(server events come from the server itself)", f"{name}source")
            events.append(event)
        accepted, duplicates = self.store.ingest(events, self.clock())
        self._mirror(events)
        return _json_response(HTTPStatus.OK, {"accepted": accepted, "duplicates": duplicates})

    def _authorize(self, deployment_id: str, token: str) -> None:
        issued = self.store.check_token(deployment_id, token)
        if issued or (issued is None and self.static_tokens.matches(deployment_id, token)):
            return
        raise _unauthorized(f"the token is not deployment {deployment_id}'s (its task's status.token)")

    def _mirror(self, events: list[dict[str, Any]]) -> None:
        """A JSON-lines copy of every event received, for --status-log (log shippers, grep)."""
        if self.status_log is None:
            return
        with self._log_lock, self.status_log.open("a") as out:
            out.writelines(json.dumps(e, sort_keys=True) + "\n" for e in events)

    # -- assign ----------------------------------------------------------------------------------

    def _identity(self, query: Mapping[str, list[str]]) -> tuple[Identity, str]:
        try:
            identity = parse_identity(query)
        except IdentityError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, str(exc), exc.field) from None
        key = identity.key
        if key is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the machine needs a mac or a uuid to be known by", "mac")
        return identity, key

    def _decide(self, identity: Identity, key: str, phase: str) -> tuple[Decision, str | None, dict[str, Any] | None]:
        """The decision for a machine that asks; for deploy, the deployment id and its task (recorded)."""
        now = self.clock()
        with self._assign_lock:
            self.store.see_machine(identity, now)
            decision = decide(self.config.current(), identity, self.store.machine_view(key), now)
            if decision.kind == "pending":
                self.store.mark_pending(key)
            if decision.kind == "lookup":
                decision = self._look_up(decision)
            if decision.kind != "deploy":
                return decision, None, None
            task = None
            deployment_id = decision.reuse
            if deployment_id is not None:
                found = self.store.task(deployment_id)
                task = found[0] if found else None
            if task is None:
                assert decision.task is not None and decision.rule is not None
                task = read_task(self.root, decision.task)
                if task is None:
                    log.warning("rule %s names %s, which is missing from %s", decision.rule, decision.task, self.root)
                    return Decision("none", f"the task file {decision.task} of rule {decision.rule} is missing "
                                    "from the DP"), None, None
                deployment_id = new_deployment_id(task, decision.task)
                task = {**task, "id": deployment_id}
                self.store.issue(deployment_id, machine=key, rule=decision.rule, task_name=decision.task, task=task,
                                 now=now)
        what = "boot script" if phase == "pxe" else "task"
        how = "continued" if decision.reuse else decision.task
        self.store.server_event(deployment_id, phase, f"{what} handed out: rule {decision.rule} ({how})",
                                machine=_identity_json(identity), now=now)
        return decision, deployment_id, task

    def _look_up(self, decision: Decision) -> Decision:
        """Without a configuration: deploy the first of the machine's task files there is, else "static"."""
        for name in decision.candidates:
            if (self.root / name).is_file():
                return replace(decision, kind="deploy", reason=f"task file {name}", task=name)
        return Decision("static", "no task file for this machine (looked for "
                        f"{', '.join(decision.candidates)})")

    def _with_status(self, request: Request, deployment_id: str, task: dict[str, Any]) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        self.store.add_token(deployment_id, token, self.clock())
        return {**task, "id": deployment_id, "status": {"url": f"{self._base(request)}/api/v1/events",
                                                        "token": token}}

    def _get_task(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        identity, key = self._identity(query)
        decision, deployment_id, task = self._decide(identity, key, "task")
        if decision.kind != "deploy":
            return _decision_response(decision, key)
        assert deployment_id is not None and task is not None
        return _json_response(HTTPStatus.OK, self._with_status(request, deployment_id, task))

    def _get_handed_task(self, request: Request, params: Mapping[str, str],
                         query: Mapping[str, list[str]]) -> Response:
        deployment_id = params["id"]
        found = self.store.task(deployment_id)
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"this server handed out no deployment {deployment_id}")
        task, status = found
        if status != "running":
            raise ApiError(HTTPStatus.NOT_FOUND, f"deployment {deployment_id} is {status}: its task is not handed "
                           "out any more")
        self.store.server_event(deployment_id, "task", "task handed out (by its deployment id)", now=self.clock())
        return _json_response(HTTPStatus.OK, self._with_status(request, deployment_id, task))

    def _get_boot_script(self, request: Request, params: Mapping[str, str],
                         query: Mapping[str, list[str]]) -> Response:
        identity, key = self._identity(query)
        decision, deployment_id, _task = self._decide(identity, key, "pxe")
        base = self._base(request)
        try:
            static = (self.root / "boot.ipxe").read_text()
        except (OSError, UnicodeDecodeError):
            static = None
        script = ipxe.render(
            decision, task_url=f"{base}/api/v1/tasks/{deployment_id}" if deployment_id else None,
            again_url=f"{base}/boot.ipxe?{urlencode(_identity_query(identity))}", static=static,
            deployment_id=deployment_id)
        return Response(HTTPStatus.OK, script.encode(), "text/plain; charset=utf-8", (("Cache-Control", "no-store"),))

    def _base(self, request: Request) -> str:
        """The URL machines reach this server at: --public-url, else the Host they used, else the bound address."""
        if self.public_url:
            return self.public_url
        host = request.headers.get("host", "").strip()
        return f"http://{host}" if _HOST.fullmatch(host) else self.server_url

    # -- read ------------------------------------------------------------------------------------

    def _get_openapi(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        return Response(HTTPStatus.OK, self._openapi, _JSON, (("Cache-Control", "no-cache"),))

    def _get_machines(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        now = self.clock()
        return _json_response(HTTPStatus.OK, {"machines": self.store.machines(now), "generated": now})

    def _get_machine(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        machine = self._known_machine(params["key"])
        return _json_response(HTTPStatus.OK, {"machine": machine,
                                              "deployments": self.store.deployments_of(params["key"])})

    def _known_machine(self, key: str) -> dict[str, Any]:
        machine = self.store.machine(key, self.clock())
        if machine is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no machine {key} has been seen")
        return machine

    def _get_deployments(self, request: Request, params: Mapping[str, str],
                         query: Mapping[str, list[str]]) -> Response:
        status = _single(query, "status")
        if status is not None and status not in STATUSES:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"status: expected one of {', '.join(STATUSES)}, found {status!r}",
                           "status")
        limit_text = _single(query, "limit")
        limit = DEFAULT_LIMIT
        if limit_text is not None:
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"limit: expected 1 to {MAX_PAGE}, found {limit_text[:40]!r}",
                               "limit")
            limit = int(limit_text)
        before_text = _single(query, "before")
        if before_text is not None and not _CURSOR.fullmatch(before_text):
            raise ApiError(HTTPStatus.BAD_REQUEST, "before: expected the next cursor of a previous page, "
                           f"found {before_text[:40]!r}", "before")
        page, cursor = self.store.deployments(status, limit, int(before_text) if before_text else None)
        return _json_response(HTTPStatus.OK, {"deployments": page, "next": None if cursor is None else str(cursor)})

    def _get_deployment(self, request: Request, params: Mapping[str, str],
                        query: Mapping[str, list[str]]) -> Response:
        summary = self.store.deployment(params["id"])
        if summary is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no deployment {params['id']}")
        return _json_response(HTTPStatus.OK, summary)

    def _get_timeline(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        found = self.store.timeline(params["id"])
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no deployment {params['id']}")
        summary, bodies = found
        # The events are joined as stored: a long timeline is not decoded and encoded again.
        body = b'{"deployment":' + json.dumps(summary, separators=(",", ":")).encode() + b',"events":[' + \
            ",".join(bodies).encode() + b"]}"
        return Response(HTTPStatus.OK, body, _JSON, (("Cache-Control", "no-store"),))

    def _get_errors(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        return _json_response(HTTPStatus.OK, self.store.errors())

    def _get_dashboard(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        try:
            from peagent.server import dashboard
        except ImportError:
            raise ApiError(HTTPStatus.NOT_FOUND, "this server has no dashboard") from None
        found = dashboard.asset(params.get("asset", ""))
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such dashboard file: {params.get('asset', '')}")
        body, content_type = found
        headers = tuple(getattr(dashboard, "HEADERS", {}).items())
        return Response(HTTPStatus.OK, body, content_type, headers)

    # -- administer ------------------------------------------------------------------------------

    def _admin(self, request: Request) -> None:
        if self.admin_token is None:
            raise ApiError(HTTPStatus.FORBIDDEN, "no admin token configured (start peagent serve with "
                           "--admin-token-file FILE to approve, postpone and cancel)")
        token = _bearer(request.headers)
        expected = hashlib.sha256(self.admin_token.reveal().encode()).digest()
        if token is None or not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), expected):
            raise _unauthorized("this needs Authorization: Bearer <the admin token>")

    def _approve(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        self._admin(request)
        if not self.store.set_hold(params["key"], "approved"):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no machine {params['key']} has been seen")
        log.info("machine %s approved", params["key"])
        return _json_response(HTTPStatus.OK, {"machine": self._known_machine(params["key"])})

    def _postpone(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        self._admin(request)
        now = self.clock()
        until = _postpone_until(_parse_json(request.body, "postpone"), now)
        if not self.store.set_hold(params["key"], "postponed", until):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no machine {params['key']} has been seen")
        log.info("machine %s postponed until %s", params["key"], time.strftime("%F %T", time.localtime(until)))
        return _json_response(HTTPStatus.OK, {"machine": self._known_machine(params["key"])})

    def _cancel(self, request: Request, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Response:
        self._admin(request)
        if not self.store.cancel(params["key"], self.clock()):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no machine {params['key']} has been seen")
        log.info("machine %s cancelled", params["key"])
        return _json_response(HTTPStatus.OK, {"machine": self._known_machine(params["key"])})


def _postpone_until(doc: object, now: float) -> float:
    """When a postponement ends, from ``{"seconds": n}`` or ``{"until": epoch}``."""
    if not isinstance(doc, dict) or len(doc) != 1 or not {"seconds", "until"} & set(doc):
        raise ApiError(HTTPStatus.BAD_REQUEST, 'postpone: expected {"seconds": n} or {"until": epoch}', "body")
    if "seconds" in doc:
        seconds = doc["seconds"]
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_POSTPONE:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"seconds: expected whole seconds from 1 to {MAX_POSTPONE}, "
                           f"found {json.dumps(seconds)[:40]}", "seconds")
        return now + seconds
    until = doc["until"]
    if not isinstance(until, int | float) or isinstance(until, bool) or not now < until <= now + MAX_POSTPONE:
        raise ApiError(HTTPStatus.BAD_REQUEST, "until: expected a time (seconds since the epoch) in the next year, "
                       f"found {json.dumps(until)[:40]}", "until")
    return float(until)


def _match_path(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """The path's parameters if ``segments`` fit ``pattern`` (ApiError for a malformed id or key), else None."""
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if not want.startswith("{"):
            if want != got:
                return None
            continue
        name = want[1:-1]
        if name == "key":
            got = got.lower()
            if not _KEY.fullmatch(got):
                raise ApiError(HTTPStatus.BAD_REQUEST, "key: expected a machine key (a lower-case UUID, or a MAC "
                               f"like 52:54:00:12:34:56), found {got[:80]!r}", "key")
        elif name == "id" and not DEPLOYMENT_ID.fullmatch(got):
            raise ApiError(HTTPStatus.BAD_REQUEST, "id: expected a deployment id (1-64 of A-Z a-z 0-9 . _ : -), "
                           f"found {got[:80]!r}", "id")
        elif name == "asset" and not _ASSET.fullmatch(got):
            raise ApiError(HTTPStatus.NOT_FOUND, "no such dashboard file")
        params[name] = got
    return params


def _identity_json(identity: Identity) -> dict[str, Any]:
    out: dict[str, Any] = {"macs": list(identity.macs)} if identity.macs else {}
    for name in ("uuid", "serial", "vendor", "model"):
        value = getattr(identity, name)
        if value is not None:
            out[name] = value
    return out


def _identity_query(identity: Identity) -> list[tuple[str, str]]:
    pairs = [("mac", mac) for mac in identity.macs[:MAX_MACS]]
    pairs += [(name, getattr(identity, name)) for name in ("uuid", "serial", "vendor", "model")
              if getattr(identity, name) is not None]
    return pairs


def _decision_response(decision: Decision, key: str) -> Response:
    body: dict[str, Any] = {"decision": decision.kind, "reason": decision.reason, "machine": key}
    headers: tuple[tuple[str, str], ...] = ()
    if decision.kind in ("pending", "postponed"):
        body["retry_after"] = decision.retry_after
        headers = (("Retry-After", str(decision.retry_after)),)
        status = HTTPStatus.CONFLICT
    elif decision.kind in ("none", "static"):
        body["decision"] = "none"  # static: nothing from the rules; the PE finds no task file either
        status = HTTPStatus.NOT_FOUND
    else:
        status = HTTPStatus.FORBIDDEN
    if decision.kind == "postponed":
        body["until"] = decision.until
    return _json_response(status, body, headers)
