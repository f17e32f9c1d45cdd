"""Parameters of an index run, validated before anything is opened.

The same annotated types serve the flow's signature (Prefect validates them and shows the
descriptions and defaults in the UI's form) and `IndexRequest`, the model the CLI and
other callers build.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field


class IndexingMode(str, Enum):
    sequential = "sequential"
    parallel = "parallel"
    pipeline = "pipeline"


AVAILABLE_MODES = (IndexingMode.sequential,)


def existing_directory(value: str) -> str:
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"{value} does not exist; pass the root folder of a Rust code base")
    if not path.is_dir():
        raise ValueError(f"{value} is a file, not a directory; pass the folder of the code base that contains it")
    return str(path.resolve())


def available_mode(value: IndexingMode) -> IndexingMode:
    if value not in AVAILABLE_MODES:
        raise ValueError(f"indexing mode '{value.value}' is not available yet; use 'sequential'")
    return value


Directory = Annotated[
    str,
    Field(description="Root folder of the Rust code base to index (absolute, or relative to the worker)."),
    AfterValidator(existing_directory),
]
ForceReindex = Annotated[
    bool,
    Field(description="Clear the code base's index and rebuild it from scratch instead of indexing what changed."),
]
Mode = Annotated[
    IndexingMode,
    Field(description="How files move through the stages: sequential (one batch after another)."),
    AfterValidator(available_mode),
]


class IndexRequest(BaseModel):
    directory: Directory
    force_reindex: ForceReindex = False
    indexing_mode: Mode = IndexingMode.sequential
