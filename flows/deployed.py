"""The flows the deployments run: what a schedule or a person in the Prefect UI may start.

They index only directories a deployment may touch (RCI_ALLOWED_ROOTS, else the registered
code bases): a path from a form is checked when Prefect validates the parameters, before
anything is opened. Each runs the index flow's body in its own flow run.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, Field

from flows.index import HOOKS, TASK_RUNNER, index_codebase
from tasks.params import AllowedDirectory, ForceReembed, ForceReindex, IndexingMode, Mode, documented_parameters
from tasks.settings import load_settings
from tasks.stats import IndexStats


@flow(name="index-codebase", validate_parameters=True, task_runner=TASK_RUNNER, **HOOKS)
@documented_parameters
def index(
    directory: AllowedDirectory,
    force_reindex: ForceReindex = False,
    indexing_mode: Mode = IndexingMode.auto,
    force_reembed: ForceReembed = False,
) -> IndexStats:
    """Index a Rust code base: what changed since the last run, or everything with force_reindex."""
    return index_codebase.fn(directory, force_reindex, indexing_mode, force_reembed)


@flow(name="force-reindex", validate_parameters=True, task_runner=TASK_RUNNER, **HOOKS)
@documented_parameters
def force_reindex(
    directory: AllowedDirectory,
    indexing_mode: Mode = IndexingMode.auto,
    reembed: ForceReembed = False,
) -> IndexStats:
    """Clear a code base's index and rebuild it, with Qdrant's bulk mode around the load.
    Vectors of unchanged text come from the embedding cache unless `reembed` is set."""
    return index_codebase.fn(directory, True, indexing_mode, reembed)


class CodebaseResult(BaseModel):
    directory: str
    ok: bool
    message: str = ""
    files_indexed: int = 0
    chunks_total: int = 0


class NightlyReport(BaseModel):
    results: list[CodebaseResult] = Field(default_factory=list)

    @property
    def failed(self) -> list[CodebaseResult]:
        return [r for r in self.results if not r.ok]


@flow(name="nightly-reindex", validate_parameters=True)
@documented_parameters
def nightly_reindex(indexing_mode: Mode = IndexingMode.auto) -> State:
    """Index every registered code base (RCI_CODEBASES) incrementally, one after another.
    One failing code base does not stop the others; the run fails naming each that failed."""
    codebases = [str(path) for path in load_settings().codebases]
    if not codebases:
        return Failed(message="no code bases registered: set RCI_CODEBASES to a JSON list of paths")
    report = NightlyReport()
    for directory in codebases:
        state = index.with_options(flow_run_name=f"nightly: {directory}")(
            directory=directory, indexing_mode=indexing_mode, return_state=True
        )
        if state.is_completed():
            stats: IndexStats = state.result()
            report.results.append(CodebaseResult(directory=directory, ok=True, files_indexed=stats.files_indexed,
                                                 chunks_total=stats.chunks_total))  # fmt: skip
        else:
            message = " ".join((state.message or state.name or "failed").split())
            report.results.append(CodebaseResult(directory=directory, ok=False, message=message))
            get_run_logger().error("%s failed: %s", directory, message)
    publish_nightly_table(report)
    if report.failed:
        names = "; ".join(f"{r.directory}: {r.message}" for r in report.failed)
        return Failed(message=f"{len(report.failed)} of {len(codebases)} code bases failed: {names}", data=report)
    return Completed(message=f"{len(codebases)} code bases indexed", data=report)


def publish_nightly_table(report: NightlyReport) -> None:
    """The nightly run's page in the UI: every code base with its outcome."""
    import contextlib

    from prefect.artifacts import create_table_artifact

    rows = [
        {"code base": r.directory, "outcome": "indexed" if r.ok else "failed", "files indexed": r.files_indexed,
         "chunks in the index": r.chunks_total, "message": r.message}
        for r in report.results
    ]  # fmt: skip
    with contextlib.suppress(Exception):  # an artifact that cannot be written never fails the run
        create_table_artifact(rows, key="nightly-reindex", description=f"{len(rows)} code bases")
