"""Read a YAML file into plain Python values while remembering each key's line.

PyYAML's libyaml composer builds the node tree (it carries line marks and is
several times faster than the pure-Python loader); we convert the nodes
ourselves so every value keeps the line an error message must name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()

Path_ = tuple[Any, ...]


class SourceError(Exception):
    """The file could not be read or is not YAML; ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Located:
    """A document's plain value plus the line of every key path (1-based)."""

    value: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest parent that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)


def parse(text: str | bytes) -> Located:
    """Parse one YAML document; raises :class:`SourceError` on bad syntax."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SourceError(f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"invalid YAML: {exc}") from None
    doc = Located(None)
    if node is not None:
        doc.value = _convert(node, (), doc.lines)
    return doc


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError("keys must be plain strings", key_node.start_mark.line + 1)
            key = _scalar(key_node)
            if key in out:
                where = ".".join(str(k) for k in path + (key,))
                raise SourceError(f"{where}: duplicate key", key_node.start_mark.line + 1)
            # Errors about a key point at the key's own line, not at its value's.
            out[key] = _convert(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if node.tag == "tag:yaml.org,2002:merge":
        raise SourceError("YAML merge keys (<<) are not supported", node.start_mark.line + 1)
    constructor = _SCALARS.yaml_constructors.get(node.tag)
    if constructor is None or not isinstance(node, yaml.ScalarNode):
        raise SourceError(f"unsupported YAML tag {node.tag}", node.start_mark.line + 1)
    return constructor(_SCALARS, node)
