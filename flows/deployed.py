"""The flows the deployments run: what a schedule or a person in the Prefect UI may start.

They index only directories a deployment may touch (RCI_ALLOWED_ROOTS, else the registered
code bases): a path from a form is checked first, before anything is opened, and a refused one
fails its run with the reason as its message and log line. Each runs the index flow's body in its
own flow run.

The nightly run fans out where there is a work pool: one run of the `index` deployment per code
base, taken by whichever worker is free, so code bases are indexed at once on several machines
(they share the data root: README, "A fleet"). Served by `rci serve` there is one machine, and
it indexes them one after another inside its own run.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prefect import flow, get_run_logger
from prefect.states import Cancelled, Completed, Failed, State
from pydantic import BaseModel, Field

from flows.index import HOOKS, TASK_RUNNER, index_codebase
from tasks.params import (
    AllowedDirectory,
    ForceReembed,
    ForceReindex,
    IndexingMode,
    Mode,
    allowed_directory,
    documented_parameters,
)
from tasks.settings import Settings, load_settings
from tasks.stats import IndexStats


@flow(name="index-codebase", validate_parameters=True, task_runner=TASK_RUNNER, **HOOKS)
@documented_parameters
def index(
    directory: AllowedDirectory,
    force_reindex: ForceReindex = False,
    indexing_mode: Mode = IndexingMode.auto,
    force_reembed: ForceReembed = False,
) -> State:
    """Index a Rust code base: what changed since the last run, or everything with force_reindex."""
    return if_allowed(directory, lambda path: index_codebase.fn(path, force_reindex, indexing_mode, force_reembed))


@flow(name="force-reindex", validate_parameters=True, task_runner=TASK_RUNNER, **HOOKS)
@documented_parameters
def force_reindex(
    directory: AllowedDirectory,
    indexing_mode: Mode = IndexingMode.auto,
    reembed: ForceReembed = False,
) -> State:
    """Clear a code base's index and rebuild it, with Qdrant's bulk mode around the load.
    Vectors of unchanged text come from the embedding cache unless `reembed` is set."""
    return if_allowed(directory, lambda path: index_codebase.fn(path, True, indexing_mode, reembed))


def if_allowed(directory: str, run: Callable[[str], State]) -> State:
    """Run on the directory if a deployment may index it. Checked here rather than as a parameter
    type: Prefect fails a run whose parameters do not validate before naming it or logging a line,
    with its own traceback."""
    try:
        path = allowed_directory(directory)
    except ValueError as refused:
        get_run_logger().error("%s", refused)
        return Failed(message=str(refused))
    return run(path)


class CodebaseResult(BaseModel):
    """One code base's outcome in a nightly run: its row in the run's table."""

    directory: str
    ok: bool
    summary: str = ""  # the run's headline, or why it failed
    flow_run: str = ""
    worker: str = ""  # the worker that ran it; "" when it ran inside the nightly run
    seconds: float | None = None


class NightlyReport(BaseModel):
    results: list[CodebaseResult] = Field(default_factory=list)

    @property
    def failed(self) -> list[CodebaseResult]:
        return [r for r in self.results if not r.ok]


class _FailedStateIsNoCrash(logging.Filter):
    """These flows fail by returning a Failed state whose message says why (a refused path, the
    code bases that failed); a worker's engine then logs it once more as an "unexpected exception"
    with a screen of its own traceback. Only that record is dropped: real errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import FailedRun

        return not (record.exc_info and isinstance(record.exc_info[1], FailedRun))


logging.getLogger("prefect.flow_runs").addFilter(_FailedStateIsNoCrash())

INDEX_DEPLOYMENT = "index-codebase/index"
TAGS = ["rust-code-index"]  # on the deployments and every run the nightly one starts: one filter in the UI finds them
POLL_SECONDS = 2.0


@flow(name="nightly-reindex", validate_parameters=True)
@documented_parameters
def nightly_reindex(indexing_mode: Mode = IndexingMode.auto) -> State:
    """Index every registered code base (RCI_CODEBASES) incrementally. With the `index` deployment on
    a work pool, one run of it per code base, as many at once as the pool's workers take
    (RCI_NIGHTLY_CONCURRENCY caps it); served by `rci serve`, one after another inside this run.
    One failing code base does not stop the others; the run fails naming each that failed."""
    settings = load_settings()
    codebases = [str(path) for path in settings.codebases]
    if not codebases:
        return Failed(message="no code bases registered: set RCI_CODEBASES to a JSON list of paths")
    pool = index_work_pool()
    if pool is None:
        results = [index_here(directory, indexing_mode) for directory in codebases]
    else:
        results = fan_out(codebases, indexing_mode, pool, settings)
    report = NightlyReport(results=results)
    for result in report.results:
        if result.ok:
            get_run_logger().info("%s: %s", result.directory, result.summary)
        else:
            get_run_logger().error("%s failed: %s", result.directory, result.summary)
    publish_nightly_table(report)
    if report.failed:
        names = "; ".join(f"{r.directory}: {r.summary}" for r in report.failed)
        # No data: Prefect resolves a Failed state's data into the exception it raises, and a report is none.
        return Failed(message=f"{len(report.failed)} of {len(codebases)} code bases failed: {names}")
    return Completed(message=f"{len(codebases)} code bases indexed", data=report)


