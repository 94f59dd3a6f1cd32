"""The OpenAPI 3.0 description of ``peagent serve``'s API, served at ``/api/v1/openapi.json``.

It is the contract the dashboard and any other client program against, and the tests check the
server against it (schemathesis: every documented status code, content type and response shape).
So it describes what the server really answers, errors included: each operation lists every
status it can return, and every JSON body has a schema closed with ``additionalProperties: false``,
so a field added to a response without being described here fails the tests.

OpenAPI 3.0 has no ``"type": "null"``: a field that may be null says ``nullable: true``, and a
nullable reference wraps the ``$ref`` in ``allOf`` (a ``$ref``'s siblings are ignored).
"""

from __future__ import annotations

from typing import Any

from peagent import __version__
from peagent.server.assign import STATES
from peagent.status.event import LEVELS, MAX_MESSAGE, MAX_STEP, MAX_WARNINGS, SOURCES

ID_PATTERN = "^[A-Za-z0-9._:-]{1,64}$"
EVENT_ID_PATTERN = "^[A-Za-z0-9._:-]{8,80}$"
EVENT_MAC_PATTERN = "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
MAC_PATTERN = "^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$"
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
KEY_PATTERN = ("^([0-9a-f]{2}(:[0-9a-f]{2}){5}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
CURSOR_PATTERN = "^[0-9]{1,18}$"
STATUSES = ("running", "done", "complete", "failed", "cancelled")
DECISIONS = ("none", "pending", "postponed", "refused", "cancelled")
MAX_BATCH = 500


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"nullable": True, "allOf": [schema]}
    out = {**schema, "nullable": True}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    required = list(properties) if required is None else required
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": required} if required else schema  # 3.0: "required" may not be empty


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_EPOCH = {"type": "number", "description": "seconds since the epoch"}


