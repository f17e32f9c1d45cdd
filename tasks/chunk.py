"""Cut parsed items into chunks: one per item, long items in line-aligned windows.

What the model sees is a short context header (kind, owner and name, first doc line)
then the code, its doc comments without their `///` and without the examples they fence
(model_lines). The header holds no file path or module path: the embedded text depends on
the item alone, so a moved or renamed file hits the embedding cache. Location is in the
BM25 fields and the payloads; BM25 and results keep every line as written. Items longer than
the model's trained input are cut into windows with a small overlap, each carrying the header:
nothing is silently truncated. BM25 holds every chunk; the model embeds those has_vector picks.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from tasks.records import Chunk, Item, ParsedFile

CHUNKER_VERSION = 4  # bump when chunk texts or ids change, or which chunks have vectors: the manifest asks for a rebuild

# The tokenizer keeps a few hundred bytes per token while it encodes: one call on a 600 KB
# test-vector function peaked 205 MB above the parse. Token counts are therefore taken on at
# most COUNT_CHARS characters per call, and a longer text is judged by its prefix, which is
# enough to know it needs windows (sequoia-openpgp's dsa.rs: +205 MB and 2.0 s before, +0 MB and 1.3 s now).
COUNT_CHARS = 32_768


def stable_id(*parts: object) -> str:
    """A UUID derived from its parts: the same input always gives the same id (Qdrant needs UUIDs)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


_DOC_LINE = re.compile(r"^\s*(?:///|//!)(?!/) ?(.*)$")


def model_lines(text: str) -> list[str | None]:
    """What the model reads of each line of an item: a doc comment's words without `///` or `//!`,
    nothing of an example fenced in a doc comment (None), code as it is.

    Windows are still cut on the lines as written, so BM25's documents do not change; each
    window's embedded text is the shorter one (tests/benchmarks/README.md, "What the embedded
    text is worth": tokio's texts 18.5% fewer tokens, hybrid search within 0.005 or better on
    both halves of the search evaluation). Examples stay searchable by BM25.
    """
    lines: list[str | None] = []
    in_example = False
    for line in text.split("\n"):
        doc = _DOC_LINE.match(line)
        if doc is None:
            in_example = False  # the doc comment ended, whatever its fences said
            lines.append(line)
        elif doc.group(1).lstrip().startswith("```"):
            in_example = not in_example
            lines.append(None)
        else:
            lines.append(None if in_example else doc.group(1))
    return lines


def _joined(lines: list[str | None]) -> str:
    return "\n".join(line for line in lines if line is not None)


def context_header(item: Item) -> str:
    """`method Client::connect` and the first doc line: what the code alone may not say."""
    first_doc_line = next((line.strip() for line in item.doc.splitlines() if line.strip()), "")
    header = f"{item.kind} {item.local_name}".rstrip()
    return f"{header}\n{first_doc_line}" if first_doc_line else header


# The model embeds the first VECTOR_WINDOWS windows of an item; the rest of a very long item is in BM25
# alone (tokio: 4.5% fewer tokens; tests/benchmarks/README.md, "Fewer vectors, the same texts").
VECTOR_WINDOWS = 6


def has_vector(kind: str, name: str, window: int) -> bool:
    """Whether the model embeds this chunk. Not an inherent impl's: it lists its methods'
    signatures, and each method has a vector of its own (trait impls keep theirs); not an item's
    windows past VECTOR_WINDOWS. Both in BM25 as every chunk is."""
    return window < VECTOR_WINDOWS and not (kind == "impl" and " for " not in name)


