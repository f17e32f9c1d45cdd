from pathlib import Path

import pytest

import tasks.chunk
from tasks.chunk import VECTOR_WINDOWS, Chunker, context_header, model_lines, with_vectors
from tasks.parse import module_path, parse_file

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "demo_crate"


@pytest.fixture(scope="module")
def chunker(embedder):
    return Chunker(embedder.tokenizer(), max_tokens=256, overlap_lines=2)


def chunks_of(chunker, rel: str):
    source = (FIXTURE / rel).read_bytes()
    return chunker.chunks_for(parse_file(rel, source, module_path(FIXTURE, rel)))


def test_one_chunk_per_item_with_context_header(chunker):
    chunks = {c.qualified_name: c for c in chunks_of(chunker, "src/net.rs")}
    upload = chunks["demo_tensor::net::retry_failed_upload"]
    assert upload.windows == 1 and upload.kind == "function"
    assert upload.embed_text.startswith(
        "function retry_failed_upload\n"
        "Sends a file to the server again after a failure, waiting twice as long after each attempt.\n"
    )
    # The model reads the doc comment's words and the code; BM25 and results keep the lines as written.
    assert upload.embed_text.endswith("\nSends a file to the server again after a failure, waiting twice as long after "
                                      "each attempt.\n" + upload.code.split("\n", 1)[1])  # fmt: skip
    assert upload.code.startswith("/// Sends a file") and upload.code.rstrip().endswith("}")
    assert (upload.start_line, upload.end_line) == (7, 15)


def test_token_counts_are_of_what_the_model_reads(chunker, embedder):
    counter = embedder.tokenizer()
    chunks = [c for rel in ("src/net.rs", "src/lib.rs", "src/long.rs") for c in chunks_of(chunker, rel)]
    assert any("///" in c.code for c in chunks) and any("///" not in c.code for c in chunks)
    assert all(c.n_tokens == len(counter.encode(c.embed_text).ids) for c in chunks)


def test_ids_are_deterministic_and_unique(chunker):
    first = chunks_of(chunker, "src/lib.rs")
    second = chunks_of(chunker, "src/lib.rs")
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)


def test_duplicate_names_get_distinct_ids(chunker):
    source = b"#[cfg(unix)]\nfn sys() {}\n#[cfg(windows)]\nfn sys() {}\n"
    chunks = chunker.chunks_for(parse_file("src/sys.rs", source, ("demo",)))
    assert len(chunks) == 2 and chunks[0].id != chunks[1].id


def test_long_item_is_windowed_without_losing_a_line(chunker, embedder):
    windows = [c for c in chunks_of(chunker, "src/long.rs") if c.name == "opcode_name"]
    assert len(windows) >= 2
    assert [w.window for w in windows] == list(range(len(windows)))
    assert {w.windows for w in windows} == {len(windows)} and len({w.item_id for w in windows}) == 1
    counter = embedder.tokenizer()
    for window in windows:
        assert len(counter.encode(window.embed_text).ids) <= 256  # within the model's trained input
        assert window.embed_text.startswith("function opcode_name\nHuman-readable name of a virtual machine opcode.\n")
    # Every source line is in some window, and consecutive windows overlap.
    source_lines = (FIXTURE / "src/long.rs").read_text().splitlines()
    covered = {line for w in windows for line in range(w.start_line, w.end_line + 1)}
    assert covered == set(range(1, len(source_lines) + 1))
    assert all(a.end_line >= b.start_line for a, b in zip(windows, windows[1:]))
    assert any('255 => "halt_and_catch_fire"' in w.code for w in windows)
    for w in windows:  # each window's text is exactly its lines
        assert w.code == "\n".join(source_lines[w.start_line - 1 : w.end_line])
    assert windows[0].doc and not windows[1].doc


def test_a_single_huge_line_is_split_not_truncated(embedder):
    chunker = Chunker(embedder.tokenizer(), max_tokens=64, overlap_lines=1)
    words = " ".join(f"word{i}" for i in range(400))
    source = f'const TABLE: &str = "{words}";\n'.encode()
    chunks = chunker.chunks_for(parse_file("src/t.rs", source, ("demo",)))
    assert len(chunks) > 3
    joined = "".join(c.code for c in chunks)
    assert "word0 " in joined and "word399" in joined
    assert all(len(embedder.tokenizer().encode(c.embed_text).ids) <= 64 for c in chunks)


def test_a_line_longer_than_one_tokenizer_call_is_split_in_parts(embedder, monkeypatch):
    """Lines over COUNT_CHARS are encoded a part at a time; no character is lost or repeated."""
    monkeypatch.setattr(tasks.chunk, "COUNT_CHARS", 300)
    chunker = Chunker(embedder.tokenizer(), max_tokens=64, overlap_lines=1)
    line = 'const TABLE: &str = "' + " ".join(f"word{i}" for i in range(400)) + '";'
    chunks = chunker.chunks_for(parse_file("src/t.rs", f"{line}\n".encode(), ("demo",)))
    assert len(chunks) > 10
    assert "".join(c.code for c in chunks) == line
    assert all(len(embedder.tokenizer().encode(c.embed_text).ids) <= 64 for c in chunks)


