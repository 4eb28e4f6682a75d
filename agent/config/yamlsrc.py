"""Read a YAML file into plain Python values while remembering each key's line.

PyYAML's libyaml composer builds the node tree (it carries line marks and is
several times faster than the pure-Python loader); we convert the nodes
ourselves and keep the tree, so an error message can name the line of any key
path.  Lines are looked up only when an error is reported: a valid 500-stream
file pays for nothing it does not use.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
#: Bounds that keep parsing within a fixed memory and time budget, whatever the file holds.
MAX_DOCUMENT_BYTES = 16 << 20
MAX_DEPTH = 64
#: Values built per document: its own nodes, plus what aliases repeat (an alias bomb).
MAX_VALUES = 200_000


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
    #: Per mapping node, its keys: built on first use, so 20k errors stay linear.
    _keys: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict, repr=False)

    def line(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path`` (a key's own line), or of its nearest parent that has one."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                match = self._mapping_keys(node).get(key)
                if match is None:
                    return line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def _mapping_keys(self, node: yaml.MappingNode) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        keys = self._keys.get(id(node))
        if keys is None:
            keys = {}
            for k, v in node.value:
                try:
                    keys.setdefault(_scalar(k), (k, v))
                except (SourceError, TypeError):
                    continue  # not a plain key: never on a reported path
            self._keys[id(node)] = keys
        return keys


def read_source(path: str | os.PathLike[str]) -> bytes:
    """A config file's bytes: a regular file of at most MAX_DOCUMENT_BYTES (raises OSError).

    Opened without blocking: ``--config`` pointing at a FIFO or ``/dev/zero`` fails at once.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while size <= MAX_DOCUMENT_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)  # parse() refuses it when too large
    finally:
        os.close(fd)


def parse(text: str | bytes) -> Located:
    """Parse one YAML document; raises :class:`SourceError` for anything it cannot take.

    Whatever the input (bad tags, huge numbers, recursive aliases, alias bombs,
    deep nesting), the result is a value or a ``SourceError`` with a line,
    never another exception, within a bounded time and memory.
    """
    if len(text) > MAX_DOCUMENT_BYTES:
        raise SourceError(f"file is larger than {MAX_DOCUMENT_BYTES >> 20} MiB")
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SourceError(f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.reader.ReaderError as exc:  # a control character or bytes that are not UTF-8
        before = text[:exc.position]
        line = (before.count(b"\n") if isinstance(before, bytes) else before.count("\n")) + 1
        what = (f"not valid {exc.encoding} (byte #x{exc.character:02x})" if isinstance(exc.character, int)
                else f"control character #x{ord(exc.character):04x} is not allowed")
        raise SourceError(f"invalid YAML: {what}", line) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"invalid YAML: {exc}") from None
    if node is None:
        return Located(None)
    try:
        return Located(_Converter().convert(node, 0), node)
    except _Duplicate as dup:
        raise SourceError(f"{'.'.join(map(str, reversed(dup.path)))}: duplicate key", dup.line) from None


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int) -> None:
        self.path, self.line = [key], line


class _Converter:
    """Nodes to plain values, refusing cycles, deep nesting and runaway alias expansion."""

    def __init__(self) -> None:
        self.budget = MAX_VALUES
        self.open: set[int] = set()  # collection nodes being converted: a cycle revisits one

    def convert(self, node: yaml.Node, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise SourceError(f"document expands to more than {MAX_VALUES} values (alias bomb?)",
                              node.start_mark.line + 1)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return _scalar(node)
        if depth >= MAX_DEPTH:
            raise SourceError(f"nested deeper than {MAX_DEPTH} levels", node.start_mark.line + 1)
        if id(node) in self.open:
            raise SourceError("recursive alias (a value that contains itself)", node.start_mark.line + 1)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, depth + 1) for item in node.value]
            return self.mapping(node, depth)
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError("keys must be plain strings", key_node.start_mark.line + 1)
            key = _scalar(key_node)
            if key in out:
                raise _Duplicate(key, key_node.start_mark.line + 1)
            try:
                out[key] = self.convert(value_node, depth + 1)
            except _Duplicate as dup:
                dup.path.append(key)  # the message names the whole key path
                raise
        return out


def _scalar(node: yaml.Node) -> Any:
    if node.tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value  # the common case, without the constructor's overhead
    line = node.start_mark.line + 1
    if node.tag == "tag:yaml.org,2002:merge":
        raise SourceError("YAML merge keys (<<) are not supported", line)
    if node.tag == _TIMESTAMP and isinstance(node, yaml.ScalarNode):
        raise SourceError(f"unquoted date or time {_clip(node.value)}: no key takes one "
                          "(quote it if it is text)", line)
    constructor = _SCALARS.yaml_constructors.get(node.tag)
    if constructor is None or not isinstance(node, yaml.ScalarNode) or node.tag in _REFUSED_TAGS:
        raise SourceError(f"unsupported YAML tag {node.tag}", line)
    try:
        return constructor(_SCALARS, node)
    except Exception as exc:  # !!int abc, !!bool maybe, a 5,000-digit number ...
        reason = f": {str(exc).splitlines()[0][:80]}" if isinstance(exc, ValueError) and str(exc) else ""
        raise SourceError(f"invalid {node.tag.rsplit(':', 1)[-1]} value {_clip(node.value)}{reason}",
                          line) from None


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
#: Tags whose values no key of the file takes: refused where they stand.
_REFUSED_TAGS = frozenset({"tag:yaml.org,2002:binary", "tag:yaml.org,2002:set",
                           "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"})


def _clip(text: str) -> str:
    from agent.redact import redact_url  # redacted before cut: a cut password would not match
    text = redact_url(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")
