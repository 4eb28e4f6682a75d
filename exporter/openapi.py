"""The OpenAPI 3 document served at /v2/openapi.json (kept true by tests/exporter)."""
from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_NUM = {"type": ["number", "null"]}
_STR = {"type": ["string", "null"]}
_STREAM = {"type": "object", "required": ["id", "state", "enabled", "restarts"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "enabled": {"type": "boolean"},
    "url": _STR, "state": {"enum": ["initializing", "ready", "live", "error", "stopped", "unknown"]},
    "stale": {"type": "boolean"}, "snapshot_age_seconds": _NUM, "last_known_state": _STR,
    "pid": {"type": ["integer", "null"]}, "restarts": {"type": "integer"}, "up": {"type": "boolean"},
    "last_error": {"type": "array", "items": {"type": "string"}}}}
_ELSEWHERE = {"type": "object", "required": ["id", "state", "owner"], "properties": {
    "id": {"type": "string"}, "state": {"enum": ["elsewhere"]}, "up": {"type": "null"},
    "owner": {"type": "object", "required": ["node"], "properties": {
        "node": {"type": "string"}, "epoch": {"type": ["integer", "null"]}, "url": _STR}}}}
_TARGETS = {"type": "object", "required": ["targets", "labels"], "properties": {
    "targets": {"type": "array", "items": {"type": "string"}}, "labels": {"type": "object"}}}
_CLEANUP = {"type": "object", "required": ["stream_id", "retention_days", "deleted_count", "deleted_size_mb",
                                           "cutoff_time"], "properties": {
    "stream_id": {"type": "string"}, "retention_days": _NUM, "deleted_count": {"type": "integer"},
    "deleted_size_mb": {"type": "number"}, "cutoff_time": _STR, "dry_run": {"type": "boolean"}}}
_RECORDING = {"type": "object", "required": ["stream_id", "segment_count", "total_bytes", "oldest_segment_at"],
              "properties": {"stream_id": {"type": "string"}, "segment_count": {"type": ["integer", "null"]},
                             "total_bytes": {"type": ["integer", "null"]}, "oldest_segment_at": _NUM,
                             "retention_days": _NUM, "unsafe": _STR, "stale": {"type": "boolean"}}}
_TILE = {"type": "object", "required": ["id", "state", "codec", "width", "height", "last_error", "recording",
                                       "viewers", "owner"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "state": {"type": "string"}, "since": _NUM,
    "uptime_seconds": _NUM, "restarts": {"type": "integer"}, "fps": _NUM, "bitrate_kbps": _NUM, "codec": _STR,
    "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]}, "last_error": _STR,
    "recording": {"type": "object", "properties": {"bytes": {"type": ["integer", "null"]}, "oldest_at": _NUM,
                                                   "newest_at": _NUM}},
    "viewers": {"type": "integer"},
    "owner": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["node", "console_url"]}]}}}
_CONSOLE = {"type": "object", "required": ["generated_at", "node", "streams"], "properties": {
    "generated_at": {"type": "number"}, "stale": {"type": "boolean"},
    "node": {"type": "object", "required": ["name", "fleet"]}, "streams": {"type": "array", "items": _TILE}}}
