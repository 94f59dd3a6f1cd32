"""The OpenAPI document: valid OpenAPI 3.0 (schemathesis checks it against the 3.0 meta-schema and
loads every operation), in step with the server's routes, and describing what the server answers."""

from __future__ import annotations

from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis

from peagent.server.api import Api
from peagent.server.openapi import document
from peagent.server.store import StatusStore
from peagent.status.event import validate_event


def test_the_document_is_valid_openapi_3_0_and_every_operation_loads() -> None:
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in document()["paths"].values())


def test_a_broken_document_would_be_caught() -> None:
    doc = document()
    doc["paths"]["/api/v1/task"]["get"]["parameters"][0]["in"] = "nowhere"
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(doc).validate()


def test_every_route_of_the_server_is_documented_and_nothing_else(tmp_path: Path) -> None:
    store = StatusStore(tmp_path / "s.sqlite")
    try:
        # The dashboard (/ and /ui/...) is HTML for people, not part of the API.
        routes = {(path, method.lower()) for path, method in Api(tmp_path, store).operations()
                  if path != "/" and not path.startswith("/ui/")}
    finally:
        store.close()
    assert routes == {(path, method) for path, methods in document()["paths"].items() for method in methods}


def test_the_event_schema_agrees_with_the_receivers_validation() -> None:
    doc = document()
    event_schema = {**doc["components"]["schemas"]["Event"], "components": doc["components"]}
    validator = jsonschema_rs.validator_for(_without_nullable(event_schema))
    good = {"schema": 1, "id": "event-0001", "deployment_id": "d-1", "seq": 1, "source": "pe", "time": 1.5,
            "phase": "write", "message": "m", "error": {"code": "fetch.failed", "message": "x"}, "step": None}
    assert validator.is_valid(validate_event(good))
    for bad in ({**good, "colour": 1}, {**good, "id": "short"}, {**good, "phase": "Write"}):
        assert not validator.is_valid(bad)
        with pytest.raises(ValueError):
            validate_event(bad)


def _without_nullable(schema: object) -> object:
    """OpenAPI 3.0's nullable as JSON Schema's null type, for a plain JSON Schema validator."""
    if isinstance(schema, list):
        return [_without_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _without_nullable(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out
