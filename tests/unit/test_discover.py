from pathlib import Path

import pytest

from tasks.discover import discover, sensitive_reason


def write(root: Path, rel: str, text: str = "fn f() {}\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def found(root: Path, max_bytes: int = 1 << 20) -> tuple[list[str], dict[str, str]]:
    result = discover(root, max_bytes)
    return [f.rel_path for f in result.files], {s.rel_path: s.reason for s in result.skipped}


def test_demo_crate_files_and_reasons(demo_crate):
    files, skipped = found(demo_crate)
    assert files == [
        "gen/keep.rs",
        "src/backend.rs",
        "src/blob.rs",
        "src/broken.rs",
        "src/config.rs",
        "src/latin1.rs",
        "src/lib.rs",
        "src/long.rs",
        "src/net.rs",
        "src/security/mod.rs",
        "src/security/secrets.rs",
    ]
    assert skipped[".aws/"].startswith("sensitive")
    assert "broken symlink" in skipped["src/dangling.rs"]
    assert "outside the code base" in skipped["src/outside.rs"]
    # Ignored files and target/ are simply not there: not files of the code base at all.
    assert not any(p.startswith("target/") or p in ("generated.rs", "gen/other.rs") for p in skipped)


def test_gitignore_semantics_nested_negation_and_anchoring(tmp_path):
    write(tmp_path, ".gitignore", "*.gen.rs\n/top_only.rs\nbuild/\n!keep.gen.rs\n")
    for rel in ["a.gen.rs", "keep.gen.rs", "top_only.rs", "sub/top_only.rs", "build/x.rs", "sub/build/y.rs",
                "sub/z.rs", "sub/deeper/w.rs", "sub/deeper/local.rs"]:  # fmt: skip
        write(tmp_path, rel)
    # A deeper ignore file overrides a shallower one, relative to its own folder.
    write(tmp_path, "sub/.gitignore", "deeper/local.rs\n!a2.gen.rs\n")
    write(tmp_path, "sub/a2.gen.rs")
    write(tmp_path, "sub/.ignore", "z.rs\n")
    files, _ = found(tmp_path)
    assert files == ["keep.gen.rs", "sub/a2.gen.rs", "sub/deeper/w.rs", "sub/top_only.rs"]


def test_nothing_inside_an_ignored_directory_comes_back(tmp_path):
    write(tmp_path, ".gitignore", "vendor/\n!vendor/keep.rs\n")
    write(tmp_path, "vendor/keep.rs")
    write(tmp_path, "src/main.rs")
    assert found(tmp_path)[0] == ["src/main.rs"]  # git cannot re-include a file of an excluded folder


def test_git_info_exclude_is_honoured(tmp_path):
    write(tmp_path, ".git/info/exclude", "local.rs\n")
    write(tmp_path, "local.rs")
    write(tmp_path, "lib.rs")
    assert found(tmp_path)[0] == ["lib.rs"]


def test_target_and_git_are_never_walked_even_when_reincluded(tmp_path):
    write(tmp_path, ".gitignore", "!target/\n")
    write(tmp_path, "target/debug/build.rs")
    write(tmp_path, ".git/hooks/x.rs")
    write(tmp_path, "crates/a/target/gen.rs")
    write(tmp_path, "crates/a/src/lib.rs")
    assert found(tmp_path)[0] == ["crates/a/src/lib.rs"]


def test_size_cap_reports_the_setting(tmp_path):
    write(tmp_path, "big.rs", "x" * 2000)
    write(tmp_path, "small.rs", "fn a() {}")
    files, skipped = found(tmp_path, max_bytes=1000)
    assert files == ["small.rs"]
    assert "too large (2,000 bytes > 1,000" in skipped["big.rs"] and "RCI_MAX_FILE_BYTES" in skipped["big.rs"]


def test_symlinks_inside_root_are_not_indexed_twice_and_loops_end(tmp_path):
    write(tmp_path, "real/lib.rs")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "same.rs").symlink_to(tmp_path / "real" / "lib.rs")
    files, skipped = found(tmp_path)
    assert files == ["real/lib.rs"] and skipped == {}


def test_symlinked_file_outside_root_is_reported(tmp_path):
    write(tmp_path / "outside", "leak.rs")
    root = tmp_path / "root"
    write(root, "lib.rs")
    (root / "leak.rs").symlink_to(tmp_path / "outside" / "leak.rs")
    files, skipped = found(root)
    assert files == ["lib.rs"] and skipped == {"leak.rs": "symlink pointing outside the code base"}


def test_symlinked_folder_outside_root_is_not_walked(tmp_path):
    outside = tmp_path / "outside"
    write(outside, "secret_project.rs")
    root = tmp_path / "root"
    write(root, "lib.rs")
    (root / "elsewhere").symlink_to(outside)
    files, skipped = found(root)
    assert files == ["lib.rs"] and skipped == {"elsewhere": "symlink pointing outside the code base"}


@pytest.mark.parametrize(
    "path",
    ["src/security/secrets.rs", "src/secret_manager.rs", "src/secrets/mod.rs", "src/credentials.rs", "src/env.rs",
     "src/keys.rs", "src/token.rs"],  # fmt: skip
)
def test_source_files_named_like_secrets_are_not_sensitive(path):
    assert sensitive_reason(path) is None


@pytest.mark.parametrize(
    "path",
    [".env", ".env.production", "config/.env.local", "deploy/server.pem", "keys/id_rsa", "keys/id_ed25519.pub",
     "certs/client.p12", ".ssh/config.rs", "home/.aws/credentials", "infra/prod.tfvars", "secrets.key"],  # fmt: skip
)
def test_key_material_and_credential_files_are_sensitive(path):
    assert sensitive_reason(path) is not None