def test_counting_a_part_at_a_time_changes_no_chunk(embedder, monkeypatch):
    """Bounded tokenizer calls (for memory) must cut exactly the chunks one call would."""
    chunker = Chunker(embedder.tokenizer(), max_tokens=64, overlap_lines=2)
    whole = [chunks_of(chunker, rel) for rel in ("src/long.rs", "src/net.rs", "src/lib.rs")]
    monkeypatch.setattr(tasks.chunk, "COUNT_CHARS", 200)
    parts = [chunks_of(chunker, rel) for rel in ("src/long.rs", "src/net.rs", "src/lib.rs")]
    assert parts == whole


def test_context_header_holds_no_location(chunker):
    source = b"impl Client {\n    /// First line.\n    /// Second.\n    fn connect(&self) {}\n}\n"
    method = next(i for i in parse_file("src/net/a.rs", source, ("demo", "net", "a")).items if i.kind == "method")
    assert context_header(method) == "method Client::connect\nFirst line."


def test_moving_a_file_keeps_every_embedded_text(chunker):
    """The embedding cache is keyed by the embedded text: a moved file must not change it."""
    source = (FIXTURE / "src/net.rs").read_bytes()
    here = chunker.chunks_for(parse_file("src/net.rs", source, ("demo_tensor", "net")))
    moved = chunker.chunks_for(parse_file("src/io/transport.rs", source, ("demo_tensor", "io", "transport")))
    assert [c.embed_text for c in here] == [c.embed_text for c in moved]
    assert [c.qualified_name for c in here] != [c.qualified_name for c in moved]


def test_the_model_reads_doc_words_without_markers_and_without_examples():
    text = (
        "/// Joins two paths.\n"
        "///\n"
        "/// ```\n"
        "/// let p = join(a, b);\n"
        "/// ```\n"
        "/// Fails on `..`.\n"
        "//// not a doc comment\n"
        "pub fn join(a: &str, b: &str) -> String { format!(\"{a}/{b}\") } // ```\n"
        "//! Module docs, also read."
    )
    assert model_lines(text) == [
        "Joins two paths.", "", None, None, None, "Fails on `..`.", "//// not a doc comment",
        'pub fn join(a: &str, b: &str) -> String { format!("{a}/{b}") } // ```', "Module docs, also read.",
    ]  # fmt: skip
    # A fence a doc comment leaves open ends with the comment.
    assert model_lines("/// ```\n/// code\nfn f() {}") == [None, None, "fn f() {}"]


def test_windows_keep_every_line_and_the_model_reads_no_example(embedder):
    """An example in a long item's docs is in its windows' code (BM25) and never in what is embedded."""
    example = "\n".join(f"/// let value_{i} = compute({i});" for i in range(120))
    body = "\n".join(f"    total += step_{i}(x);" for i in range(120))
    source = f"/// Adds the steps.\n/// ```\n{example}\n/// ```\npub fn add_steps(x: u32) -> u32 {{\n    let mut total = 0;\n{body}\n    total\n}}\n"
    chunker = Chunker(embedder.tokenizer(), max_tokens=128, overlap_lines=1)
    windows = chunker.chunks_for(parse_file("src/steps.rs", source.encode(), ("demo",)))
    assert len(windows) > 2
    assert all(len(embedder.tokenizer().encode(w.embed_text).ids) <= 128 for w in windows)
    assert not any("compute(" in w.embed_text or "///" in w.embed_text for w in windows)
    assert "let value_119 = compute(119);" in "\n".join(w.code for w in windows)
    # Windows are cut on the lines as written (BM25's documents); those inside the example read the header alone.
    assert all(w.embed_text.startswith("function add_steps\nAdds the steps.\n") for w in windows)
    assert windows[0].embed_text == "function add_steps\nAdds the steps.\nAdds the steps."
    assert windows[1].embed_text == "function add_steps\nAdds the steps.\n"
    assert any("pub fn add_steps(x: u32) -> u32 {" in w.embed_text for w in windows)
    assert all(w.n_tokens == len(embedder.tokenizer().encode(w.embed_text).ids) for w in windows)
    lines = source.splitlines()
    covered = {line for w in windows for line in range(w.start_line, w.end_line + 1)}
    assert covered == set(range(1, len(lines) + 1))
    assert all(w.code == "\n".join(lines[w.start_line - 1 : w.end_line]) for w in windows)


def test_which_chunks_the_model_embeds(chunker):
    """A long item's first VECTOR_WINDOWS windows and no inherent impl (its methods have their own
    vectors); BM25 gets every chunk."""
    body = "\n".join(f"    total += step_{i}(x) * {i};" for i in range(600))
    source = (f"pub fn huge(x: u32) -> u32 {{\n    let mut total = 0;\n{body}\n    total\n}}\n"
              "pub struct Tensor;\nimpl Tensor {\n    pub fn zeros() -> Self { Tensor }\n}\n"
              "impl Clone for Tensor {\n    fn clone(&self) -> Self { Tensor }\n}\n")  # fmt: skip
    chunks = chunker.chunks_for(parse_file("src/huge.rs", source.encode(), ("demo",)))
    embedded = with_vectors(chunks)
    assert len([c for c in chunks if c.name == "huge"]) > VECTOR_WINDOWS
    assert [c.window for c in embedded if c.name == "huge"] == list(range(VECTOR_WINDOWS))
    assert {c.name for c in chunks if c.kind == "impl"} == {"impl Tensor", "impl Clone for Tensor"}
    assert {c.name for c in embedded if c.kind == "impl"} == {"impl Clone for Tensor"}
    assert {c.name for c in embedded if c.kind != "impl"} == {"huge", "Tensor", "zeros", "clone"}
