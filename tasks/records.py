"""Typed records that flow forward through the DAG.

SourceFile -> ParsedFile (Items) -> Chunk -> EmbeddedBatch -> store writes.
Plain dataclasses: cheap to build by the ten thousand and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A `.rs` file found under the code base root."""

    rel_path: str  # POSIX path relative to the root: the file's identity everywhere
    abs_path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class FileIssue:
    """Why a file was skipped (not indexed) or indexed with a warning."""

    rel_path: str
    reason: str
    # False when the file's content alone decides the failure (binary, invalid UTF-8): it is
    # not read again until it changes. True for failures that may pass (unreadable).
    retry: bool = True

    def __str__(self) -> str:
        return f"{self.rel_path}: {self.reason}"


@dataclass(slots=True)
class Item:
    """One Rust item found by the parser."""

    name: str
    kind: str  # function, method, struct, enum, union, trait, impl, const, static, type, macro, module, macro_call
    qualified_name: str  # module path from the crate layout, then owner and name: demo::net::Client::connect
    local_name: str  # without the module path, so a moved file keeps it: Client::connect
    start_line: int  # 1-based, inclusive; starts at the item's first doc comment or attribute
    end_line: int
    text: str  # source of the item; containers have their children's bodies elided
    doc: str = ""
    signature: str = ""
    visibility: str = ""
    attributes: tuple[str, ...] = ()


@dataclass(slots=True)
class ParsedFile:
    rel_path: str
    items: list[Item]
    uses: list[str] = field(default_factory=list)  # `use` paths, `pub use` marked with a leading "pub "
    error_lines: list[int] = field(default_factory=list)  # lines tree-sitter could not parse


@dataclass(frozen=True, slots=True)
class Chunk:
    """What both stores hold for one item, or one window of a long item."""

    id: str  # deterministic UUID: same input, same id, in Tantivy and in Qdrant
    item_id: str  # shared by the windows of one item
    rel_path: str
    qualified_name: str
    name: str
    kind: str
    start_line: int
    end_line: int
    window: int  # 0-based window index within the item
    windows: int  # how many windows the item was cut into
    item_start_line: int  # the whole item's lines: search shows the item, not the window
    item_end_line: int
    doc: str
    code: str  # the source text this chunk covers
    embed_text: str  # context header + code: what the model sees
    n_tokens: int  # model tokens of embed_text, for length-sorted batching


@dataclass(frozen=True, slots=True)
class SecretFinding:
    rel_path: str
    line: int
    kind: str  # e.g. "AWS access key id"; never the secret itself

    def __str__(self) -> str:
        return f"{self.rel_path}:{self.line} ({self.kind})"


class PreparedBatch:
    """A batch of files read, parsed, chunked and scanned: ready to embed.

    This and EmbeddedBatch are plain classes on purpose: Prefect walks dataclass task
    parameters field by field looking for futures (70 ms for a 2,000-chunk batch, several
    times per task call); a plain object is handed over as it is.
    """

    __slots__ = ("files", "chunks", "indexed", "skipped", "warnings", "secrets", "seconds")

    def __init__(
        self,
        files: list[SourceFile],
        chunks: list[Chunk] | None = None,
        indexed: list[str] | None = None,  # files whose chunks are in `chunks` (possibly none)
        skipped: list[FileIssue] | None = None,  # files not indexed, with the reason
        warnings: list[FileIssue] | None = None,  # indexed, but with a problem (syntax errors)
        secrets: list[SecretFinding] | None = None,
        seconds: dict[str, float] | None = None,  # read, parse, chunk, secrets
    ):
        self.files = files
        self.chunks = chunks if chunks is not None else []
        self.indexed = indexed if indexed is not None else []
        self.skipped = skipped if skipped is not None else []
        self.warnings = warnings if warnings is not None else []
        self.secrets = secrets if secrets is not None else []
        self.seconds = seconds if seconds is not None else {}

    def __getstate__(self):  # picklable across the parse worker processes
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)


class EmbeddedBatch:
    """A prepared batch whose every chunk with a vector (tasks.chunk.has_vector) has it in the embedding cache.

    The vectors wait there, not here, until the writer reads them a slice at a time: batches
    queue between embed and write (a warm run embeds faster than it writes), and one of 10k
    chunks (the large corpus has them) would hold 15 MB of vectors.
    """

    __slots__ = ("prepared", "keys", "embedded", "reused", "tokens", "seconds")

    def __init__(
        self,
        prepared: PreparedBatch,
        keys: list[bytes],  # row i: the cache key of the vector of the i-th chunk with_vectors(prepared.chunks)
        embedded: int = 0,  # texts the model embedded for this batch
        reused: int = 0,  # chunks whose vector came from the cache (or repeated a text of this batch)
        tokens: int = 0,  # model tokens of the texts embedded
        seconds: dict[str, float] | None = None,  # cache, embed
    ):
        self.prepared = prepared
        self.keys = keys
        self.embedded = embedded
        self.reused = reused
        self.tokens = tokens
        self.seconds = seconds if seconds is not None else {}

    @property
    def chunks(self) -> list[Chunk]:
        return self.prepared.chunks