def _schemas() -> dict[str, Any]:
    error_detail = _object({"code": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"},
                            "message": {"type": "string", "maxLength": MAX_MESSAGE}})
    machine_identity = _object({
        "macs": _nullable({"type": "array", "items": {"type": "string", "pattern": EVENT_MAC_PATTERN}}),
        **{k: _nullable(_STRING) for k in ("uuid", "serial", "vendor", "model", "hostname")},
    }, required=[])
    event = _object({
        "schema": {"type": "integer", "enum": [1]},
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "deployment_id": {"type": "string", "pattern": ID_PATTERN},
        "seq": _COUNT,
        "source": {"type": "string", "enum": list(SOURCES)},
        "time": _EPOCH,
        "phase": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
        "step": _nullable({"type": "string", "maxLength": MAX_STEP}),
        "message": {"type": "string", "maxLength": MAX_MESSAGE},
        "level": {"type": "string", "enum": list(LEVELS)},
        "machine": machine_identity,
        "done": _nullable(_COUNT), "total": _nullable(_COUNT),
        "rate": _nullable({"type": "number", "minimum": 0}), "eta": _nullable({"type": "number", "minimum": 0}),
        "retries": _COUNT,
        "warnings": {"type": "array", "items": _STRING, "maxItems": MAX_WARNINGS},
        "error": _nullable(error_detail),
        "dp": _nullable(_STRING),
        "data": _nullable({"type": "object", "additionalProperties": True}),
    }, required=["schema", "id", "deployment_id", "seq", "source", "time", "phase", "message"])
    summary = _object({
        "id": {"type": "string", "pattern": ID_PATTERN},
        "machine_key": _nullable(_STRING), "rule": _nullable(_STRING), "task": _nullable(_STRING),
        "status": {"type": "string", "enum": list(STATUSES)},
        "phase": _nullable(_STRING), "step": _nullable(_STRING), "message": _nullable(_STRING),
        "level": _nullable({"type": "string", "enum": list(LEVELS)}),
        "done": _nullable(_COUNT), "total": _nullable(_COUNT),
        "rate": _nullable(_NUMBER), "eta": _nullable(_NUMBER),
        "retries": _COUNT, "warnings": _COUNT,
        "error": _nullable(_object({"code": _STRING, "message": _STRING})),
        "dp": _nullable(_STRING),
        "started": _EPOCH, "updated": _EPOCH, "finished": _nullable(_EPOCH),
        "events": _COUNT,
    })
    machine = _object({
        "key": _STRING, "uuid": _nullable(_STRING), "serial": _nullable(_STRING), "vendor": _nullable(_STRING),
        "model": _nullable(_STRING), "macs": {"type": "array", "items": _STRING}, "hostname": _nullable(_STRING),
        "state": {"type": "string", "enum": list(STATES)}, "postponed_until": _nullable(_EPOCH),
        "last_seen": _EPOCH, "deployment": _nullable(_ref("DeploymentSummary")),
    })
    return {
        "Error": _object({"error": _STRING, "field": _STRING}, required=["error"]),
        "Event": event,
        "EventBatch": _object({"events": {"type": "array", "items": _ref("Event"), "minItems": 1,
                                          "maxItems": MAX_BATCH}}),
        "Ingested": _object({"accepted": _COUNT, "duplicates": _COUNT}),
        "DeploymentSummary": summary,
        "Machine": machine,
        "MachineList": _object({"machines": {"type": "array", "items": _ref("Machine")}, "generated": _EPOCH}),
        "MachineDetail": _object({"machine": _ref("Machine"),
                                  "deployments": {"type": "array", "items": _ref("DeploymentSummary")}}),
        "MachineHeld": _object({"machine": _ref("Machine")}),
        "DeploymentList": _object({"deployments": {"type": "array", "items": _ref("DeploymentSummary")},
                                   "next": _nullable({"type": "string", "pattern": CURSOR_PATTERN})}),
        "Timeline": _object({"deployment": _ref("DeploymentSummary"), "events": {"type": "array",
                                                                                   "items": _ref("Event")}}),
        "Errors": _object({
            "by_code": {"type": "array", "items": _object({
                "code": _STRING, "count": _COUNT, "message": _nullable(_STRING),
                "deployments": {"type": "array", "items": _STRING, "maxItems": 5}})},
            "by_model": {"type": "array", "items": _object({"model": _nullable(_STRING), "code": _STRING,
                                                             "count": _COUNT})},
            "by_dp": {"type": "array", "items": _object({"dp": _nullable(_STRING), "code": _STRING,
                                                          "count": _COUNT})},
        }),
        "Task": {"type": "object", "required": ["id", "status"], "additionalProperties": True, "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN},
            "status": _object({"url": _STRING, "token": {"type": "string", "minLength": 16}})}},
        "Decision": _object({
            "decision": {"type": "string", "enum": list(DECISIONS)}, "reason": _STRING,
            "machine": _nullable(_STRING), "retry_after": {"type": "integer", "minimum": 1},
            "until": _nullable(_EPOCH)}, required=["decision", "reason", "machine"]),
        "Postpone": {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                     "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 366 * 86400},
                                    "until": _EPOCH}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "malformed request (the field is named)", 401: "missing or wrong bearer token",
           403: "forbidden", 404: "no such thing", 411: "Content-Length required",
           413: "the body is too large, or too many events"}
    return {str(code): _json("Error", why[code]) for code in codes}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False,
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description, **extra}


_KEY = _param("key", "path", {"type": "string", "pattern": KEY_PATTERN},
              "the machine's key: its SMBIOS UUID in lower case, else its first MAC")
_DEPLOYMENT = _param("id", "path", {"type": "string", "pattern": ID_PATTERN}, "a deployment id")
_IDENTITY = [
    _param("mac", "query", {"type": "array", "items": {"type": "string", "pattern": MAC_PATTERN}, "maxItems": 32},
           "the machine's MACs (repeat the parameter)", style="form", explode=True),
    _param("uuid", "query", {"type": "string", "pattern": UUID_PATTERN}, "the SMBIOS UUID"),
    _param("serial", "query", {"type": "string", "maxLength": 200}, "the SMBIOS serial number"),
    _param("vendor", "query", {"type": "string", "maxLength": 200}, "the SMBIOS manufacturer"),
    _param("model", "query", {"type": "string", "maxLength": 200}, "the SMBIOS product name"),
]


def _ingest(summary: str, deprecated: bool = False) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "deprecated": deprecated, "security": [{"deploymentToken": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [_ref("Event"), _ref("EventBatch")]}}}},
        "responses": {"200": _json("Ingested", "stored; replays are counted as duplicates"),
                      **_errors(400, 401, 411, 413)}}}


