"""Checks one real answer of the exporter against /v2/openapi.json: its status is listed for
the operation, its content type is one the document gives, and a JSON body validates against
that status's schema.  tests/exporter/conftest.py runs it on every answer every exporter test
gets, so an answer the document does not describe fails the test that provoked it."""
from __future__ import annotations

import json
from typing import Any

import jsonschema

from exporter.openapi import spec

DOC = spec()


def problems(method: str, template: str | None, status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with this answer per the document ([] when it agrees)."""
    paths = DOC["paths"]
    if template is None or template not in paths:
        return []  # no route: a 404/405 of the server, not an operation of the API
    method = "get" if method == "HEAD" and "head" not in paths[template] else method.lower()
    op = paths[template].get(method)
    where = f"{method.upper()} {template} -> {status}"
    if op is None:
        return [] if status == 405 else [f"{where}: operation not in the document"]
    answer = op["responses"].get(str(status))
    if answer is None:
        return [f"{where}: status not in the document (has {sorted(op['responses'])})"]
    content = answer.get("content") or {}
    if not body:
        return []
    kind = content_type.split(";")[0].strip()
    if kind not in content:
        return [f"{where}: content type {kind} not in the document (has {sorted(content)})"]
    if kind != "application/json":
        return []
    try:
        jsonschema.validate(json.loads(body), content[kind]["schema"])
    except jsonschema.ValidationError as exc:
        return [f"{where}: body does not match the schema: {exc.message}"]
    return []


def recorder(found: list[str]) -> Any:
    """An ``on_response_prepare`` hook that appends each disagreement to ``found``."""
    async def check(request: Any, response: Any) -> None:
        route = request.match_info.route.resource
        body = getattr(response, "body", None)
        found.extend(problems(request.method, route.canonical if route is not None else None, response.status,
                              response.headers.get("Content-Type", ""), body if isinstance(body, bytes) else b""))
    return check
