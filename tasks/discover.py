"""Find the `.rs` files of a code base.

Honours `.gitignore` and `.ignore` files at every level with git's semantics (pathspec's
GitIgnoreSpec: negation, anchoring, directory-only patterns; a deeper file overrides a
shallower one, and nothing inside an ignored directory can be re-included), plus
`.git/info/exclude`. `target/` and `.git/` are never walked. Sensitive files are skipped
by precise rules. Symlinks are not followed, as git does not: a link's target inside the
root is found under its own path (not indexed twice), one outside is reported and skipped.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from tasks.records import FileIssue, SourceFile

ALWAYS_SKIPPED_DIRS = {".git", "target"}
IGNORE_FILES = (".gitignore", ".ignore")

# Folders that hold credentials: nothing under them is read.
# Hidden ones only: `src/secrets/` is a module name, not a credentials store.
SENSITIVE_DIRS = {".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store", ".secrets"}
# Key material and credential files, by exact name or glob on the file name. Matching is on
# names, never on "secret" appearing somewhere: src/security/secrets.rs is source code.
SENSITIVE_NAMES = (
    ".env", ".env.*", "*.env", ".envrc", ".netrc", ".pgpass", ".npmrc", ".pypirc", ".git-credentials",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks",
    "*.keystore", "*.asc", "*.gpg", "credentials", "credentials.json", "client_secret*.json",
    "service-account*.json", "*.tfvars", "*.tfstate",
)


class NoRustFiles(ValueError):
    """The directory holds no indexable .rs file: nothing to index, nothing created."""

    def __init__(self, root: Path):
        super().__init__(f"no .rs files to index under {root} (after .gitignore rules); pass a Rust code base's root")


@dataclass(slots=True)
class Discovery:
    root: Path
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[FileIssue] = field(default_factory=list)

    def require_files(self) -> Discovery:
        if not self.files:
            raise NoRustFiles(self.root)
        return self


def sensitive_reason(rel_path: str) -> str | None:
    """Why a path must never be read, or None. Exact names and folders, not substrings."""
    parts = rel_path.split("/")
    for folder in parts[:-1]:
        if folder in SENSITIVE_DIRS:
            return f"sensitive: inside a credentials folder ({folder}/)"
    name = parts[-1]
    for pattern in SENSITIVE_NAMES:
        if fnmatch.fnmatchcase(name, pattern):
            return f"sensitive: key or credentials file ({pattern})"
    return None


class _IgnoreRules:
    """The ignore files that apply to one directory, outermost first."""

    def __init__(self, specs: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()):
        self.specs = specs

    def add_dir(self, abs_dir: Path, rel_dir: str) -> _IgnoreRules:
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:
                lines += (abs_dir / name).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
        if not lines:
            return self
        return _IgnoreRules(self.specs + ((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)),))

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        verdict = False
        for base, spec in self.specs:
            relative = rel_path[len(base) + 1 :] if base else rel_path
            result = spec.check_file(relative + "/" if is_dir else relative)
            if result.include is not None:  # True: ignored; False: re-included by a `!` rule
                verdict = result.include
        return verdict


def discover(root: Path, max_file_bytes: int) -> Discovery:
    root = Path(root).resolve()
    found = Discovery(root)
    rules = _IgnoreRules()
    exclude = root / ".git" / "info" / "exclude"
    if exclude.is_file():
        rules = _IgnoreRules(((
            "", pathspec.GitIgnoreSpec.from_lines(exclude.read_text(encoding="utf-8", errors="replace").splitlines())
        ),))
    stack: list[tuple[Path, str, _IgnoreRules]] = [(root, "", rules)]
    while stack:
        abs_dir, rel_dir, rules = stack.pop()
        rules = rules.add_dir(abs_dir, rel_dir)
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as error:
            found.skipped.append(FileIssue(rel_dir or ".", f"unreadable folder: {error.strerror}"))
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError:
                if entry.name.endswith(".rs"):
                    found.skipped.append(FileIssue(rel, "broken symlink or unreadable entry"))
                continue
            is_dir = stat.S_ISDIR(info.st_mode)
            if is_dir and entry.name in ALWAYS_SKIPPED_DIRS:
                continue
            if not is_dir and not entry.name.endswith(".rs"):
                continue
            if rules.ignored(rel, is_dir):
                continue
            if entry.is_symlink():
                if not _inside(root, Path(entry.path)):
                    found.skipped.append(FileIssue(rel, "symlink pointing outside the code base"))
                continue
            if is_dir:
                if entry.name in SENSITIVE_DIRS:
                    found.skipped.append(FileIssue(rel + "/", "sensitive: credentials folder, not read"))
                    continue
                subdirs.append((Path(entry.path), rel, rules))
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            reason = sensitive_reason(rel)
            if reason:
                found.skipped.append(FileIssue(rel, reason))
            elif info.st_size > max_file_bytes:
                found.skipped.append(
                    FileIssue(rel, f"too large ({info.st_size:,} bytes > {max_file_bytes:,}; RCI_MAX_FILE_BYTES)")
                )
            else:
                found.files.append(SourceFile(rel, Path(entry.path), info.st_size, info.st_mtime_ns))
        stack.extend(reversed(subdirs))
    found.files.sort(key=lambda f: f.rel_path)
    return found


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False
