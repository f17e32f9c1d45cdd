"""The BM25 side: a Tantivy index of chunks with identifier-aware fields.

Identifiers are searchable whole and by their parts: `HashMap` as hashmap, hash, map;
`read_to_string` as read_to_string, read, to, string. Whole identifiers come from a regex
analyzer inside Tantivy; parts come from `identifier_parts`, the one function used both
when indexing and when querying. Queries are built term by term, never parsed, so no
user text can break them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import tantivy
from tantivy import Document, Filter, Index, Occur, Query, SchemaBuilder, TextAnalyzerBuilder, Tokenizer

from tasks.chunk import has_vector
from tasks.records import Chunk

SCHEMA_VERSION = 6  # of the whole index; 5: Tantivy without positions; 6: vectors in Qdrant Edge
IDENT_ANALYZER = "rci_ident"  # whole identifiers and numbers, lowercased
WORDS_ANALYZER = "rci_words"  # text already split by identifier_parts
DOC_ANALYZER = "rci_doc"  # English prose: lowercased, stop words dropped, stemmed

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CAMEL_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# Field boosts, chosen by tests/benchmarks/search_quality.py --tune: equal. A match in the
# item's own name already outscores one in its docs, and that one in its body, through BM25's
# length normalisation (a one-word field against a 50-word body) and because a name match
# also matches the body; boosting names on top (3/2/1.5/1/0.5) lowered hybrid MRR@10 on
# clap + regex from 0.613 to 0.595, and BM25's own from 0.530 to 0.469.
WEIGHTS = {"name": 1.0, "name_parts": 1.0, "doc": 1.0, "code": 1.0, "code_parts": 1.0, "context": 1.0}


def identifier_parts(text: str) -> list[str]:
    """Lowercased parts of every identifier: snake_case and CamelCase split, acronyms kept."""
    parts: list[str] = []
    for identifier in _IDENTIFIER.findall(text):
        for piece in identifier.split("_"):
            parts.extend(part.lower() for part in _CAMEL_PART.findall(piece))
    return parts


def whole_and_parts(text: str) -> list[str]:
    """Lowercased identifiers, then their parts: `ValueRange::new` -> valuerange, new, value, range, new."""
    return [identifier.lower() for identifier in _IDENTIFIER.findall(text)] + identifier_parts(text)


def _analyzers() -> dict[str, tantivy.TextAnalyzer]:
    return {
        IDENT_ANALYZER: TextAnalyzerBuilder(Tokenizer.regex(_IDENTIFIER.pattern))
        .filter(Filter.lowercase())
        .filter(Filter.remove_long(80))
        .build(),
        WORDS_ANALYZER: TextAnalyzerBuilder(Tokenizer.whitespace()).filter(Filter.remove_long(80)).build(),
        # Stop words dropped: "or" in `or_insert` must not match every doc that says "or".
        DOC_ANALYZER: TextAnalyzerBuilder(Tokenizer.simple())
        .filter(Filter.lowercase())
        .filter(Filter.stopword("english"))
        .filter(Filter.stemmer("english"))
        .build(),
    }


# Terms are indexed with their frequencies but not their positions: every query is built of
# term queries (build_query), none is a phrase, and BM25 needs only frequencies (the search
# evaluation, tests/benchmarks/search_quality.py, scored the same to the third decimal). Large
# corpus, Tantivy alone: 98 MB instead of 115, 25.5 s of CPU instead of 29.2; segments fill
# later, so its 245k chunks end in 7 segments of about 35k, and the merge that took eight of
# them into one (mapping the whole index, see commit()) does not come at this size.
INDEXED = "freq"


def _schema() -> tantivy.Schema:
    builder = SchemaBuilder()

    def text(name: str, stored: bool, tokenizer: str) -> None:
        builder.add_text_field(name, stored=stored, tokenizer_name=tokenizer, index_option=INDEXED)

    for raw in ("id", "item_id", "path", "symbol", "kind"):
        text(raw, True, "raw")
    text("name", True, IDENT_ANALYZER)
    text("name_parts", False, WORDS_ANALYZER)
    text("context", False, WORDS_ANALYZER)  # qualified path, whole + parts
    text("doc", True, DOC_ANALYZER)
    text("code", True, IDENT_ANALYZER)
    text("code_parts", False, WORDS_ANALYZER)
    for number in ("start_line", "end_line", "window", "windows", "item_start_line", "item_end_line"):
        builder.add_integer_field(number, stored=True)
    return builder.build()


@dataclass(frozen=True, slots=True)
class TantivyHit:
    id: str
    item_id: str
    path: str
    symbol: str
    name: str
    kind: str
    start_line: int
    end_line: int
    window: int
    windows: int
    item_start_line: int
    item_end_line: int
    doc: str
    code: str
    score: float


class TantivyStore:
    """One index directory. The writer is opened on first write and owned by the writing task."""

    def __init__(
        self, path: Path, writer_heap_bytes: int = 128_000_000, writer_threads: int = 1, starting_over: bool = False
    ):
        """`starting_over`: the caller is about to empty the index, so one written with another
        schema (an older version of this tool) is replaced instead of refused."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        try:
            self.index = Index(self.schema, path=str(self.path), reuse=True)
        except ValueError as error:
            if not (starting_over and "schema does not match" in str(error)):
                raise
            shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            self.index = Index(self.schema, path=str(self.path), reuse=True)
        self._analyzers = _analyzers()
        for name, analyzer in self._analyzers.items():
            self.index.register_tokenizer(name, analyzer)
        self._heap = writer_heap_bytes
        self._threads = writer_threads
        self._writer: tantivy.IndexWriter | None = None
        self.weights = dict(WEIGHTS)

    @classmethod
    def open_existing(cls, path: Path) -> TantivyStore:
        if not (Path(path) / "meta.json").is_file():
            raise FileNotFoundError(f"no Tantivy index at {path}")
        return cls(path)

    # --- writing ---------------------------------------------------------------------

    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            try:
                self._writer = self.index.writer(heap_size=self._heap, num_threads=self._threads)
            except ValueError as error:
                if "LockBusy" in str(error):
                    raise RuntimeError(
                        f"another process is writing the index at {self.path}; wait for it to finish"
                    ) from error
                raise
        return self._writer

    def add(self, chunks: Iterable[Chunk]) -> int:
        writer = self.writer
        count = 0
        for chunk in chunks:
            writer.add_document(
                Document(
                    id=chunk.id,
                    item_id=chunk.item_id,
                    path=chunk.rel_path,
                    symbol=chunk.qualified_name,
                    kind=chunk.kind,
                    name=chunk.name,
                    name_parts=" ".join(identifier_parts(chunk.name)),
                    context=" ".join(whole_and_parts(chunk.qualified_name)),
                    doc=chunk.doc,
                    code=chunk.code,
                    code_parts=" ".join(identifier_parts(chunk.code)),
                    start_line=chunk.start_line,
                    end_line=chunk.end_line,
                    window=chunk.window,
                    windows=chunk.windows,
                    item_start_line=chunk.item_start_line,
                    item_end_line=chunk.item_end_line,
                )
            )
            count += 1
        return count

    def delete_files(self, rel_paths: Iterable[str]) -> None:
        writer = self.writer
        for rel_path in rel_paths:
            writer.delete_documents_by_term("path", rel_path)

    def delete_all(self) -> None:
        self.writer.delete_all_documents()

    def commit(self) -> None:
        """Commit, wait for the segment merges the commit started, and release the writer.

        Waiting makes the end state certain (the merged segments are in the index when the run
        ends, not dropped with the writer halfway). A merge reads its segments through mmap, and
        when eight segments of the largest size meet, it maps the whole index (the large corpus,
        indexed with positions: 242k documents, 115 MB, about 5 s); so the run frees the rest of
        its memory first (IndexSession.release_batch_resources).
        """
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()  # consumes the writer (and frees its lock)
            self._writer = None
        self.index.reload()

    def close(self) -> None:
        """Release the writer's lock (uncommitted changes are dropped)."""
        if self._writer is not None:
            self._writer.rollback()
            self._writer = None

    # --- reading ---------------------------------------------------------------------

    def count(self) -> int:
        self.index.reload()
        return self.index.searcher().num_docs

    def ids(self, with_vectors: bool = False) -> set[str]:
        """Every chunk id in the index, or only those of chunks with a vector (for consistency checks)."""
        self.index.reload()
        searcher = self.index.searcher()
        if searcher.num_docs == 0:
            return set()
        result = searcher.search(Query.all_query(), limit=searcher.num_docs)
        docs = (searcher.doc(address) for _, address in result.hits)
        return {
            doc["id"][0] for doc in docs
            if not with_vectors or has_vector(doc["kind"][0], doc["name"][0], doc["window"][0])
        }  # fmt: skip

    def by_ids(self, ids: list[str]) -> dict[str, TantivyHit]:
        """The chunks with these ids (what a vector hit shows comes from here)."""
        if not ids:
            return {}
        hits = self._run(Query.term_set_query(self.schema, "id", list(ids)), limit=len(ids))
        return {hit.id: hit for hit in hits}

    def named(self, name: str, parts: bool = True, limit: int = 100) -> list[TantivyHit]:
        """Chunks of items named `name` (whole identifier, any case), then, with `parts`, of
        items whose name shares its parts (`get_matches` -> get, matches), by BM25."""
        clauses = [(Occur.Should, Query.boost_query(Query.term_query(self.schema, "name", name.lower()), 4.0))]
        if parts:
            for part in dict.fromkeys(identifier_parts(name)):
                clauses.append((Occur.Should, Query.term_query(self.schema, "name_parts", part)))
        return self._run(Query.boolean_query(clauses), limit)

    def mentioning(self, identifier: str, limit: int = 100) -> list[TantivyHit]:
        """Chunks whose code holds the identifier (any case), by BM25."""
        return self._run(Query.term_query(self.schema, "code", identifier.lower()), limit)

    def chunks_of_item(self, item_id: str) -> list[TantivyHit]:
        return self._run(Query.term_query(self.schema, "item_id", item_id), limit=10_000)

    def chunks_of(self, rel_path: str) -> list[TantivyHit]:
        return self._run(Query.term_query(self.schema, "path", rel_path), limit=100_000)

    def search(
        self, text: str, limit: int = 50, kinds: Iterable[str] | None = None, paths: Iterable[str] | None = None
    ) -> list[TantivyHit]:
        """Chunks matching `text`, best first; only of these kinds and in these files when given."""
        query = self.build_query(text)
        if query is None:
            return []
        clauses = [(Occur.Must, query)]
        kinds = list(kinds or [])
        if kinds:
            clauses.append((Occur.Must, Query.term_set_query(self.schema, "kind", kinds)))
        if paths is not None:
            clauses.append((Occur.Must, Query.term_set_query(self.schema, "path", list(paths))))
        return self._run(Query.boolean_query(clauses) if len(clauses) > 1 else query, limit)

    def build_query(self, text: str) -> Query | None:
        """A weighted OR of the query's identifiers, identifier parts and stemmed words."""
        clauses = []
        identifiers = self._analyzers[IDENT_ANALYZER].analyze(text)
        parts = identifier_parts(text)
        terms = {
            "name": identifiers,
            "code": identifiers,
            "name_parts": parts,
            "code_parts": parts,
            "context": whole_and_parts(text),
            "doc": self._analyzers[DOC_ANALYZER].analyze(text),
        }
        for field, tokens in terms.items():
            for token in dict.fromkeys(tokens):
                term = Query.term_query(self.schema, field, token)
                if self.weights[field] > 0:
                    clauses.append((Occur.Should, Query.boost_query(term, self.weights[field])))
        return Query.boolean_query(clauses) if clauses else None

    def _run(self, query: Query, limit: int) -> list[TantivyHit]:
        self.index.reload()
        searcher = self.index.searcher()
        hits = []
        for score, address in searcher.search(query, limit=limit).hits:
            doc = searcher.doc(address)
            hits.append(
                TantivyHit(
                    id=doc["id"][0],
                    item_id=doc["item_id"][0],
                    path=doc["path"][0],
                    symbol=doc["symbol"][0],
                    name=doc["name"][0],
                    kind=doc["kind"][0],
                    start_line=doc["start_line"][0],
                    end_line=doc["end_line"][0],
                    window=doc["window"][0],
                    windows=doc["windows"][0],
                    item_start_line=doc["item_start_line"][0],
                    item_end_line=doc["item_end_line"][0],
                    doc=(doc["doc"] or [""])[0],
                    code=doc["code"][0],
                    score=float(score),
                )
            )
        return hits