_TIMELINE = {"type": "object", "required": ["stream_id", "start", "end", "ranges", "gaps"], "properties": {
    "stream_id": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"},
    "ranges": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    "gaps": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}
_HEALTH = {"type": "object", "required": ["status"], "properties": {
    "status": {"enum": ["ok", "ready", "not ready"]}, "failing": {"type": "array", "items": {"type": "string"}},
    "checks": {"type": "array", "items": {"type": "object", "required": ["check", "ok"]}}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {400: "bad, unknown or repeated parameter (named in `parameter`)",
             401: "missing, unknown or malformed bearer token",
             403: "token scope too small", 404: "unknown id", 409: "refused by the agent",
             413: "the clip's segments add up to more than exporter.clip_max_size (nothing was sent)",
             502: "the agent (or, for a force-close, the SFU) failed the change: the body says how",
             503: "agent state unreadable or unavailable, or the tokens file was refused; "
                  "for a change: not applied (agent down, hung or late)"}
    return {str(c): _json(_ERROR, texts[c]) for c in codes}


def _param(name: str, where: str = "path", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path",
            "schema": schema or {"type": "string", "minLength": 1}}


#: ``exporter.require_read_token``: the /v2/health reads then need a read or admin token.
_READ_AUTH = (401, 403, 503)
_OPTIONAL_BEARER: list[dict[str, list[str]]] = [{}, {"bearer": []}]


def _get(summary: str, schema: dict[str, Any], params: list | None = None, codes: tuple = (),
         *, guarded: bool = True) -> dict[str, Any]:
    """A read; ``guarded``: a /v2/health route, behind a read token when the option is on."""
    codes = tuple(sorted(set(codes) | set(_READ_AUTH if guarded else ())))
    return {"get": {"summary": summary, "parameters": params or [],
                    **({"security": _OPTIONAL_BEARER} if guarded else {}),
                    "responses": {"200": _json(schema), **_errors(*codes)}}}


#: What aiohttp's HTTP parser answers, before any route, to a message it cannot parse
#: (a header with a control character, a bad request line): 400 in plain text.
_PROTOCOL_400 = "malformed HTTP message, answered in plain text by the HTTP server before routing"


def _with_protocol_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation may meet the parser's plain-text 400 (added here, so none is forgotten)."""
    for ops in paths.values():
        for op in ops.values():
            answer = op["responses"].setdefault("400", {"description": _PROTOCOL_400})
            answer.setdefault("content", {})["text/plain"] = {"schema": {"type": "string"}}
            if answer["description"] != _PROTOCOL_400:
                answer["description"] += f"; or a {_PROTOCOL_400}"
    return paths


#: What the console's files are served as (exporter/console_static.py TYPES).
_STATIC_TYPES = ("text/html", "text/javascript", "text/css", "image/svg+xml", "image/png", "image/x-icon",
                 "text/plain", "application/json", "font/woff2", "application/octet-stream")


def _video(summary: str, kind: str, params: list, codes: tuple = (), ok: str = "OK") -> dict[str, Any]:
    """A console route with video or recordings: a viewer (or admin) token, JSON errors."""
    kinds = kind.split()
    return {"get": {"summary": summary + " (scope viewer or admin)", "security": [{"bearer": []}],
                    "parameters": params, "responses": {
                        "200": {"description": ok, "content": {k: {"schema": {"type": "string"}} for k in kinds}},
                        **_errors(*sorted({401, 403, 404, 503, *codes}))}}}


def _console_paths() -> dict[str, Any]:
    """The console's routes (docs/api.md, "Console")."""
    sid = _param("stream_id")
    when = [_param("start", "query"), _param("end", "query")]
    hls = "application/vnd.apple.mpegurl"
    static = {"get": {"summary": "the console's page and files (no token; a strict Content-Security-Policy)",
                      "responses": {"200": {"description": "the file", "content": {k: {} for k in _STATIC_TYPES}},
                                    **_errors(404)}}}
    streams = _get("every stream's tile for the console (open like /v2/health)", _CONSOLE)
    return {
        "/": static, "/console/{path}": {"get": {**static["get"], "parameters": [_param("path")]}},
        "/v2/console/streams": streams,
        "/v2/streams/{stream_id}/live.m3u8": _video("the live HLS playlist, URIs rewritten to segment routes",
                                                   hls, [sid]),
        "/v2/streams/{stream_id}/snapshot.jpg": _video(
            "one keyframe of the newest complete segment as JPEG (cached; header X-Vas-Snapshot: decoded, "
            "shared or cached); 502: FFmpeg made no frame", "image/jpeg", [sid], (502,)),
        "/v2/recordings/{stream_id}/segments/{name}": _video(
            "a segment or init file by a name the agent's index holds (relative to the stream's directory)",
            "video/mp2t video/mp4 video/iso.segment video/x-matroska", [sid, _param("name")]),
        "/v2/recordings/{stream_id}/timeline": {"get": {
            **_video("recorded ranges and gaps (default: the last 24 h)", "application/json", [sid, *when],
                     (400,))["get"], "responses": {"200": _json(_TIMELINE), **_errors(400, 401, 403, 404, 503)}}},
        "/v2/recordings/{stream_id}/playlist.m3u8": _video(
            "a VOD playlist of the range (PROGRAM-DATE-TIME, DISCONTINUITY at gaps, EXT-X-MAP for fMP4)", hls,
            [sid, *when], (400,)),
        "/v2/recordings/{stream_id}/clip.mp4": _video(
            "the range as one fragmented MP4 (stream copy), streamed as an attachment; start and end required; "
            "503 also when two clips are being exported", "video/mp4", [sid, *when], (400, 413)),
    }


def _health_path(summary: str) -> dict[str, Any]:
    ops = {"summary": summary, "responses": {"200": _json(_HEALTH), "503": _json(_HEALTH, "not ready")}}
    return {"get": ops, "head": {"summary": summary, "responses": {"200": {"description": "OK"},
                                                                    "503": {"description": "not ready"}}},
            "options": ops}


def spec() -> dict[str, Any]:
    """The whole document."""
    days = _param("retention_days", "query", {"type": "number", "minimum": 1 / 24, "maximum": 36500})
    dry = _param("dry_run", "query", {"enum": ["1", "true", "yes", "0", "false", "no"]})
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "VAS node exporter", "version": "2",
                 "description": "Health, the /v2/health API and metrics of one VAS node (docs/api.md)."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": _with_protocol_errors({
            "/livez": _health_path("the exporter answers"),
            "/readyz": _health_path("this node should get traffic"),
            "/healthz": _health_path("alias of /readyz"),
            "/v2/health/system": _get("node summary", {**obj, "required": ["status", "agent", "streams"]}),
            "/v2/health/streams/{stream_id}": {"get": {
                "summary": "one stream (fleet mode: a stream owned by another node answers 307 to it, or 200 "
                           "with state elsewhere when that node's URL is unknown)",
                "parameters": [_param("stream_id")], "security": _OPTIONAL_BEARER,
                "responses": {"200": _json({"oneOf": [_STREAM, _ELSEWHERE]}),
                              "307": _json(_ELSEWHERE, "owned by another node (Location)"),
                              **_errors(401, 403, 404, 503)}}},
            "/v2/fleet/targets": _get("Prometheus http_sd targets: every live node's exporter (fleet mode)",
                                      {"type": "array", "items": _TARGETS}, guarded=False),
            "/v2/health/ingestion": _get("FFmpeg processes", {**obj, "required": ["processes"]}, codes=(503,)),
            "/v2/health/producers": _get("SFU producers", {**obj, "required": ["producers"]}, codes=(503,)),
            "/v2/health/consumers": _get("viewer sessions", {**obj, "required": ["consumers"]}, codes=(503,)),
            "/v2/health/consumers/{consumer_id}": _get("one session", obj, [_param("consumer_id")], (404, 503)),
            "/v2/health/consumers/{consumer_id}/heartbeat": {"post": {
                "summary": "a viewer's heartbeat (scope heartbeat or admin)", "security": secured,
                "parameters": [_param("consumer_id")],
                "responses": {"200": _json(obj), **_errors(401, 403, 404, 502, 503)}}},
            "/v2/health/recordings": _get("recordings per stream", {**obj, "required": ["streams"]}, codes=(503,)),
            "/v2/health/recordings/{stream_id}": _get("one stream's recordings", _RECORDING,
                                                      [_param("stream_id")], (404, 503)),
            "/v2/health/recordings/cleanup": {"post": {
                "summary": "apply retention to every stream now (admin)", "security": secured,
                "parameters": [days, dry],
                "responses": {"200": _json({**obj, "required": ["deleted_count", "streams"]}),
                              **_errors(400, 401, 403, 409, 502, 503)}}},
            "/v2/health/recordings/{stream_id}/cleanup": {"post": {
                "summary": "apply retention to one stream now (admin)", "security": secured,
                "parameters": [_param("stream_id"), days, dry],
                "responses": {"200": _json(_CLEANUP), **_errors(400, 401, 403, 404, 409, 502, 503)}}},
            "/v2/streams/{stream_id}/consumers/{consumer_id}": {"delete": {
                "summary": "force-close a viewer (admin)", "security": secured,
                "parameters": [_param("stream_id"), _param("consumer_id")],
                "responses": {"204": {"description": "closed"}, **_errors(401, 403, 404, 502, 503)}}},
            "/v2/metrics": {"get": {"summary": "Prometheus metrics (docs/metrics.md)", "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {
                    "type": "string"}}}}}}},
            "/v2/openapi.json": {"get": {"summary": "this document", "responses": {"200": _json(obj)}}},
            **_console_paths(),
        }),
    }
