"""Real Rust code bases from Debian's `librust-*-dev` packages, pinned by version.

`apt-get download PACKAGE=VERSION` fetches a package without installing it and `dpkg -x`
unpacks it; the crate's source lands under usr/share/cargo/registry/<crate>-<version>/.
Versions are Debian 12 (bookworm)'s. Corpora are assembled once under a work folder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# crate -> Debian version of librust-<crate>-dev
PACKAGES = {
    "regex": "1.7.1-1",
    "nom": "7.1.1-1",
    "tokio": "1.24.2-1",
    "clap": "4.0.32-1",
    "rayon": "1.6.1-1",
    "syn": "1.0.107-1",
    "hyper": "0.14.19-1",
    "tracing": "0.1.37-1",
    "serde": "1.0.152-2",
    "web-sys": "0.3.60-3",
    "cargo": "0.66.0-1",
    "winapi": "0.3.9-1+b1",
    "gtk": "0.14.3-1",
    "libc": "0.2.139-1",
    "rustix": "0.35.12-1",
    "gio": "0.14.8-1",
    "pyo3": "0.17.3-1",
    "futures-util": "0.3.21-1",
    "sequoia-openpgp": "1.12.0-2",
    "rav1e": "0.5.1-6",
    "cxx": "1.0.87-1",
}
MEDIUM = ["tokio", "clap", "rayon", "syn", "hyper", "regex", "nom", "tracing", "serde"]
CORPORA = {
    "small": ["regex", "nom"],  # 105 files
    "medium": MEDIUM,  # 979 files
    "large": MEDIUM + ["web-sys", "cargo", "winapi", "gtk", "libc", "rustix", "gio", "pyo3", "futures-util",
                       "sequoia-openpgp", "rav1e", "cxx"],  # 5,104 files  # fmt: skip
}


class CorpusError(RuntimeError):
    pass


def crate_source(crate: str, work: Path) -> Path:
    """The unpacked source folder of one pinned crate (downloaded and unpacked on first use)."""
    version = PACKAGES[crate]
    unpacked = work / "debs" / f"{crate}_{version}"
    if not unpacked.is_dir():
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        package = f"librust-{crate}-dev"
        for stale in debs.glob(f"{package}_*.deb"):
            stale.unlink()
        fetched = subprocess.run(
            ["apt-get", "download", f"{package}={version}"], cwd=debs, capture_output=True, text=True
        )
        found = list(debs.glob(f"{package}_*.deb"))
        if fetched.returncode != 0 or not found:
            raise CorpusError(
                f"could not download {package}={version} ({fetched.stderr.strip()[-300:]}); "
                "run `apt-get update` once, on a Debian 12 machine"
            )
        staging = unpacked.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(found[0]), str(staging)], check=True)
        staging.rename(unpacked)
    registry = unpacked / "usr" / "share" / "cargo" / "registry"
    folders = [p for p in registry.iterdir() if p.is_dir()]
    if len(folders) != 1:
        raise CorpusError(f"unexpected layout in {registry}")
    return folders[0]


def corpus(name: str, work: Path) -> Path:
    """A folder holding copies of the corpus's crates side by side (copies: symlinks are not followed)."""
    target = work / "corpora" / name
    done = target / ".complete"
    if done.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for crate in CORPORA[name]:
        source = crate_source(crate, work)
        shutil.copytree(source, target / source.name, symlinks=True)
    done.write_text("\n".join(f"{c}={PACKAGES[c]}" for c in CORPORA[name]) + "\n")
    return target


def embedded_texts(root: Path, chunker) -> dict[str, int]:
    """The distinct texts `rci index` of `root` embeds (chunks with a vector, secrets withheld),
    each with its token count: what the embed-only figures put through the model."""
    from tasks.chunk import with_vectors
    from tasks.discover import discover
    from tasks.parse import module_path, parse_file
    from tasks.prepare import read_source
    from tasks.secrets import withhold_secrets
    from tasks.settings import load_settings

    texts: dict[str, int] = {}
    for source in discover(root, load_settings().max_file_bytes).files:
        data, _ = read_source(source)
        if data is not None:
            kept, _ = withhold_secrets(chunker.chunks_for(parse_file(source.rel_path, data, module_path(root, source.rel_path))))
            texts.update((chunk.embed_text, chunk.n_tokens) for chunk in with_vectors(kept))
    return texts
