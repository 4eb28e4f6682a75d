"""config/streams.schema.json stays in step with the loader, and the shipped files validate."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent.config.validate import accepted_keys

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "config" / "streams.schema.json").read_text())


def schema_keys() -> dict[str, frozenset[str]]:
    props = SCHEMA["properties"]
    stream = props["streams"]["additionalProperties"]["properties"]
    out = {"": frozenset(props), "defaults": frozenset(props["defaults"]["properties"]), "stream": frozenset(stream)}
    for section in ("node", "recordings", "mediasoup", "consumers", "exporter", "cluster"):
        out[section] = frozenset(props[section]["properties"])
    out["cluster.etcd"] = frozenset(props["cluster"]["properties"]["etcd"]["properties"])
    out["mediasoup.restart"] = frozenset(props["mediasoup"]["properties"]["restart"]["properties"])
    out["exporter.readiness"] = frozenset(props["exporter"]["properties"]["readiness"]["properties"])
    out["exporter.tls"] = frozenset(props["exporter"]["properties"]["tls"]["properties"])
    for name in ("restart", "recording", "rtp", "placement"):
        out[f"defaults.{name}"] = frozenset(props["defaults"]["properties"][name]["properties"])
        out[f"stream.{name}"] = frozenset(stream[name]["properties"])
    return out


def test_every_key_the_loader_accepts_is_in_the_schema_and_the_reverse():
    assert schema_keys() == accepted_keys()


@pytest.mark.parametrize("name", ["demo.yaml", "demo-sfu.yaml", "streams.example.yaml", "fleet.example.yaml"])
def test_shipped_files_validate(name):
    jsonschema.validate(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)


def test_the_example_says_how_editors_use_the_schema():
    assert "yaml-language-server: $schema=" in (ROOT / "config" / "streams.example.yaml").read_text()


def test_the_schema_rejects_what_the_loader_rejects():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "streams": {"Bad Id": {"url": "rtsp://h/"}}}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "streams": {"a": {"url": "rtsp://h/", "stall_timout": "5s"}}}, SCHEMA)
