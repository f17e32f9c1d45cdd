"""Build the three deployments and serve them from one process with Prefect's serve().

    rci serve            # needs PREFECT_API_URL (a Prefect server), e.g. RCI_PROFILE=server

Runs start as subprocesses of the serving process; the schedule of `nightly-reindex` is
paused when serving stops (Prefect's default), and resumes when it starts again.
"""

from __future__ import annotations

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from tasks.settings import Settings


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    from flows.deployed import TAGS, force_reindex, index, nightly_reindex

    common = {"tags": TAGS, "entrypoint_type": EntrypointType.MODULE_PATH}
    deployments = [
        index.to_deployment(
            name="index",
            description="Index a Rust code base incrementally (or rebuild it with force_reindex).",
            **common,
        ),
        nightly_reindex.to_deployment(
            name="nightly-reindex",
            description="Incremental reindex of every registered code base (RCI_CODEBASES).",
            schedule=Cron(settings.nightly_cron, timezone=settings.nightly_timezone),
            **common,
        ),
        force_reindex.to_deployment(
            name="force-reindex",
            description="Clear a code base's index and rebuild it, bulk mode around the load. Start it from the UI.",
            **common,
        ),
    ]
    for served in deployments:
        offer_registered_codebases(served, settings)
    return deployments


def offer_registered_codebases(served: RunnerDeployment, settings: Settings) -> None:
    """Without RCI_ALLOWED_ROOTS only the registered code bases may be indexed: the form offers
    them as choices (the server refuses anything else before a run exists). With roots, a typed
    path stays possible and the field's description lists them."""
    directory = served._parameter_openapi_schema.properties.get("directory")
    if directory is not None and settings.allowed_roots is None and settings.codebases:
        directory["enum"] = [str(path.expanduser().resolve()) for path in settings.codebases]


def serve_deployments(settings: Settings, limit: int | None = None) -> None:
    import warnings

    from prefect import serve

    # Prefect 3.8's SIGTERM handler calls its async stop() without awaiting it; shutdown goes on
    # regardless (the deployments are paused), so the warning would only alarm a person.
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited", category=RuntimeWarning)
    serve(*build_deployments(settings), limit=limit)
