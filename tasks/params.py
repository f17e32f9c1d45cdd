"""Parameters of an index run, validated before anything is opened.

The same annotated types serve the flow's signature (Prefect validates them and shows the
descriptions and defaults in the UI's form) and `IndexRequest`, the model the CLI and
other callers build.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, TypeVar, get_type_hints

from pydantic import AfterValidator, BaseModel, Field


class IndexingMode(str, Enum):
    auto = "auto"
    sequential = "sequential"
    parallel = "parallel"
    pipeline = "pipeline"


def existing_directory(value: str) -> str:
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"{value} does not exist; pass the root folder of a Rust code base")
    if not path.is_dir():
        raise ValueError(f"{value} is a file, not a directory; pass the folder of the code base that contains it")
    return str(path.resolve())


def allowed_directory(value: str) -> str:
    """An existing directory a deployment may index: under RCI_ALLOWED_ROOTS, or one of the
    registered code bases (RCI_CODEBASES) when no roots are set."""
    from tasks.settings import load_settings

    path = Path(existing_directory(value))
    settings = load_settings()
    if settings.allowed_roots is not None:
        roots = [Path(root).expanduser().resolve() for root in settings.allowed_roots]
        if not any(path == root or path.is_relative_to(root) for root in roots):
            raise ValueError(
                f"{value} is outside the allowed roots ({', '.join(map(str, roots)) or 'none'}); "
                "add its folder to RCI_ALLOWED_ROOTS"
            )
        return str(path)
    registered = [Path(codebase).expanduser().resolve() for codebase in settings.codebases]
    if path not in registered:
        raise ValueError(
            f"{value} is not a registered code base ({', '.join(map(str, registered)) or 'none registered'}); "
            "add it to RCI_CODEBASES or set RCI_ALLOWED_ROOTS"
        )
    return str(path)


Directory = Annotated[
    str,
    Field(description="Root folder of the Rust code base to index (absolute, or relative to the worker)."),
    AfterValidator(existing_directory),
]
def allowed_directory_description() -> str:
    """The form's help for `directory`: the rule, and the code bases and roots registered where the
    deployments are built (the worker that runs the flow checks the path against its own)."""
    from tasks.settings import load_settings

    text = (
        "Root folder of the Rust code base, on the machine that runs the flow. It must be under "
        "RCI_ALLOWED_ROOTS, or a registered code base (RCI_CODEBASES)."
    )
    try:
        settings = load_settings()
    except ValueError:  # a bad profile is reported where settings are used, not at import
        return text
    if settings.codebases:
        text += " Registered: " + ", ".join(str(p) for p in settings.codebases) + "."
    if settings.allowed_roots:
        text += " Allowed roots: " + ", ".join(str(p) for p in settings.allowed_roots) + "."
    return text


# Checked by the deployments' flows when they start (flows/deployed.py, if_allowed), not here.
AllowedDirectory = Annotated[str, Field(description=allowed_directory_description())]
ForceReindex = Annotated[
    bool,
    Field(description="Clear the code base's index and rebuild it from scratch instead of indexing what changed."),
]
Mode = Annotated[
    IndexingMode,
    Field(
        description="auto: recommend() picks from the code base's size and the machine; sequential: one file "
        "after another through every stage; parallel: batches at once on several workers; pipeline: stages "
        "overlap over a stream of batches, memory bounded."
    ),
]
ForceReembed = Annotated[
    bool,
    Field(description="Embed every chunk again, ignoring the embedding cache (the index is rebuilt from scratch)."),
]


F = TypeVar("F", bound=Callable)


def documented_parameters(fn: F) -> F:
    """Append an `Args:` section built from the parameters' annotated descriptions.

    Prefect's form schema takes each parameter's description from a Google-style docstring
    and ignores `Field(description=...)` inside `Annotated`; this keeps one source for both.
    """
    hints = get_type_hints(fn, include_extras=True)
    lines = []
    for name in inspect.signature(fn).parameters:
        described = [m.description for m in getattr(hints.get(name), "__metadata__", ()) if getattr(m, "description", None)]
        if described:
            lines.append(f"    {name}: {described[0]}")
    if lines:
        fn.__doc__ = inspect.cleandoc(fn.__doc__ or "") + "\n\nArgs:\n" + "\n".join(lines) + "\n"
    return fn


class IndexRequest(BaseModel):
    directory: Directory
    force_reindex: ForceReindex = False
    indexing_mode: Mode = IndexingMode.auto
    force_reembed: ForceReembed = False
