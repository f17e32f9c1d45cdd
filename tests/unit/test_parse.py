from pathlib import Path

from tasks.parse import module_path, parse_file


def items_of(source: str, module=("demo",)):
    parsed = parse_file("src/x.rs", source.encode(), module)
    return parsed, {(item.kind, item.qualified_name): item for item in parsed.items}


def test_every_item_kind_with_qualified_names():
    _, items = items_of(
        """
pub struct S<T> { a: T }
enum E { A, B }
union U { a: u32, b: f32 }
pub trait T { fn sig(&self); fn with_default(&self) {} type Assoc; const K: u32; }
impl<B: Backend> Tensor<B> { pub fn new() -> Self { todo!() } const C: u8 = 1; type X = u8; }
impl fmt::Display for Foo<'_> { fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { Ok(()) } }
const C: u8 = 1;
static S2: u8 = 2;
type Alias = Vec<u8>;
macro_rules! my_macro { () => {} }
mod inner { pub(crate) fn nested() {} }
fn free() {}
"""
    )
    expected = {
        ("struct", "demo::S"), ("enum", "demo::E"), ("union", "demo::U"), ("trait", "demo::T"),
        ("method", "demo::T::sig"), ("method", "demo::T::with_default"), ("type", "demo::T::Assoc"),
        ("const", "demo::T::K"), ("impl", "demo::Tensor"), ("method", "demo::Tensor::new"),
        ("const", "demo::Tensor::C"), ("type", "demo::Tensor::X"), ("impl", "demo::<Foo as fmt::Display>"),
        ("method", "demo::<Foo as fmt::Display>::fmt"), ("const", "demo::C"), ("static", "demo::S2"),
        ("type", "demo::Alias"), ("macro", "demo::my_macro"), ("module", "demo::inner"),
        ("function", "demo::inner::nested"), ("function", "demo::free"),
    }  # fmt: skip
    assert set(items) == expected
    assert items[("impl", "demo::Tensor")].signature == "impl<B: Backend> Tensor<B>"
    assert items[("impl", "demo::<Foo as fmt::Display>")].name == "impl fmt::Display for Foo"
    assert items[("method", "demo::T::sig")].signature == "fn sig(&self)"
    assert items[("function", "demo::inner::nested")].visibility == "pub(crate)"


def test_doc_comments_attributes_and_line_ranges():
    _, items = items_of(
        """//! Module docs.

/// Line doc,
/// second line.
#[derive(Debug)]
#[repr(C)]
pub struct Documented;

/** Block doc. */
fn block() {}

#[doc = "Attribute doc."]
fn attr_doc() {}
"""
    )
    documented = items[("struct", "demo::Documented")]
    assert documented.doc == "Line doc,\nsecond line."
    assert documented.attributes == ("#[derive(Debug)]", "#[repr(C)]")
    assert (documented.start_line, documented.end_line) == (3, 7)  # from the first doc line
    assert items[("function", "demo::block")].doc == "Block doc."
    assert items[("function", "demo::attr_doc")].doc == "Attribute doc."
    assert items[("module", "demo")].doc == "Module docs."


def test_containers_do_not_repeat_their_members_bodies():
    _, items = items_of(
        """impl Engine {
    /// Starts the engine.
    pub fn start(&mut self) -> bool {
        let unique_body_marker = 1;
        unique_body_marker == 1
    }
}
"""
    )
    impl_text = items[("impl", "demo::Engine")].text
    method = items[("method", "demo::Engine::start")]
    assert "unique_body_marker" in method.text and "unique_body_marker" not in impl_text
    assert "pub fn start(&mut self) -> bool { ... }" in impl_text
    assert "Starts the engine" not in impl_text  # the member's doc lives in the member's chunk


def test_items_inside_macro_invocation_blocks():
    parsed, items = items_of(
        """cfg_net! {
    /// Binds a listener.
    pub fn bind(addr: &str) -> Listener { todo!() }
    pub struct Listener;
}
bitflags! { pub struct Flags: u32 { const A = 1; } }
"""
    )
    bind = items[("function", "demo::bind")]
    assert (bind.start_line, bind.end_line, bind.doc) == (2, 3, "Binds a listener.")
    assert ("struct", "demo::Listener") in items
    # A macro body that is not items is kept whole, searchable.
    assert "const A = 1" in items[("macro_call", "demo::bitflags!")].text
    assert parsed.error_lines == []


def test_syntax_errors_keep_recovered_items_and_report_lines():
    parsed, items = items_of(
        """fn before() {}
fn broken(x: u32 {
    let y = ;
}
fn after() {}
"""
    )
    assert ("function", "demo::before") in items and ("function", "demo::after") in items
    assert parsed.error_lines and all(2 <= line <= 3 for line in parsed.error_lines)


def test_use_paths_including_pub_use():
    parsed, items = items_of("use std::io::{self, Read as R};\npub use crate::a::{b::C, d::*};\nuse x;\n")
    assert parsed.uses == ["std::io::self", "std::io::Read as R", "pub crate::a::b::C", "pub crate::a::d::*", "x"]
    assert "pub use crate::a::{b::C, d::*};" in items[("module", "demo")].text


def test_deeply_nested_modules_do_not_overflow():
    depth = 2000
    source = "".join(f"mod m{i} {{\n" for i in range(depth)) + "fn deepest() {}\n" + "}\n" * depth
    parsed = parse_file("src/deep.rs", source.encode(), ("demo",))
    deepest = [item for item in parsed.items if item.name == "deepest"]
    assert len(deepest) == 1 and deepest[0].qualified_name.count("::") == depth + 1


def test_module_paths_from_crate_layout(tmp_path: Path):
    (tmp_path / "crates" / "engine").mkdir(parents=True)
    (tmp_path / "crates" / "engine" / "Cargo.toml").write_text('[package]\nname = "my-engine"\n')
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "top"\n')
    cases = {
        "src/lib.rs": ("top",),
        "src/main.rs": ("top",),
        "src/net/mod.rs": ("top", "net"),
        "src/net/tcp.rs": ("top", "net", "tcp"),
        "src/bin/tool.rs": ("tool",),
        "src/bin/tool/main.rs": ("tool",),
        "tests/smoke.rs": ("smoke",),
        "crates/engine/src/lib.rs": ("my_engine",),
        "crates/engine/src/render/mod.rs": ("my_engine", "render"),
    }
    for rel, expected in cases.items():
        assert module_path(tmp_path, rel) == expected, rel
