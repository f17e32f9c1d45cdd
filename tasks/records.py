"""Typed records that flow forward through the DAG.

SourceFile -> ParsedFile (Items) -> Chunk -> EmbeddedBatch -> store writes.
Plain dataclasses: cheap to build by the ten thousand and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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

    def __str__(self) -> str:
        return f"{self.rel_path}: {self.reason}"


@dataclass(slots=True)
class Item:
    """One Rust item found by the parser."""

    name: str
    kind: str  # function, method, struct, enum, union, trait, impl, const, static, type, macro, module, macro_call
    qualified_name: str
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


@dataclass(slots=True)
class PreparedBatch:
    """A batch of files read, parsed, chunked and scanned: ready to embed."""

    files: list[SourceFile]
    chunks: list[Chunk]
    indexed: list[str]  # files whose chunks are in `chunks` (possibly none)
    skipped: list[FileIssue]  # files not indexed, with the reason
    warnings: list[FileIssue]  # indexed, but with a problem (syntax errors)
    secrets: list[SecretFinding]


@dataclass(slots=True)
class EmbeddedBatch:
    chunks: list[Chunk]
    vectors: np.ndarray  # float32, shape (len(chunks), dim), row i is chunks[i]
