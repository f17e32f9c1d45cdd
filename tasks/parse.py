"""Parse Rust source with tree-sitter into items with qualified names.

The walk is iterative (an explicit stack): deeply nested code overflowed the
original system's recursive walk. It visits item containers only (files, inline
modules, impls, traits, extern blocks, macro bodies), never function bodies,
which is what keeps it fast (walking item nodes of Burn takes 0.04 s).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import tree_sitter_rust
from tree_sitter import Language, Node, Parser, Range

from tasks.records import Item, ParsedFile

RUST = Language(tree_sitter_rust.language())

# tree-sitter node type -> item kind. Functions inside impls and traits become "method".
ITEM_KINDS = {
    "function_item": "function",
    "function_signature_item": "function",
    "struct_item": "struct",
    "enum_item": "enum",
    "union_item": "union",
    "trait_item": "trait",
    "impl_item": "impl",
    "const_item": "const",
    "static_item": "static",
    "type_item": "type",
    "associated_type": "type",
    "macro_definition": "macro",
    "mod_item": "module",
}
CONTAINERS = {"impl_item", "trait_item", "mod_item"}
COMMENTS = {"line_comment", "block_comment"}
ELIDED = "{ ... }"


@dataclass(frozen=True, slots=True)
class _Scope:
    module: tuple[str, ...]  # module path: crate name, then modules
    owner: str | None = None  # "Type" or "<Type as Trait>" inside impls, the trait's name inside traits


@dataclass(slots=True)
class _Pending:
    """A container's children waiting to be walked."""

    children: list[Node]
    scope: _Scope
    container: Item | None  # the item whose text lists these children's signatures
    text_start: int = 0  # byte offset where the container's text starts


def parse_file(rel_path: str, source: bytes, module_path: tuple[str, ...]) -> ParsedFile:
    """Extract the items of one file. Files with syntax errors yield what tree-sitter recovered."""
    tree = Parser(RUST).parse(source)
    root = tree.root_node
    items: list[Item] = []
    uses: list[str] = []
    module_doc: list[str] = []
    reexports: list[Node] = []
    stack = [_Pending(list(root.children), _Scope(module_path), None)]
    while stack:
        pending = stack.pop()
        _walk_children(source, pending, items, uses, module_doc, reexports, stack)
    file_module = _file_module_item(source, module_path, module_doc, reexports)
    if file_module is not None:
        items.insert(0, file_module)
    items.sort(key=lambda item: (item.start_line, item.end_line))
    return ParsedFile(rel_path, items, uses, _error_lines(root) if root.has_error else [])


def _walk_children(source, pending, items, uses, module_doc, reexports, stack) -> None:
    docs: list[Node] = []
    attrs: list[Node] = []
    elisions: list[tuple[int, int, str]] = []  # (start, end, replacement) in the container's text
    for node in pending.children:
        kind = node.type
        if kind in COMMENTS:
            marker = _doc_marker(node)
            if marker == "outer":
                docs.append(node)
            elif marker == "inner" and pending.container is None and pending.scope.owner is None:
                module_doc.append(_doc_text(node))
            elif marker == "inner" and pending.container is not None:
                pending.container.doc = _join_doc(pending.container.doc, _doc_text(node))
            continue
        if kind == "attribute_item":
            attrs.append(node)
            continue
        prefix = docs + attrs
        docs, attrs = [], []
        if kind == "use_declaration":
            public = _visibility(node).startswith("pub")
            uses.extend(("pub " if public else "") + path for path in _use_paths(node))
            if public and pending.container is None and pending.scope.owner is None:
                reexports.append(node)
            continue
        if kind == "foreign_mod_item":  # extern "C" { ... }: its declarations belong to the module
            body = node.child_by_field_name("body") or _first_child(node, "declaration_list")
            if body is not None:
                stack.append(_Pending(list(body.children), pending.scope, None))
            continue
        if kind == "macro_invocation":
            expanded = _macro_items(source, node)
            if expanded is not None:
                stack.append(_Pending(expanded, pending.scope, None))
            else:
                item = _macro_call_item(source, node, prefix, pending.scope)
                items.append(item)
                if pending.container is not None:
                    elisions.append(_elision(source, node, prefix, item.signature))
            continue
        if kind == "ERROR":  # recovered garbage may still hold whole items
            stack.append(_Pending(list(node.children), pending.scope, None))
            continue
        if kind not in ITEM_KINDS:
            continue
        if kind == "mod_item" and node.child_by_field_name("body") is None:
            continue  # `mod foo;` declares a file module: its items come from that file
        item = _make_item(source, node, prefix, pending.scope)
        items.append(item)
        if pending.container is not None:
            elisions.append(_elision(source, node, prefix, item.signature))
        if kind in CONTAINERS:
            body = node.child_by_field_name("body")
            if body is not None:
                text_start = _line_start(source, (prefix[0] if prefix else node).start_byte)
                stack.append(_Pending(list(body.children), _child_scope(node, item, pending.scope), item, text_start))
    if pending.container is not None and elisions:
        pending.container.text = _elide(pending.container, pending.text_start, elisions, source)