def with_vectors(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The chunks the model embeds (has_vector), in order."""
    return [chunk for chunk in chunks if has_vector(chunk.kind, chunk.name, chunk.window)]


@dataclass(slots=True)
class _Piece:
    """A line, or a part of a line too long for one window."""

    line: int  # 0-based offset of the line in the item's text
    text: str
    tokens: int
    ends_line: bool
    whole: bool = True  # the whole line, not a part of one too long for a window


class Chunker:
    def __init__(self, tokenizer, max_tokens: int = 256, overlap_lines: int = 2):
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer` with truncation off
        self.max_tokens = max_tokens
        self.overlap_lines = overlap_lines

    def chunks_for(self, parsed: ParsedFile) -> list[Chunk]:
        items = [item for item in parsed.items if item.text.strip()]
        if not items:
            return []
        headers = [context_header(item) for item in items]
        texts = [f"{h}\n{item.text}" for h, item in zip(headers, items)]
        counts = self._count(texts, special=True, limit=self.max_tokens)
        seen: Counter[tuple[str, str]] = Counter()
        cut: list[tuple] = []  # (item, item_id, code, embedded text, window, windows, first, last, tokens or None)
        for item, header, n_tokens in zip(items, headers, counts):
            occurrence = seen[(item.kind, item.qualified_name)]
            seen[(item.kind, item.qualified_name)] += 1
            item_id = stable_id(parsed.rel_path, item.kind, item.qualified_name, occurrence)
            read = model_lines(item.text)
            if n_tokens <= self.max_tokens:
                model = _joined(read)
                counted = n_tokens if model == item.text else None  # no doc comment: already counted
                cut.append((item, item_id, item.text, f"{header}\n{model}", 0, 1, 0, None, counted))
                continue
            windows = self._windows(header, item.text, read)
            for index, (first, last, code, model) in enumerate(windows):
                cut.append((item, item_id, code, f"{header}\n{model}", index, len(windows), first, last, None))
        # Tokens of what the model reads, where it is not what was counted (doc comments, windows):
        # batching and the run's figures.
        tokens = [c[-1] for c in cut]
        recount = [i for i, n in enumerate(tokens) if n is None]
        for i, n in zip(recount, self._count([cut[i][3] for i in recount], special=True)):
            tokens[i] = n
        return [self._chunk(parsed.rel_path, *c[:-1], n) for c, n in zip(cut, tokens)]

    def _chunk(self, rel_path, item, item_id, code, embed_text, window, windows, first, last, n_tokens) -> Chunk:
        # Containers list their children as signatures, so their lines no longer match the
        # file's: their windows keep the container's whole range.
        lines_match = item.text.count("\n") == item.end_line - item.start_line
        start = item.start_line + first if lines_match and windows > 1 else item.start_line
        end = item.start_line + last if lines_match and windows > 1 else item.end_line
        return Chunk(
            id=stable_id(item_id, window),
            item_id=item_id,
            rel_path=rel_path,
            qualified_name=item.qualified_name,
            name=item.name,
            kind=item.kind,
            start_line=start,
            end_line=end,
            window=window,
            windows=windows,
            item_start_line=item.start_line,
            item_end_line=item.end_line,
            doc=item.doc if window == 0 else "",
            code=code,
            embed_text=embed_text,
            n_tokens=n_tokens,
        )

    def _windows(self, header: str, text: str, read: list[str | None]) -> list[tuple[int, int, str, str]]:
        """Line-aligned windows of at most max_tokens as written (header included): (first, last
        line offset, code, what the model reads of it)."""
        budget = max(self.max_tokens - self._count([header], special=True)[0] - 1, 8)
        lines = text.split("\n")
        pieces: list[_Piece] = []
        for offset, (line, tokens) in enumerate(zip(lines, self._count(lines, special=False, limit=budget))):
            if tokens <= budget:
                pieces.append(_Piece(offset, line, tokens, True))
            else:
                pieces.extend(self._split_line(offset, line, budget))
        windows: list[tuple[int, int, str, str]] = []
        start = 0
        while start < len(pieces):
            end, used = start, 0
            while end < len(pieces) and (used + pieces[end].tokens + 1 <= budget or end == start):
                used += pieces[end].tokens + 1  # +1: the newline between lines is roughly a token's worth
                end += 1
            chosen = pieces[start:end]
            body = "".join(p.text + ("\n" if p.ends_line else "") for p in chosen).rstrip("\n")
            model = _joined([read[p.line] if p.whole else p.text for p in chosen])
            windows.append((chosen[0].line, chosen[-1].line, body, model))
            if end >= len(pieces):
                break
            # Overlap: the next window repeats the last few whole lines of this one.
            overlap = min(self.overlap_lines, max(end - start - 1, 0))
            start = end - overlap if all(p.ends_line for p in pieces[end - overlap : end]) else end
        return windows

    def _split_line(self, offset: int, line: str, budget: int) -> list[_Piece]:
        """A line longer than a window (a long literal): cut at token boundaries.

        A line of more than COUNT_CHARS is encoded a part at a time, each part starting
        where the previous piece ended, so that memory stays bounded.
        """
        pieces = []
        start = 0
        while start < len(line):
            part = line[start : start + COUNT_CHARS]
            offsets = self.tokenizer.encode(part, add_special_tokens=False).offsets
            steps = range(0, max(len(offsets), 1), budget) if len(part) == len(line) - start else [0]
            for first in steps:
                if first + budget < len(offsets):
                    end = offsets[first + budget][0]
                    tokens = budget
                else:
                    end, tokens = len(part), len(offsets) - first
                piece_start = offsets[first][0] if first else 0
                pieces.append(_Piece(offset, part[piece_start:end], tokens, start + end >= len(line), whole=False))
            start += end
        return pieces

    def _count(self, texts: list[str], special: bool, limit: int | None = None) -> list[int]:
        """Token counts, encoding at most COUNT_CHARS characters per call.

        With `limit`, a text longer than COUNT_CHARS whose prefix already has more than
        `limit` tokens gets the prefix's count: all the caller needs to know is that it is over.
        """
        counts: list[int] = []
        group: list[str] = []
        group_chars = 0
        for text in texts:
            if len(text) > COUNT_CHARS:
                counts.extend(self._encoded_lengths(group, special))
                group, group_chars = [], 0
                prefix = self._encoded_lengths([text[:COUNT_CHARS]], special)[0]
                over = limit is not None and prefix > limit
                counts.append(prefix if over else self._encoded_lengths([text], special)[0])
                continue
            if group and group_chars + len(text) > COUNT_CHARS:
                counts.extend(self._encoded_lengths(group, special))
                group, group_chars = [], 0
            group.append(text)
            group_chars += len(text)
        counts.extend(self._encoded_lengths(group, special))
        return counts

    def _encoded_lengths(self, texts: list[str], special: bool) -> list[int]:
        if not texts:
            return []
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=special)]