def _hold(summary: str, body: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "security": [{"adminToken": []}], "parameters": [_KEY],
        "responses": {"200": _json("MachineHeld", "the machine as it now stands"),
                      **_errors(400, 401, 403, 404, 411, 413)}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref("Postpone")}}}
    return {"post": operation}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict: callers may change it)."""
    decision = {"403": _json("Decision", "refused (unknown machine) or cancelled by an administrator"),
                "404": _json("Decision", "nothing to do for this machine"),
                "409": _json("Decision", "waiting: pending approval, or postponed; ask again after retry_after")}
    return {
        "openapi": "3.0.3",
        "info": {"title": "peagent serve", "version": __version__,
                 "description": "The distribution point's status and assignment API (docs/status.md)."},
        "paths": {
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": {
                "description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/api/v1/events": _ingest("store status events of one deployment"),
            "/status": _ingest("the old path of /api/v1/events (images deployed before it post there)",
                               deprecated=True),
            "/api/v1/task": {"get": {
                "summary": "the task for this machine, by the assignment rules", "parameters": _IDENTITY,
                "responses": {"200": {"description": "the task, with id and status filled in",
                                      "content": {"application/json": {"schema": _ref("Task")}}},
                              **_errors(400), **decision}}},
            "/api/v1/tasks/{id}": {"get": {
                "summary": "the task handed out for a running deployment (what boot.ipxe points the PE to)",
                "parameters": [_DEPLOYMENT],
                "responses": {"200": {"description": "the task, with a fresh status token",
                                      "content": {"application/json": {"schema": _ref("Task")}}},
                              **_errors(400, 404)}}},
            "/boot.ipxe": {"get": {
                "summary": "the iPXE script for this machine (without a query: the DP's static boot.ipxe)",
                "parameters": [{**_IDENTITY[0], "required": True, "schema": {**_IDENTITY[0]["schema"],
                                                                               "minItems": 1}}, *_IDENTITY[1:]],
                "responses": {"200": {"description": "an iPXE script",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "400": {"description": "malformed query",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "404": {"description": "without a query: the DP's static boot.ipxe, which it lacks",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/v1/machines": {"get": {"summary": "every machine and its current deployment", "responses": {
                "200": _json("MachineList", "the machines, most recently seen first")}}},
            "/api/v1/machines/{key}": {"get": {
                "summary": "one machine and its deployments", "parameters": [_KEY],
                "responses": {"200": _json("MachineDetail", "the machine"), **_errors(400, 404)}}},
            "/api/v1/machines/{key}/approve": _hold("let the machine deploy (uses up with its next deployment)"),
            "/api/v1/machines/{key}/postpone": _hold("let the machine deploy, but not before a time", body=True),
            "/api/v1/machines/{key}/cancel": _hold("cancel the machine's deployment; refused until approved"),
            "/api/v1/deployments": {"get": {
                "summary": "deployments, newest first",
                "parameters": [
                    _param("status", "query", {"type": "string", "enum": list(STATUSES)}, "only these"),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 50},
                           "page size"),
                    _param("before", "query", {"type": "string", "pattern": CURSOR_PATTERN},
                           "the cursor of the next page (the previous answer's next)")],
                "responses": {"200": _json("DeploymentList", "a page"), **_errors(400)}}},
            "/api/v1/deployments/{id}": {"get": {
                "summary": "a deployment's summary", "parameters": [_DEPLOYMENT],
                "responses": {"200": _json("DeploymentSummary", "the summary"), **_errors(400, 404)}}},
            "/api/v1/deployments/{id}/events": {"get": {
                "summary": "a deployment's timeline (source server, pe, firstboot; then seq)",
                "parameters": [_DEPLOYMENT],
                "responses": {"200": _json("Timeline", "the summary and the events"), **_errors(400, 404)}}},
            "/api/v1/errors": {"get": {"summary": "failed deployments grouped by error code, model and DP",
                                       "responses": {"200": _json("Errors", "the groups")}}},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "deploymentToken": {"type": "http", "scheme": "bearer",
                                    "description": "the token of the task's status section"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "the token of peagent serve --admin-token-file"},
            },
        },
    }
