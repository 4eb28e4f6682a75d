"""The fleet keys of ``streams.yaml``, checked for ``validate.py``.

``cluster: {node_name, etcd: {endpoints, prefix, username, password}, lease_ttl,
max_streams, advertise_url}`` and per stream ``placement: {prefer, allow}``.
Like every check in the schema, a function returns None after reporting an
error through the validator.
"""
from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import urlsplit

from agent.config.model import ClusterConfig, EtcdConfig, Placement

CLUSTER_KEYS = frozenset({"node_name", "etcd", "lease_ttl", "max_streams", "advertise_url"})
ETCD_KEYS = frozenset({"endpoints", "prefix", "username", "password"})
PLACEMENT_KEYS = frozenset({"prefer", "allow"})
NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def default_node_name() -> str:
    """The host name, lowercased, up to its first dot."""
    return socket.gethostname().lower().split(".", 1)[0] or "localhost"


def node_names(v: Any, keypath: tuple, value: Any) -> tuple[str, ...] | None:
    """A list of distinct node names."""
    if not isinstance(value, list):
        v.error(keypath, f"expected a list of node names, got {v.show(value)}")
        return None
    ok = True
    for i, name in enumerate(value):
        if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
            v.error(keypath + (i,), f"node name must match {NODE_NAME.pattern}, got {v.show(name)}")
            ok = False
        elif name in value[:i]:
            v.error(keypath + (i,), f"{name} is listed twice")
            ok = False
    return tuple(value) if ok else None


def _url(v: Any, keypath: tuple, value: Any, *, bare: bool) -> str | None:
    text = v.text(keypath, value)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or (bare and (port is None or parts.path not in ("", "/") or parts.query)):
        want = "an http(s)://host:port URL without a path or credentials" if bare else "an http(s):// URL"
        v.error(keypath, f"expected {want}, got {v.show(text)}")
        return None
    return text.rstrip("/")


def cluster_section(v: Any, value: Any) -> ClusterConfig | None:
    """``cluster:``; None when absent (single-host mode) or invalid (reported)."""
    if value is None:
        return None
    key = ("cluster",)
    c = v.mapping(key, value, CLUSTER_KEYS)
    if not c:
        if isinstance(value, dict):
            v.error(key, "expected at least etcd.endpoints")
        return None
    name = c.get("node_name", default_node_name())
    if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
        v.error(key + ("node_name",), f"node name must match {NODE_NAME.pattern}, got {v.show(name)}")
        name = None
    etcd = etcd_section(v, c.get("etcd"))
    ttl = v.duration(key + ("lease_ttl",), c.get("lease_ttl", 3.0), positive=True, lo=1, hi=60)
    capacity = v.integer(key + ("max_streams",), c.get("max_streams", 64), 1, 10000)
    advertise = _url(v, key + ("advertise_url",), c["advertise_url"], bare=False) if "advertise_url" in c else None
    if None in (name, etcd, ttl, capacity) or ("advertise_url" in c and advertise is None):
        return None
    return ClusterConfig(node_name=name, etcd=etcd, lease_ttl=ttl, max_streams=capacity,  # type: ignore[arg-type]
                         advertise_url=advertise)


def etcd_section(v: Any, value: Any) -> EtcdConfig | None:
    key = ("cluster", "etcd")
    if value is None:
        v.error(key, "required key is missing (etcd: {endpoints: [http://host:2379]})")
        return None
    e = v.mapping(key, value, ETCD_KEYS)
    raw = e.get("endpoints")
    if not isinstance(raw, list) or not raw:
        v.error(key + ("endpoints",), f"expected a non-empty list of http(s)://host:port URLs, got {v.show(raw)}")
        return None
    endpoints = [_url(v, key + ("endpoints", i), x, bare=True) for i, x in enumerate(raw)]
    for i, url in enumerate(endpoints):
        if url is not None and url in endpoints[:i]:
            v.error(key + ("endpoints", i), f"{url} is listed twice")
            return None
    prefix = v.text(key + ("prefix",), e.get("prefix", "/vas"))
    if prefix is not None and (not prefix.startswith("/") or prefix.endswith("/") or re.search(r"\s", prefix)):
        v.error(key + ("prefix",), f"expected a key prefix like /vas (leading /, no trailing /), got {v.show(prefix)}")
        prefix = None
    user = v.text(key + ("username",), e["username"]) if "username" in e else None
    password = v.text(key + ("password",), e["password"], secret=True) if "password" in e else None
    if ("username" in e) != ("password" in e):
        missing = "password" if "username" in e else "username"
        v.error(key + (missing,), "username and password go together")
        return None
    if None in endpoints or prefix is None or ("username" in e and (user is None or password is None)):
        return None
    return EtcdConfig(endpoints=tuple(endpoints), prefix=prefix, username=user, password=password)  # type: ignore[arg-type]


def placement_rules(v: Any, keypath: tuple, placement: Placement, cluster: bool) -> None:
    """A stream's placement: names the fleet can honour, and only in fleet mode."""
    if not cluster and (placement.prefer or placement.allow):
        v.error(keypath, "placement needs a cluster: section (fleet mode)")
        return
    if placement.allow:
        for i, name in enumerate(placement.prefer):
            if name not in placement.allow:
                v.error(keypath + ("prefer", i), f"prefers {name}, which allow excludes")
