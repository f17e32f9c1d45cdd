"""Finding one's way in an indexed code base: definitions, references, an item's whole text, similar code.

Plain functions over a Searcher's open stores (tasks/search.py), for the MCP server's tools
and any other program. Everything comes from the index: no file is read from disk, so no
text outside the indexed code base and no chunk the secrets scanner withheld can come back.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from tasks.search import Searcher, SearchError, is_test_code
from tasks.tantivy_store import TantivyHit

CANDIDATES = 400  # chunks read from Tantivy before ranking and confirming


@dataclass(frozen=True, slots=True)
class Item:
    """One item of the code base as the index holds it."""

    file: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    signature: str  # its first line of code (after docs and attributes)
    stale: bool = False

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reference:
    item: Item
    lines: list[int] = field(default_factory=list)  # lines of the item where the identifier appears

    def to_json(self) -> dict:
        return {**self.item.to_json(), "lines": self.lines}


@dataclass(frozen=True, slots=True)
class ItemText:
    item: Item
    doc: str
    code: str  # the item's whole indexed text (a container lists its members' signatures)

    def to_json(self) -> dict:
        return {**self.item.to_json(), "doc": self.doc, "code": self.code}


def _last_identifier(symbol: str) -> str:
    """`clap::Command::get_matches` and `Command::get_matches()` -> `get_matches`."""
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", symbol)
    if not names:
        raise SearchError(f"{symbol!r} holds no identifier; give a name such as `get_matches` or `Command::new`")
    return names[-1]


def _signature(code: str) -> str:
    for line in code.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("///", "//!", "#[", "#![", "//")):
            return stripped[:200]
    return ""


def _items(searcher: Searcher, hits: list[TantivyHit]) -> dict[str, tuple[TantivyHit, Item]]:
    """First window of each item (by item id), in the order given, with its Item."""
    firsts: dict[str, TantivyHit] = {}
    for hit in hits:
        if hit.item_id not in firsts or hit.window < firsts[hit.item_id].window:
            firsts[hit.item_id] = hit
    stale = searcher.stale_files({hit.path for hit in firsts.values()})
    order = list(dict.fromkeys(hit.item_id for hit in hits))
    return {
        item_id: (firsts[item_id], _item(firsts[item_id], firsts[item_id].path in stale))
        for item_id in order
    }


def _item(hit: TantivyHit, stale: bool = False) -> Item:
    return Item(hit.path, hit.item_start_line, hit.item_end_line, hit.symbol, hit.kind, _signature(hit.code), stale)


def find_definition(searcher: Searcher, symbol: str, exact: bool = False, limit: int = 10) -> list[Item]:
    """Items named `symbol` (its last identifier, case-insensitively, or by its parts unless
    `exact`), best first: the qualified name ending as given, then the same spelling, then the
    same name in another case, then names that only share parts; code before tests, impls last."""
    searcher.refresh()
    name = _last_identifier(symbol)
    hits = searcher.tantivy.named(name, parts=not exact, limit=CANDIDATES)
    wanted = symbol.strip().rstrip("()").strip()
    ranked = []
    for _, (hit, item) in _items(searcher, hits).items():
        if hit.symbol == wanted or hit.symbol.endswith("::" + wanted):
            rank = 0
        elif hit.name == name:
            rank = 1
        elif hit.name.lower() == name.lower():
            rank = 2
        elif exact:
            continue
        else:
            rank = 3
        ranked.append(((rank, hit.kind == "impl", is_test_code(hit.path, hit.symbol)), item))
    ranked.sort(key=lambda pair: pair[0])  # stable: BM25 order within a rank
    return [item for _, item in ranked][:limit]


def find_references(searcher: Searcher, symbol: str, limit: int = 50) -> list[Reference]:
    """Items whose code uses the identifier: BM25 on the code's identifiers, each confirmed by
    the identifier itself (same spelling, whole word) on the lines given; its definitions
    (items of that name) are left out."""
    searcher.refresh()
    name = _last_identifier(symbol)
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    by_item: dict[str, list[TantivyHit]] = {}
    for hit in searcher.tantivy.mentioning(name, limit=CANDIDATES):
        by_item.setdefault(hit.item_id, []).append(hit)
    items = _items(searcher, [h for hits in by_item.values() for h in hits])
    found = []
    for item_id, (first, item) in items.items():
        if first.name == name:
            continue  # the definition itself
        lines = sorted({
            hit.start_line + offset
            for hit in by_item[item_id]
            for offset, line in enumerate(hit.code.splitlines())
            if word.search(line) and not line.lstrip().startswith("//")
        })  # fmt: skip
        if lines:
            found.append(Reference(item, lines))
    return found[:limit]


def read_item(searcher: Searcher, symbol: str | None = None, file: str | None = None, line: int | None = None) -> ItemText:
    """An item's whole text: by symbol (its best definition), or the item at file:line."""
    searcher.refresh()
    if symbol:
        definitions = find_definition(searcher, symbol, exact=True, limit=1) or find_definition(searcher, symbol, limit=1)
        if not definitions:
            raise SearchError(f"no item named {symbol!r} in the index; try find_definition or search")
        file, line = definitions[0].file, definitions[0].start_line
    if not file or line is None:
        raise SearchError("give a symbol, or a file and a line")
    chunk = item_at(searcher, file, line)
    windows = sorted(searcher.tantivy.chunks_of_item(chunk.item_id), key=lambda hit: hit.window)
    return ItemText(_item(windows[0], file in searcher.stale_files({file})), windows[0].doc, join_windows(windows))