# --- items -------------------------------------------------------------------------------


def _make_item(source: bytes, node: Node, prefix: list[Node], scope: _Scope) -> Item:
    kind = ITEM_KINDS[node.type]
    if kind == "function" and scope.owner is not None:
        kind = "method"
    if node.type == "impl_item":
        name = _impl_display_name(node)
        local = (_impl_owner(node),)
    else:
        name_node = node.child_by_field_name("name")
        name = _text(name_node) if name_node is not None else node.type
        local = ((scope.owner,) if scope.owner else ()) + (name,)
    start = prefix[0] if prefix else node
    text = _line_text(source, start.start_byte, node.end_byte)
    return Item(
        name=name,
        kind=kind,
        qualified_name="::".join(scope.module + local),
        local_name="::".join(local),
        start_line=start.start_point[0] + 1,
        end_line=_end_line(node),
        text=text,
        doc=_join_doc(*[_doc_text(n) for n in prefix if n.type in COMMENTS]) or _doc_attributes(prefix),
        signature=_signature(node),
        visibility=_visibility(node),
        attributes=tuple(_text(n) for n in prefix if n.type == "attribute_item"),
    )


def _macro_call_item(source: bytes, node: Node, prefix: list[Node], scope: _Scope) -> Item:
    """An item-level macro call whose body is not items (bitflags!, a DSL): kept whole, searchable."""
    macro = node.child_by_field_name("macro")
    name = (_text(macro) if macro is not None else "macro") + "!"
    local = ((scope.owner,) if scope.owner else ()) + (name,)
    start = prefix[0] if prefix else node
    return Item(
        name=name,
        kind="macro_call",
        qualified_name="::".join(scope.module + local),
        local_name="::".join(local),
        start_line=start.start_point[0] + 1,
        end_line=_end_line(node),
        text=_line_text(source, start.start_byte, node.end_byte),
        doc=_join_doc(*[_doc_text(n) for n in prefix if n.type in COMMENTS]),
        signature=_collapse(_text(node))[:120],
        attributes=tuple(_text(n) for n in prefix if n.type == "attribute_item"),
    )


def _macro_items(source: bytes, node: Node) -> list[Node] | None:
    """Parse a macro call's token tree again as items (tokio's `cfg_net! { pub fn ... }`).

    tree-sitter leaves a macro body as a token tree. Parsing the same bytes restricted to
    the inside of the braces keeps the original positions. Returns None when the body is not
    cleanly a list of items, so the call is kept as one chunk instead.
    """
    body = next((c for c in node.children if c.type == "token_tree"), None)
    if body is None or body.end_byte - body.start_byte < 3:
        return None
    inner = Range(
        (body.start_point[0], body.start_point[1] + 1),
        (body.end_point[0], max(body.end_point[1] - 1, 0)),
        body.start_byte + 1,
        body.end_byte - 1,
    )
    root = Parser(RUST, included_ranges=[inner]).parse(source).root_node
    if root.has_error:
        return None
    children = list(root.children)
    if not any(c.type in ITEM_KINDS or c.type == "macro_invocation" for c in children):
        return None
    return children


def _child_scope(node: Node, item: Item, scope: _Scope) -> _Scope:
    if node.type == "mod_item":
        return _Scope(scope.module + (item.name,))
    if node.type == "trait_item":
        return _Scope(scope.module, item.name)
    return _Scope(scope.module, _impl_owner(node))


