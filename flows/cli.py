"""`rci`: index a Rust code base, search it, and see what its index holds.

A normal run prints a progress bar and one summary: Prefect's own console logging is
turned off (flow and task logs still reach a Prefect server's UI), and errors are one line.
RCI_DEBUG=1 restores Prefect's logging and shows tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import click

EXIT_FAILED = 1  # the run started and failed
EXIT_USAGE = 2  # bad input: nothing was created


def _debug() -> bool:
    return os.environ.get("RCI_DEBUG", "") not in ("", "0", "false")


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings():
    from tasks.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as error:
        _fail(str(error), EXIT_USAGE)


def _prepare_prefect(settings, quiet: bool = True) -> None:
    """Prefect reads its settings from the environment: set them before it is imported.
    `quiet`: no Prefect console logging (runs still log to the server) and no warnings."""
    for key, value in settings.prefect.items():
        os.environ.setdefault(key.upper(), str(value))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry errors without a network
    # Before Prefect is imported: it makes its home without parents and warns on stderr when it
    # cannot (flows/temporary_server.py makes the home Prefect resolves, and says when it cannot).
    with contextlib.suppress(OSError):
        Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().mkdir(parents=True, exist_ok=True)
    if os.environ.get("PREFECT_API_URL"):  # a long-running server: it learns of dead runs from heartbeats
        from flows.unresponsive_runs import send_heartbeats

        send_heartbeats()
    if quiet and not _debug():
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        warnings.filterwarnings("ignore")


def _directory(path: str) -> Path:
    """The PATH argument of search and status, or a one-line error."""
    from tasks.params import existing_directory

    try:
        return Path(existing_directory(path))
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Index Rust code bases and search them (BM25 + vectors, fused)."""


@main.command()
@click.argument("path")
@click.option("--force", is_flag=True, help="Clear the index and rebuild it (vectors of unchanged text come from the cache).")
@click.option("--reembed", is_flag=True, help="Like --force, and embed every chunk again instead of using the cache.")
@click.option("--mode", default=None, metavar="MODE",
              help="auto, sequential, parallel or pipeline (default: RCI_INDEXING_MODE, else auto).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the run's statistics as JSON.")
def index(path: str, force: bool, reembed: bool, mode: str | None, as_json: bool) -> None:
    """Index the Rust code base at PATH (incremental unless --force)."""
    settings = _settings()
    request = _request(path, force, reembed, mode or settings.indexing_mode)
    root = Path(request.directory)
    from tasks.discover import NoRustFiles, discover
    from tasks.settings import CodebaseLayout
    from tasks.uptodate import up_to_date

    started = time.perf_counter()
    try:
        found = discover(root, settings.max_file_bytes).require_files()  # before Prefect starts
    except NoRustFiles as error:
        _fail(str(error), EXIT_USAGE)
    discovered = time.perf_counter()
    stats = None if force or reembed else up_to_date(CodebaseLayout.for_root(root, settings), settings, found)
    if stats is not None:
        stats.stage_seconds = {"discover": round(discovered - started, 3), "hash": round(time.perf_counter() - discovered, 3)}
        stats.wall_seconds = round(time.perf_counter() - started, 3)
    if stats is None:
        _prepare_prefect(settings)
        stats = _run_index(request, settings)
    if as_json:
        click.echo(stats.model_dump_json(indent=2))
    else:
        from flows.report import print_index_summary

        print_index_summary(stats)


def _request(path: str, force: bool, reembed: bool, mode: str):
    from pydantic import ValidationError

    from tasks.params import IndexRequest

    try:
        return IndexRequest(directory=path, force_reindex=force, force_reembed=reembed, indexing_mode=mode)
    except ValidationError as error:
        first = error.errors()[0]
        if first["loc"] == ("indexing_mode",):
            _fail(f"unknown indexing mode {mode!r}; use auto, sequential, parallel or pipeline", EXIT_USAGE)
        _fail(first["msg"].removeprefix("Value error, "), EXIT_USAGE)


def _run_index(request, settings):
    from prefect.exceptions import TerminationSignal

    from flows.report import progress_bar
    from tasks.discover import NoRustFiles
    from tasks.progress import reporting_to
    from tasks.stopping import stop_on_signals

    try:
        from flows.index import index_codebase
        from flows.temporary_server import temporary_prefect_server

        configured = os.environ.get("PREFECT_API_URL")
        with stop_on_signals(), temporary_prefect_server() as url, progress_bar() as sink, reporting_to(sink):
            if configured and url == configured:
                _watch_for_dead_runs(settings)
            return index_codebase(**request.model_dump())
    except NoRustFiles as error:  # the files went away since the CLI looked
        _fail(str(error), EXIT_USAGE)
    except (KeyboardInterrupt, TerminationSignal):
        _fail("interrupted; the index keeps its last committed state, rerun to finish", 130)
    except Exception as error:  # one line for people; RCI_DEBUG=1 for the traceback
        if _debug():
            raise
        _fail(_one_line(error))