def item_at(searcher: Searcher, file: str, line: int) -> TantivyHit:
    """The innermost indexed item covering file:line (a method rather than its impl)."""
    file = check_relative_path(file)
    covering = [
        hit for hit in searcher.tantivy.chunks_of(file) if hit.item_start_line <= line <= hit.item_end_line
    ]
    if not covering:
        if not searcher.tantivy.chunks_of(file):
            raise SearchError(f"{file} is not in the index (not a .rs file of this code base, skipped, or not indexed yet)")
        raise SearchError(f"no indexed item covers {file}:{line}")
    return min(covering, key=lambda hit: (hit.item_end_line - hit.item_start_line, hit.window))


def join_windows(windows: list[TantivyHit]) -> str:
    """One text from an item's windows, each line once (consecutive windows share lines)."""
    lines: dict[int, str] = {}
    for hit in windows:
        for offset, text in enumerate(hit.code.splitlines()):
            lines.setdefault(hit.start_line + offset, text)
    return "\n".join(lines[number] for number in sorted(lines))


def check_relative_path(file: str) -> str:
    """A path inside the code base, as the index names files: relative, no `..`."""
    clean = file.strip().replace("\\", "/")
    while clean.startswith("./"):
        clean = clean[2:]
    if not clean or clean.startswith("/") or ".." in clean.split("/"):
        raise SearchError(f"{file!r} is not a path inside the code base; give it relative to its root, e.g. src/lib.rs")
    return clean


def similar_items(searcher: Searcher, file: str | None = None, line: int | None = None, query: str | None = None,
                  limit: int = 10) -> list[Item]:  # fmt: skip
    """The items nearest by vector to the item at file:line (itself left out), or to a query."""
    searcher.refresh()
    if query:
        return [_as_item(r) for r in searcher.search(query, limit=limit, engine="vector")]
    if not file or line is None:
        raise SearchError("give a file and a line, or a query")
    chunk = item_at(searcher, file, line)
    vector = searcher.vector_of(chunk.id)
    if vector is None:  # a chunk the index holds no vector of (chunk.has_vector): embedded now
        vector = searcher.embedder.embed_query(f"{chunk.kind} {chunk.name}\n{chunk.code}")
    hits = searcher.nearest(vector, limit + 20)
    docs = searcher.tantivy.by_ids([hit.id for hit in hits])
    found = [docs[hit.id] for hit in hits if hit.id in docs and docs[hit.id].item_id != chunk.item_id]
    return [item for _, (_, item) in _items(searcher, found).items()][:limit]


def _as_item(result) -> Item:
    return Item(result.file, result.start_line, result.end_line, result.symbol, result.kind,
                _signature(result.snippet), result.stale)  # fmt: skip
