"""Safe YAML loading for rendering: ``yaml.SafeLoader`` plus limits.

* Aliases: at most ``MAX_ALIASES`` per file, and the nodes they expand to may not exceed
  ``MAX_ALIAS_EXPANSION`` in total; a recursive alias is refused.  So ordinary anchors
  (``<<: *defaults``) work, and "billion laughs" documents are refused while being composed, before any
  expansion happens.
* Size: a file over ``MAX_FILE_BYTES`` and a document over ``MAX_DOCUMENT_BYTES`` are refused.
* Depth: collections nested more than ``MAX_DEPTH`` levels are refused while composing (before the
  recursion of the composer, constructor or later JSON encoding can run out of stack).
* Duplicate keys in one mapping are an error (Kubernetes' own decoder refuses them too); keys are the
  scalar text as written (``80: x`` gives the key ``"80"``), collections as keys are refused.
* Timestamps stay strings and ``!!binary`` stays base64 text, so every result is JSON-compatible;
  ``!!omap``, ``!!pairs`` and ``!!set`` are refused.
* Every error is a ``RenderError`` with the file, the 1-based line and column, and the document index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from .errors import RenderError

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MAX_RENDER_BYTES = 64 * 1024 * 1024  # all the YAML one render reads (plain) or produces (Helm, Kustomize)
MAX_ALIASES = 100
MAX_ALIAS_EXPANSION = 10_000
MAX_DEPTH = 100  # nested mappings/sequences; Kubernetes objects rarely pass 20


class YamlBombError(yaml.MarkedYAMLError):
    pass


if TYPE_CHECKING:
    _Base = yaml.SafeLoader
else:
    _Base = object


class _Limits(_Base):
    """Alias limits, duplicate-key checks and JSON-compatible scalars, mixed into a loader."""

    max_aliases = MAX_ALIASES
    max_alias_expansion = MAX_ALIAS_EXPANSION

    def _init_limits(self) -> None:
        self._alias_count = 0
        self._alias_expansion = 0
        self._node_sizes: dict[int, int] = {}
        self._open_anchors: list[str] = []

    def _check_depth(self) -> None:
        if len(self._open_anchors) >= MAX_DEPTH:
            event = self.peek_event()
            raise YamlBombError(None, None, f"collections nested more than {MAX_DEPTH} levels deep",
                                event.start_mark)

    def compose_sequence_node(self, anchor: str | None) -> Node:  # type: ignore[override]
        self._check_depth()
        self._open_anchors.append(anchor or "")
        try:
            return super().compose_sequence_node(anchor)  # type: ignore[arg-type,no-any-return]
        finally:
            self._open_anchors.pop()

    def compose_mapping_node(self, anchor: str | None) -> Node:  # type: ignore[override]
        self._check_depth()
        self._open_anchors.append(anchor or "")
        try:
            return super().compose_mapping_node(anchor)  # type: ignore[arg-type,no-any-return]
        finally:
            self._open_anchors.pop()

    def _node_size(self, node: Node, visiting: set[int]) -> int:
        key = id(node)
        if key in self._node_sizes:
            return self._node_sizes[key]
        if key in visiting:
            raise YamlBombError(None, None, "recursive alias", node.start_mark)
        visiting.add(key)
        size = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                size += self._node_size(child, visiting)
                if size > self.max_alias_expansion:
                    break
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                size += self._node_size(k, visiting) + self._node_size(v, visiting)
                if size > self.max_alias_expansion:
                    break
        visiting.discard(key)
        self._node_sizes[key] = size
        return size

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            anchor = event.anchor
            if anchor in self._open_anchors:
                raise YamlBombError(None, None, f"recursive alias *{anchor}", event.start_mark)
            if anchor in self.anchors:
                self._alias_count += 1
                if self._alias_count > self.max_aliases:
                    raise YamlBombError(None, None, f"more than {self.max_aliases} aliases (YAML bomb?)",
                                        event.start_mark)
                self._alias_expansion += self._node_size(self.anchors[anchor], set())
                if self._alias_expansion > self.max_alias_expansion:
                    raise YamlBombError(
                        None, None,
                        f"aliases expand to more than {self.max_alias_expansion} nodes (YAML bomb?)",
                        event.start_mark)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {type(node).__name__}",
                                   node.start_mark)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "mapping keys must be scalars", key_node.start_mark)
            if key_node.value in seen:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"duplicate key {key_node.value!r}", key_node.start_mark)
            seen.add(key_node.value)
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "mapping keys must be scalars", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_as_text(self, node: Node) -> str:
        return str(self.construct_scalar(node))  # type: ignore[arg-type]

    def construct_binary_text(self, node: Node) -> str:
        return "".join(str(self.construct_scalar(node)).split())  # type: ignore[arg-type]

    def refuse(self, node: Node) -> Any:
        raise ConstructorError(None, None, f"YAML tag {node.tag} is not supported", node.start_mark)


class LimitedSafeLoader(_Limits, yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.SafeLoader`` (pure Python) with the limits."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._init_limits()


_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)
if _CParser is not None:

    class LimitedCSafeLoader(_Limits, Composer, SafeConstructor, Resolver, _CParser):  # type: ignore[misc]
        """libyaml's scanner and parser (fast), with PyYAML's Python composer so that the alias
        limits apply to every alias event, and the same constructor and resolver as above."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            Composer.__init__(self)  # type: ignore[misc]
            SafeConstructor.__init__(self)  # type: ignore[misc]
            Resolver.__init__(self)  # type: ignore[misc]
            self._init_limits()

    FastLoader: type = LimitedCSafeLoader
