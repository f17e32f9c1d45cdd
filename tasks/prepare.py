"""Read, parse, chunk and scan a batch of files: everything before embedding.

One bad file never stops a batch: it is skipped with its reason. A file with syntax
errors is indexed with the items tree-sitter recovered, and reported as a warning.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from tasks import stopping
from tasks.chunk import Chunker
from tasks.parse import module_path, parse_file
from tasks.records import FileIssue, PreparedBatch, SourceFile
from tasks.secrets import withhold_secrets


def read_source(source: SourceFile) -> tuple[bytes | None, FileIssue | None]:
    """The file's bytes if they are UTF-8 text, else why not."""
    try:
        data = source.abs_path.read_bytes()
    except OSError as error:
        return None, FileIssue(source.rel_path, f"unreadable: {error.strerror or error}")
    if b"\x00" in data[:8192]:
        return None, FileIssue(source.rel_path, "binary file (NUL bytes), not Rust source", retry=False)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        reason = f"not valid UTF-8 (byte 0x{data[error.start]:02x} on line {line}); save it as UTF-8"
        return None, FileIssue(source.rel_path, reason, retry=False)
    return data, None


def prepare_batch(files: Sequence[SourceFile], root: Path, chunker: Chunker) -> PreparedBatch:
    seconds = {"read": 0.0, "parse": 0.0, "chunk": 0.0, "secrets": 0.0}
    batch = PreparedBatch(list(files), seconds=seconds)
    for source in files:
        stopping.check()
        started = time.perf_counter()
        data, problem = read_source(source)
        seconds["read"] += time.perf_counter() - started
        if problem is not None:
            batch.skipped.append(problem)
            continue
        started = time.perf_counter()
        parsed = parse_file(source.rel_path, data, module_path(root, source.rel_path))
        seconds["parse"] += time.perf_counter() - started
        if parsed.error_lines:
            lines = ", ".join(map(str, parsed.error_lines[:5])) + (", ..." if len(parsed.error_lines) > 5 else "")
            batch.warnings.append(
                FileIssue(
                    source.rel_path,
                    f"syntax errors at line {lines}; indexed the {len(parsed.items)} items tree-sitter recovered",
                )
            )
        started = time.perf_counter()
        chunks = chunker.chunks_for(parsed)
        seconds["chunk"] += time.perf_counter() - started
        started = time.perf_counter()
        kept, findings = withhold_secrets(chunks)
        seconds["secrets"] += time.perf_counter() - started
        batch.chunks.extend(kept)
        batch.secrets.extend(findings)
        batch.indexed.append(source.rel_path)
    return batch