def _watch_for_dead_runs(settings) -> None:
    """On a long-running Prefect server: the automation that marks dead runs Crashed."""
    from flows.unresponsive_runs import ensure_crash_automation

    try:
        ensure_crash_automation(settings.crashed_after_seconds)
    except Exception as error:  # an older server without automations: the run still goes on
        if _debug():
            raise
        click.echo(f"note: could not set up crash detection on the Prefect server ({_one_line(error)})", err=True)


def _one_line(error: BaseException) -> str:
    """Our own errors say what to do already; anything else also names its type."""
    message = " ".join(str(error).split()) or type(error).__name__
    ours = type(error).__module__.startswith(("tasks.", "flows.")) or type(error) in (RuntimeError, ValueError, OSError)
    return message if ours else f"{type(error).__name__}: {message} (RCI_DEBUG=1 shows details)"


@main.command()
@click.argument("path")
@click.argument("query")
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 1000), help="Results to show.")
@click.option("--engine", default="hybrid", show_default=True, metavar="ENGINE", help="hybrid, bm25 or vector.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only items of this kind (function, method, struct, enum, trait, impl, ...); repeat or comma-separate.")  # fmt: skip
@click.option("--path", "path_glob", default=None, metavar="GLOB", help="Only files matching this glob or under this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print results as a JSON list.")
def search(path: str, query: str, limit: int, engine: str, kinds: tuple[str, ...], path_glob: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Search the index of the code base at PATH for QUERY (hybrid: BM25 + vectors)."""
    settings = _settings()
    root = _directory(path)
    if not _debug():
        warnings.filterwarnings("ignore")
    from tasks.search import SearchError
    from tasks.search import search as run_search

    try:
        results = run_search(
            root, query, settings, limit=limit, engine=engine, path=path_glob,
            kinds=[k for kind in kinds for k in kind.split(",")],
        )  # fmt: skip
    except SearchError as error:
        _fail(str(error), EXIT_USAGE)
    except Exception as error:
        if _debug():
            raise
        _fail(_one_line(error))
    for note in results.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    if not results:
        click.echo("no results")
    for result in results:  # plain lines, without rich: it costs a one-off search 90 ms to import
        stale = "  (stale: changed since indexed)" if result.stale else ""
        click.echo(f"{result.file}:{result.start_line}-{result.end_line}  {result.symbol}  {result.kind}  "
                   f"{result.score:.4f}{stale}")  # fmt: skip


@main.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(path: str, as_json: bool) -> None:
    """Show what the index of the code base at PATH holds and whether its stores agree."""
    settings = _settings()
    root = _directory(path)
    if not _debug():
        warnings.filterwarnings("ignore")
    from tasks.status import index_status

    try:
        info = index_status(root, settings)
    except Exception as error:
        if _debug():
            raise
        _fail(_one_line(error))
    if as_json:
        click.echo(info.model_dump_json(indent=2))
    else:
        from flows.report import print_status

        print_status(info)
    if info.damaged or (info.indexed and info.stores_agree is False):
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (PORT alone: 127.0.0.1).")  # fmt: skip
@click.option("--watch", is_flag=True, help="Reindex a code base a few seconds after its files change.")
def mcp(http: str | None, watch: bool) -> None:
    """Serve the index to coding agents over MCP (stdio by default)."""
    settings = _settings()
    _prepare_prefect(settings)
    from flows.mcp_server import UsageError, serve

    try:
        serve(settings, http, watch)
    except UsageError as error:
        _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--limit", type=click.IntRange(1), default=None, help="Most flow runs at once (default: no limit).")
def serve(limit: int | None) -> None:
    """Serve the deployments index, nightly-reindex and force-reindex (needs a Prefect server)."""
    settings = _settings()
    _prepare_prefect(settings, quiet=False)  # a long-running server process: keep Prefect's logs
    if not os.environ.get("PREFECT_API_URL"):
        _fail(
            "rci serve needs a Prefect server: run `prefect server start`, then set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (or use RCI_PROFILE=server)",
            EXIT_USAGE,
        )
    if not settings.codebases and settings.allowed_roots is None:
        click.echo(
            "note: no code base is registered (RCI_CODEBASES) and no RCI_ALLOWED_ROOTS is set: "
            "the deployments will refuse every directory and the nightly run has nothing to do",
            err=True,
        )
    from deployments.serve import serve_deployments

    _watch_for_dead_runs(settings)
    try:
        serve_deployments(settings, limit)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