else:  # pragma: no cover - PyYAML without libyaml
    FastLoader = LimitedSafeLoader

for _cls in {LimitedSafeLoader, FastLoader}:
    _cls.add_constructor("tag:yaml.org,2002:timestamp", _Limits.construct_as_text)  # type: ignore[attr-defined]
    _cls.add_constructor("tag:yaml.org,2002:binary", _Limits.construct_binary_text)  # type: ignore[attr-defined]
    for _tag in ("omap", "pairs", "set"):
        _cls.add_constructor(f"tag:yaml.org,2002:{_tag}", _Limits.refuse)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class YamlDocument:
    index: int  # 0-based, counting empty documents too
    line: int  # 1-based line where the document's content starts
    data: Any  # None for an empty document


def _decode(content: str | bytes, file: str) -> str:
    if isinstance(content, bytes):
        try:
            return content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RenderError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    return content


def load_documents(content: str | bytes, *, file: str, max_bytes: int = MAX_FILE_BYTES,
                   max_document_bytes: int = MAX_DOCUMENT_BYTES, line_offset: int = 0) -> list[YamlDocument]:
    """Parse every document of a YAML stream, safely.  Raises RenderError with file and line."""
    size = len(content.encode() if isinstance(content, str) else content)
    if size > max_bytes:
        raise RenderError(f"file is {size} bytes, more than the limit of {max_bytes}", file=file)
    text = _decode(content, file)
    loader = FastLoader(text)
    docs: list[YamlDocument] = []
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            start, end = node.start_mark, node.end_mark
            if end.index - start.index > max_document_bytes:
                raise RenderError(f"document is larger than the limit of {max_document_bytes} bytes",
                                  file=file, line=start.line + 1 + line_offset, document=index)
            data = loader.construct_document(node)
            docs.append(YamlDocument(index, start.line + 1 + line_offset, data))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context and not isinstance(exc, YamlBombError):
            problem = f"{problem} ({exc.context})"
        prefix = "refused YAML: " if isinstance(exc, YamlBombError) else "invalid YAML: "
        raise RenderError(
            prefix + problem, file=file,
            line=(mark.line + 1 + line_offset) if mark else None,
            column=(mark.column + 1) if mark else None, document=index,
        ) from None
    except yaml.YAMLError as exc:
        raise RenderError(f"invalid YAML: {exc}", file=file, document=index) from None
    except RecursionError:
        raise RenderError("YAML nesting is too deep", file=file, document=index) from None
    finally:
        loader.dispose()
    return docs


def load_one(content: str | bytes, *, file: str, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """A file that must hold at most one document (values files, fleetgate.yaml, Chart.yaml)."""
    docs = [d for d in load_documents(content, file=file, max_bytes=max_bytes) if d.data is not None]
    if len(docs) > 1:
        raise RenderError("expected a single YAML document", file=file, line=docs[1].line, document=1)
    return docs[0].data if docs else None
