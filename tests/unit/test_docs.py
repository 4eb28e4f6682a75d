"""docs/configuration.md is checked against the schema: every key is documented."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_paths() -> set[str]:
    schema = json.loads((ROOT / "config" / "streams.schema.json").read_text())
    props = schema["properties"]
    paths: set[str] = set()

    def walk(prefix: str, node: dict) -> None:
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            nested = sub.get("properties")
            if nested and key not in ("readiness",):
                walk(path + ".", sub)
            else:
                paths.add(path)
    for section in ("node", "recordings", "exporter", "mediasoup", "consumers"):
        walk(f"{section}.", props[section])
    walk("", props["streams"]["additionalProperties"])  # per stream (and defaults)
    return paths


def test_every_schema_key_is_in_the_configuration_reference():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(p for p in documented_paths() if f"`{p}`" not in text and f"`{p.split('.')[-1]}`" not in text)
    assert missing == []