def index_work_pool() -> str | None:
    """The work pool the `index` deployment runs on; None when `rci serve` serves it (no pool)
    or the server has no such deployment."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(INDEX_DEPLOYMENT).work_pool_name
    except Exception:  # no deployment of that name: index here
        return None


def index_here(directory: str, indexing_mode: str) -> CodebaseResult:
    """One code base as a subflow of this run, on this machine."""
    from prefect import tags

    name = f"nightly: {directory}"
    with tags(*TAGS, "nightly"):  # a subflow takes only the tags of this context, not the deployment's
        state = index.with_options(flow_run_name=name)(directory=directory, indexing_mode=indexing_mode, return_state=True)
    if state.is_completed():
        stats: IndexStats = state.result()
        return CodebaseResult(directory=directory, ok=True, summary=stats.headline(), flow_run=name,
                              seconds=stats.wall_seconds)  # fmt: skip
    return CodebaseResult(directory=directory, ok=False, summary=_one_line(state), flow_run=name)


def fan_out(codebases: list[str], indexing_mode: str, pool: str, settings: Settings) -> list[CodebaseResult]:
    """One run of the `index` deployment per code base, linked to this run as its subflow, at most
    RCI_NIGHTLY_CONCURRENCY in flight; waits for them all. Runs no worker takes within
    RCI_NIGHTLY_START_SECONDS, while none of this run's is going, are cancelled and reported."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    cap = settings.nightly_concurrency or len(codebases)
    waiting, in_flight, results = list(codebases), {}, {}
    last_change = time.monotonic()
    with get_client(sync_client=True) as client:
        while waiting or in_flight:
            while waiting and len(in_flight) < cap:
                directory = waiting.pop(0)
                in_flight[directory] = run_deployment(
                    INDEX_DEPLOYMENT, parameters={"directory": directory, "indexing_mode": indexing_mode},
                    flow_run_name=f"nightly: {directory}", timeout=0, as_subflow=True, tags=[*TAGS, "nightly"],
                )  # fmt: skip
                logger.info("%s: flow run %s queued on work pool %s", directory, in_flight[directory].name, pool)
            time.sleep(POLL_SECONDS)
            for directory, run in list(in_flight.items()):
                run = in_flight[directory] = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    results[directory] = _outcome(directory, run)
                    del in_flight[directory]
                    last_change = time.monotonic()
            if in_flight and all(r.state is None or r.state.is_scheduled() for r in in_flight.values()):
                if time.monotonic() - last_change > settings.nightly_start_seconds:
                    reason = (f"no worker of work pool {pool} started it within {settings.nightly_start_seconds:.0f} s "
                              f"(RCI_NIGHTLY_START_SECONDS): start one with `prefect worker start --pool {pool} "
                              f"--work-queue index --limit 1`")  # fmt: skip
                    for directory, run in in_flight.items():
                        client.set_flow_run_state(run.id, Cancelled(message=reason), force=True)
                        results[directory] = CodebaseResult(directory=directory, ok=False, summary=reason, flow_run=run.name)
                    results.update({d: CodebaseResult(directory=d, ok=False, summary=reason) for d in waiting})
                    in_flight, waiting = {}, []
            elif any(r.state is not None and not r.state.is_scheduled() for r in in_flight.values()):
                last_change = time.monotonic()
    return [results[directory] for directory in codebases]


def _outcome(directory: str, run) -> CodebaseResult:
    worker = (run.labels or {}).get("prefect.worker.name", "")
    seconds = run.total_run_time.total_seconds() if run.total_run_time else None
    return CodebaseResult(directory=directory, ok=run.state.is_completed(), summary=_one_line(run.state),
                          flow_run=run.name, worker=str(worker), seconds=seconds)  # fmt: skip


def _one_line(state: State) -> str:
    return " ".join((state.message or state.name or "failed").split())


def publish_nightly_table(report: NightlyReport) -> None:
    """The nightly run's page in the UI: every code base with its outcome."""
    import contextlib

    from prefect.artifacts import create_table_artifact

    rows = [
        {"code base": r.directory, "outcome": "indexed" if r.ok else "failed", "worker": r.worker or "this run",
         "seconds": round(r.seconds, 1) if r.seconds is not None else None, "flow run": r.flow_run,
         "summary": r.summary}
        for r in report.results
    ]  # fmt: skip
    with contextlib.suppress(Exception):  # an artifact that cannot be written never fails the run
        create_table_artifact(rows, key="nightly-reindex", description=f"{len(rows)} code bases")
