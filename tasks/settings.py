"""Settings (env prefix RCI_, named profiles) and the one data layout every component uses.

Precedence, highest first: keyword arguments, RCI_* environment variables, the profile
named by RCI_PROFILE (profiles/<name>.toml), the defaults below.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROFILES_DIR = Path(os.environ.get("RCI_PROFILES_DIR") or Path(__file__).resolve().parent.parent / "profiles")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class SettingsError(ValueError):
    """A setting or profile that cannot be used; the message says what to change."""


def default_data_root() -> Path:
    """The user's data directory: $XDG_DATA_HOME, ~/Library/Application Support, %LOCALAPPDATA%."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "rust-code-index"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RCI_", extra="forbid", validate_default=True)

    profile: str | None = Field(None, description="Name of a profile in profiles/ (RCI_PROFILE).")
    data_dir: Path = Field(default_factory=default_data_root, description="Data root: one folder per code base.")

    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset means the embedded store.")
    qdrant_api_key: SecretStr | None = None

    model_name: str = Field(DEFAULT_MODEL, description="fastembed model name.")
    model_path: Path | None = Field(None, description="Local folder with model.onnx and tokenizer.json.")
    max_chunk_tokens: int = Field(256, ge=32, description="Longer items are cut into windows of this many tokens.")
    window_overlap_lines: int = Field(2, ge=0, description="Lines shared by consecutive windows of one item.")
    # 1,024 padded tokens per model call measured best on the medium corpus: 5,957 tokens/s,
    # against 5,785 at 2,048 and 5,042 at 8,192 (2 cores).
    embed_batch_tokens: int = Field(1024, ge=64, description="Padded tokens per model call (texts x longest).")
    embed_threads: int | None = Field(None, ge=1, description="ONNX Runtime threads per embedder; unset: planned.")
    embed_device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto: CUDA when available.")

    max_file_bytes: int = Field(1_048_576, ge=1, description="Larger .rs files are skipped (generated code).")
    file_batch_size: int | None = Field(None, ge=1, description="Files per batch; unset: planned by recommend().")
    parse_processes: int | None = Field(None, ge=0, description="Processes for read/parse/chunk; unset: planned.")
    indexing_mode: str = Field("auto", pattern="^(auto|sequential|parallel|pipeline)$", description="Default mode.")

    search_rrf_k: int = Field(30, ge=1, description="Reciprocal rank fusion's k: higher flattens rank differences.")
    search_rrf_k_identifier: int = Field(
        10, ge=1, description="Fusion's k for identifier-shaped queries (a name, or one or two words): each engine's top ranks count more."
    )
    search_bm25_candidates: int = Field(100, ge=1, description="BM25 results fused per query.")
    search_vector_candidates: int = Field(100, ge=1, description="Vector results fused per query.")

    codebases: list[Path] = Field(default_factory=list, description="Code bases the nightly run indexes (JSON list).")
    allowed_roots: list[Path] | None = Field(
        None, description="Folders deployments may index (JSON list); unset: the registered code bases only."
    )
    nightly_cron: str = Field("0 3 * * *", description="When the nightly reindex runs (cron).")
    nightly_timezone: str = Field("UTC", description="Time zone of nightly_cron, e.g. Europe/Paris.")
    nightly_concurrency: int | None = Field(
        None, ge=1, description="Most code bases the nightly run indexes at once on a work pool; unset: as the workers take them."
    )
    nightly_start_seconds: float = Field(
        900, ge=10, description="How long a nightly run waits for a worker to start a code base's run before it gives up on it."
    )
    lock_wait_seconds: float = Field(
        900, ge=0, description="How long a run waits for another run on the same code base before it stops."
    )
    crashed_after_seconds: int = Field(
        90, ge=45, description="On a Prefect server: a run with no heartbeat for this long is marked Crashed."
    )
    store_wait_seconds: float = Field(
        60, ge=0, description="How long a run waits for searches to let go of the embedded vector store."
    )

    mcp_max_chars: int = Field(
        20_000, ge=1_000, description="Most characters an MCP tool answer holds; the rest is left out, with an offset."
    )
    mcp_token: SecretStr | None = Field(None, description="Bearer token `rci mcp --http` requires (RCI_MCP_TOKEN).")

    prefect: dict[str, str] = Field(default_factory=dict, description="PREFECT_* settings a profile selects.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ProfileSource(settings_cls)


class ProfileSource(PydanticBaseSettingsSource):
    """Reads profiles/<RCI_PROFILE>.toml."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # required by the base class
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        name = os.environ.get("RCI_PROFILE")
        if not name:
            return {}
        return {**load_profile(name), "profile": name}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILES_DIR / f"{name}.toml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.is_file():
        raise SettingsError(
            f"unknown profile {name!r} (RCI_PROFILE); available: {', '.join(available_profiles()) or 'none'}"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"profile {path} is not valid TOML: {error}") from error


def load_settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        field = "RCI_" + str(first["loc"][0]).upper() if first.get("loc") else "settings"
        raise SettingsError(f"invalid setting {field}: {first['msg']}") from error


@dataclass(frozen=True, slots=True)
class CodebaseLayout:
    """Where one code base's index lives. The id names the data folder and the Qdrant collection."""

    root: Path  # canonical absolute path of the code base
    codebase_id: str
    data_dir: Path

    @classmethod
    def for_root(cls, root: Path, settings: Settings) -> CodebaseLayout:
        canonical = Path(root).expanduser().resolve()
        codebase_id = codebase_id_for(canonical)
        return cls(canonical, codebase_id, Path(settings.data_dir).expanduser().resolve() / codebase_id)

    @property
    def collection(self) -> str:
        return self.codebase_id

    @property
    def tantivy_dir(self) -> Path:
        return self.data_dir / "tantivy"

    @property
    def edge_dir(self) -> Path:
        """The embedded vector store: one Qdrant Edge shard."""
        return self.data_dir / "qdrant-edge"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.json"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "snapshot.json"

    @property
    def run_path(self) -> Path:
        """The progress of the run in progress (absent when none is)."""
        return self.data_dir / "run.json"

    @property
    def unfinished_path(self) -> Path:
        """The files a run is changing in the stores, until its commit."""
        return self.data_dir / "unfinished.json"

    @property
    def bulk_state_path(self) -> Path:
        return self.data_dir / "bulk-mode.json"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "embeddings.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "index.lock"

    def exists(self) -> bool:
        return self.manifest_path.is_file()


def codebase_id_for(canonical_root: Path) -> str:
    """`/src/My Crate` -> `my-crate-1a2b3c4d5e6f`: readable, and unique per canonical path."""
    digest = hashlib.sha256(str(canonical_root).encode("utf-8")).hexdigest()[:12]
    name = re.sub(r"[^a-z0-9]+", "-", canonical_root.name.lower()).strip("-")[:40] or "root"
    return f"{name}-{digest}"
