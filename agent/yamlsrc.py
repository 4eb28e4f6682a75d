"""Read a YAML file into plain Python values while remembering each key's line.

PyYAML's libyaml composer builds the node tree (it carries line marks and is
several times faster than the pure-Python loader); we convert the nodes
ourselves and keep the tree, so an error message can name the line of any key
path.  Lines are looked up only when an error is reported: a valid 500-stream
file pays for nothing it does not use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"


class SourceError(Exception):
    """The file could not be read or is not YAML; ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Located:
    """A document's plain value plus its node tree, for line numbers."""

    value: Any
    root: yaml.Node | None = None

    def line(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path`` (a key's own line), or of its nearest parent that has one."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if _scalar(k) == key), None)
                if match is None:
                    return line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


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
    if node is None:
        return Located(None)
    try:
        return Located(_convert(node), node)
    except _Duplicate as dup:
        raise SourceError(f"{'.'.join(map(str, reversed(dup.path)))}: duplicate key", dup.line) from None


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int) -> None:
        self.path, self.line = [key], line


def _convert(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError("keys must be plain strings", key_node.start_mark.line + 1)
            key = _scalar(key_node)
            if key in out:
                raise _Duplicate(key, key_node.start_mark.line + 1)
            try:
                out[key] = _convert(value_node)
            except _Duplicate as dup:
                dup.path.append(key)  # the message names the whole key path
                raise
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item) for item in node.value]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if node.tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value  # the common case, without the constructor's overhead
    if node.tag == "tag:yaml.org,2002:merge":
        raise SourceError("YAML merge keys (<<) are not supported", node.start_mark.line + 1)
    constructor = _SCALARS.yaml_constructors.get(node.tag)
    if constructor is None or not isinstance(node, yaml.ScalarNode):
        raise SourceError(f"unsupported YAML tag {node.tag}", node.start_mark.line + 1)
    return constructor(_SCALARS, node)
