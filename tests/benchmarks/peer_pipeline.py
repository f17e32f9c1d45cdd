"""A peer to compare against: the pipeline a user would assemble with LlamaIndex.

IngestionPipeline of CodeSplitter(language="rust") with LlamaIndex's defaults, FastEmbedEmbedding
(all-MiniLM-L6-v2 from the same local folder the project loads, batches of 32) and
QdrantVectorStore on a local qdrant-client store; search is plain vector retrieval of the top k.
Needs the `peer` extra (llama-index-core, -embeddings-fastembed, -vector-stores-qdrant).

    .venv/bin/python tests/benchmarks/peer_pipeline.py tests/fixtures/demo_crate "parse a config"
    .venv/bin/python tests/benchmarks/peer_pipeline.py ROOT STORE --index-only   # what bench_peer.py times
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tree_sitter_rust
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import CodeSplitter
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from llama_index.embeddings.fastembed import FastEmbedEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient
from tree_sitter import Language, Parser

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
COLLECTION = "peer"
MAX_TOKENS = 256  # the model truncates its input here, so tokens past it are never embedded
LINE_KEYS = ["start_line", "end_line"]


def rust_files(root: Path) -> list[Path]:
    """Every .rs file under root, sorted, leaving out target/ and hidden folders."""
    return sorted(
        path
        for path in root.rglob("*.rs")
        if path.is_file()
        and not any(part == "target" or part.startswith(".") for part in path.relative_to(root).parts[:-1])
    )


def rust_parser() -> Parser:
    """A tree-sitter parser from the project's own grammar, so no grammar pack is needed."""
    return Parser(Language(tree_sitter_rust.language()))


def embedder(model_folder: Path, batch_size: int = 32) -> FastEmbedEmbedding:
    """FastEmbedEmbedding on the local model folder; `specific_model_path` passes through to fastembed."""
    return FastEmbedEmbedding(model_name=MODEL_NAME, specific_model_path=str(model_folder), embed_batch_size=batch_size)


class LineSpans(TransformComponent):
    """Stores each node's 1-based start and end lines in its metadata, kept out of the embedded text."""

    texts: dict[str, str]  # document id -> document text, to turn character offsets into lines

    def __call__(self, nodes: list[BaseNode], **kwargs: Any) -> list[BaseNode]:
        for node in nodes:
            text = self.texts[node.ref_doc_id]
            start = node.start_char_idx or 0
            end = node.end_char_idx if node.end_char_idx is not None else len(text)
            node.metadata["start_line"] = text.count("\n", 0, start) + 1
            node.metadata["end_line"] = text.count("\n", 0, max(start, end - 1)) + 1
            # LlamaIndex embeds metadata with the text: line numbers would change what the peer embeds.
            node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, *LINE_KEYS]
            node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, *LINE_KEYS]
        return nodes


def index_with_llamaindex(root: Path, store_dir: Path, model_folder: Path, batch_size: int = 32) -> dict:
    """Index every Rust file under root into a local Qdrant store at store_dir; returns counts."""
    from tokenizers import Tokenizer

    parser = rust_parser()
    documents, unparsed = [], 0
    for path in rust_files(root):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        children = parser.parse(text.encode("utf-8")).root_node.children
        # CodeSplitter raises (and so stops the whole pipeline) when a file's first node is an ERROR.
        if children and children[0].type == "ERROR":
            unparsed += 1
            continue
        documents.append(Document(text=text, id_=rel, metadata={"file": rel}))

    client = QdrantClient(path=str(store_dir))
    try:
        pipeline = IngestionPipeline(
            transformations=[
                CodeSplitter(language="rust", parser=parser),
                LineSpans(texts={doc.doc_id: doc.text for doc in documents}),
                embedder(model_folder, batch_size),
            ],
            vector_store=QdrantVectorStore(collection_name=COLLECTION, client=client),
        )
        nodes = pipeline.run(documents=documents)
    finally:
        client.close()

    tokenizer = Tokenizer.from_file(str(Path(model_folder) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # Counts what FastEmbedEmbedding was given: the node text with its embed metadata ("file: ...").
    tokens = sum(
        min(len(enc.ids), MAX_TOKENS)
        for enc in tokenizer.encode_batch([node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes])
    )
    return {"files": len(documents), "files_unparsed": unparsed, "chunks": len(nodes), "tokens_embedded": tokens}


class PeerSearcher:
    """Vector retrieval over an index `index_with_llamaindex` built, opened once for many queries."""

    def __init__(self, store_dir: Path, model_folder: Path):
        self.client = QdrantClient(path=str(store_dir))
        store = QdrantVectorStore(collection_name=COLLECTION, client=self.client)
        self.index = VectorStoreIndex.from_vector_store(store, embed_model=embedder(model_folder))

    def search(self, query: str, k: int = 10) -> list[tuple[str, int, int]]:
        """The top k nodes for query, as (relative file, start line, end line)."""
        hits = self.index.as_retriever(similarity_top_k=k).retrieve(query)
        return [(hit.node.metadata["file"], int(hit.node.metadata["start_line"]), int(hit.node.metadata["end_line"])) for hit in hits]

    def close(self) -> None:
        self.client.close()


def model_folder() -> Path:
    """The folder rci loads all-MiniLM-L6-v2 from: the peer uses the very same files."""
    from tasks.embed import resolve_model
    from tasks.settings import load_settings

    return resolve_model(load_settings()).folder


def main(argv: list[str]) -> None:
    """`ROOT STORE`: index ROOT into STORE and print the counts as JSON (what bench_peer.py times);
    `ROOT QUERY`: index into a temporary store and print the top 5 hits for QUERY."""
    root, second = Path(argv[0]), argv[1]
    if len(argv) > 2 and argv[2] == "--index-only":
        print(json.dumps(index_with_llamaindex(root, Path(second), model_folder())))
        return
    with tempfile.TemporaryDirectory(prefix="peer-qdrant-") as store:
        started = time.perf_counter()
        counts = index_with_llamaindex(root, Path(store), model_folder())
        counts["index_seconds"] = round(time.perf_counter() - started, 2)
        print(json.dumps(counts))
        searcher = PeerSearcher(Path(store), model_folder())
        try:
            for file, start, end in searcher.search(second, k=5):
                print(f"{file}:{start}-{end}")
        finally:
            searcher.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1:])