def _impl_owner(node: Node) -> str:
    """`impl<B: Backend> Tensor<B>` -> Tensor; `impl fmt::Display for Foo` -> <Foo as fmt::Display>."""
    type_node = node.child_by_field_name("type")
    type_name = _type_name(type_node) if type_node is not None else "?"
    trait = node.child_by_field_name("trait")
    if trait is None:
        return type_name
    return f"<{type_name} as {_type_name(trait)}>"


def _impl_display_name(node: Node) -> str:
    type_node = node.child_by_field_name("type")
    type_name = _type_name(type_node) if type_node is not None else "?"
    trait = node.child_by_field_name("trait")
    return f"impl {_type_name(trait)} for {type_name}" if trait is not None else f"impl {type_name}"


def _type_name(node: Node) -> str:
    """A type without its generic arguments and references: `&'a mut Vec<T>` -> Vec."""
    while node.type in ("reference_type", "pointer_type", "generic_type", "bounded_type"):
        inner = node.child_by_field_name("type")
        if inner is None:
            break
        node = inner
    return re.sub(r"<.*", "", _collapse(_text(node))) or "?"


def _signature(node: Node) -> str:
    body = node.child_by_field_name("body")
    if body is None and node.type in ("struct_item", "union_item", "enum_item"):
        body = next((c for c in node.children if c.type.endswith("_list")), None)
    end = body.start_byte if body is not None else node.end_byte
    return _collapse(node.text[: end - node.start_byte].decode("utf-8", "replace")).rstrip(" {;")[:300]


def _elision(source: bytes, node: Node, prefix: list[Node], signature: str) -> tuple[int, int, str]:
    """Replace a child item in its container's text by its signature: the child is its own chunk."""
    start = prefix[0].start_byte if prefix else node.start_byte
    has_body = node.child_by_field_name("body") is not None or node.type in ("struct_item", "enum_item", "union_item")
    replacement = f"{signature} {ELIDED}" if has_body else _collapse(_text(node))[:300]
    return start, node.end_byte, replacement


def _elide(container: Item, text_start: int, elisions: list[tuple[int, int, str]], source: bytes) -> str:
    """Rebuild the container's text with each child replaced by its one-line signature."""
    text_end = text_start + len(container.text.encode("utf-8"))
    out: list[bytes] = []
    cursor = text_start
    for start, end, replacement in sorted(elisions):
        if start < cursor or end > text_end:
            continue
        out.append(source[cursor:start])
        out.append(replacement.encode("utf-8"))
        cursor = end
    out.append(source[cursor:text_end])
    return b"".join(out).decode("utf-8", "replace")


def _file_module_item(source: bytes, module: tuple[str, ...], docs: list[str], reexports: list[Node]) -> Item | None:
    """The file's own module: its `//!` docs and `pub use` re-exports, searchable as one chunk."""
    if not docs and not reexports:
        return None
    lines = [f"//! {line}" if line else "//!" for line in "\n".join(docs).splitlines()]
    lines += [_collapse(_text(node)) for node in reexports]
    end_line = max([_end_line(node) for node in reexports] + [len(docs)]) if reexports else _doc_end_line(source)
    return Item(
        name=module[-1] if module else "crate",
        kind="module",
        qualified_name="::".join(module),
        local_name="",  # a file module's name is its file's name: not content, so not embedded
        start_line=1,
        end_line=max(end_line, 1),
        text="\n".join(lines),
        doc=_join_doc(*docs),
        signature=f"mod {module[-1] if module else 'crate'}",
    )


def _doc_end_line(source: bytes) -> int:
    last = 0
    for number, line in enumerate(source.decode("utf-8", "replace").splitlines(), start=1):
        if line.lstrip().startswith(("//!", "/*!")):
            last = number
    return last


# --- use declarations --------------------------------------------------------------------


def _use_paths(node: Node) -> list[str]:
    """`use a::{b, c::d as e, f::*};` -> ["a::b", "a::c::d as e", "a::f::*"]."""
    argument = node.child_by_field_name("argument")
    if argument is None:
        return []
    paths: list[str] = []
    stack: list[tuple[str, Node]] = [("", argument)]
    while stack:
        prefix, current = stack.pop()
        if current.type == "scoped_use_list":
            path_node = current.child_by_field_name("path")
            path = _text(path_node) if path_node is not None else ""
            new_prefix = f"{prefix}{path}::" if path else prefix
            use_list = current.child_by_field_name("list")
            if use_list is not None:
                stack.extend((new_prefix, child) for child in reversed(use_list.named_children))
        elif current.type == "use_list":
            stack.extend((prefix, child) for child in reversed(current.named_children))
        elif current.type in COMMENTS:
            continue
        else:
            paths.append(prefix + _collapse(_text(current)))
    return paths


# --- docs, attributes, text helpers ---------------------------------------------------------


def _doc_marker(node: Node) -> str | None:
    for child in node.children:
        if child.type == "outer_doc_comment_marker":
            return "outer"
        if child.type == "inner_doc_comment_marker":
            return "inner"
    return None


def _doc_text(node: Node) -> str:
    body = next((c for c in node.children if c.type == "doc_comment"), None)
    text = _text(body) if body is not None else ""
    if node.type == "block_comment":
        lines = [re.sub(r"^\s*\*?\s?", "", line) for line in text.splitlines()]
        return "\n".join(lines).strip()
    return text[1:].rstrip("\n") if text.startswith(" ") else text.rstrip("\n")


def _doc_attributes(prefix: list[Node]) -> str:
    """`#[doc = "..."]` attributes are doc comments too."""
    docs = []
    for node in prefix:
        if node.type == "attribute_item":
            match = re.match(r'#\s*\[\s*doc\s*=\s*"(.*)"\s*\]$', _text(node), re.S)
            if match:
                docs.append(match.group(1).strip())
    return _join_doc(*docs)


def _join_doc(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def _visibility(node: Node) -> str:
    vis = next((c for c in node.children if c.type == "visibility_modifier"), None)
    return _collapse(_text(vis)) if vis is not None else ""


def _first_child(node: Node, kind: str) -> Node | None:
    return next((c for c in node.children if c.type == kind), None)


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _end_line(node: Node) -> int:
    row, column = node.end_point
    return row + (1 if column > 0 else 0) if row > node.start_point[0] else row + 1


def _line_start(source: bytes, offset: int) -> int:
    return source.rfind(b"\n", 0, offset) + 1


def _line_text(source: bytes, start: int, end: int) -> str:
    """The item's text from the start of its first line, so indentation stays aligned."""
    return source[_line_start(source, start) : end].decode("utf-8", "replace")


def _error_lines(root: Node, limit: int = 20) -> list[int]:
    lines: list[int] = []
    stack = [root]
    while stack and len(lines) < limit:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            lines.append(node.start_point[0] + 1)
            continue
        stack.extend(child for child in reversed(node.children) if child.has_error or child.is_missing)
    return sorted(set(lines))


# --- module paths from the crate layout ------------------------------------------------------


def module_path(root: Path, rel_path: str) -> tuple[str, ...]:
    """Module path of a file from its crate's layout: `src/builder/command.rs` -> (clap, builder, command)."""
    path = PurePosixPath(rel_path)
    crate_dir, crate_name = _crate_of(root, path.parent.as_posix())
    inside = path.relative_to(crate_dir) if crate_dir else path
    parts = list(inside.with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
        if parts[:1] == ["bin"] and len(parts) >= 2:  # src/bin/tool.rs, src/bin/tool/main.rs: a binary crate
            return (parts[1],) + tuple(p for p in parts[2:] if p not in ("main", "mod"))
        if parts in (["lib"], ["main"]):
            return (crate_name,)
    elif parts and parts[0] in ("tests", "examples", "benches") and len(parts) >= 2:
        return tuple(p for p in parts[1:] if p not in ("main", "mod"))  # each is its own crate
    if parts and parts[-1] == "mod":
        parts = parts[:-1]
    return (crate_name, *parts)


@lru_cache(maxsize=4096)
def _crate_of(root: Path, rel_dir: str) -> tuple[str, str]:
    """The nearest directory at or above rel_dir (inside root) holding a Cargo.toml, and its crate name."""
    current = PurePosixPath(rel_dir)
    while True:
        manifest = root / current / "Cargo.toml"
        if manifest.is_file():
            return ("" if current == PurePosixPath(".") else current.as_posix()), _crate_name(manifest, current)
        if current == PurePosixPath(".") or current == current.parent:
            return "", _sanitize(root.name)
        current = current.parent


def _crate_name(manifest: Path, rel_dir: PurePosixPath) -> str:
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        name = data.get("lib", {}).get("name") or data.get("package", {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return _sanitize(name or manifest.parent.name)


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name) or "crate"
