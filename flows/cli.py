"""`rci`: index a Rust code base, search it, and see what its index holds.

A normal run prints a progress bar and one summary: Prefect's own console logging is
turned off (flow and task logs still reach a Prefect server's UI), and errors are one line.
RCI_DEBUG=1 restores Prefect's logging and shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
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


def _prepare_prefect(settings) -> None:
    """Prefect reads its settings from the environment: set them before it is imported."""
    for key, value in settings.prefect.items():
        os.environ.setdefault(key.upper(), str(value))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry errors without a network
    if not _debug():
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        warnings.filterwarnings("ignore")


def _directory(path: str) -> Path:
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
@click.option("--force", is_flag=True, help="Clear the index and rebuild it from scratch.")
@click.option("--mode", type=click.Choice(["sequential", "parallel", "pipeline"]), default=None,
              help="Indexing mode (default: RCI_INDEXING_MODE, else sequential).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the run's statistics as JSON.")
def index(path: str, force: bool, mode: str | None, as_json: bool) -> None:
    """Index the Rust code base at PATH (incremental unless --force)."""
    settings = _settings()
    root = _directory(path)
    from tasks.params import IndexingMode, available_mode

    try:
        chosen = available_mode(IndexingMode(mode or settings.indexing_mode))
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)
    _prepare_prefect(settings)
    stats = _run_index(root, force, chosen)
    if as_json:
        click.echo(stats.model_dump_json(indent=2))
    else:
        from flows.report import print_index_summary

        print_index_summary(stats)


def _run_index(root: Path, force: bool, mode):
    from flows.report import progress_bar
    from tasks.progress import reporting_to

    try:
        from flows.index import NoRustFiles, index_codebase

        with progress_bar() as sink, reporting_to(sink):
            return index_codebase(directory=str(root), force_reindex=force, indexing_mode=mode)
    except NoRustFiles as error:
        _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        _fail("interrupted; the index keeps its last committed state, rerun to finish", 130)
    except Exception as error:  # one line for people; RCI_DEBUG=1 for the traceback
        if _debug():
            raise
        _fail(_one_line(error))


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    known = ("IndexMismatch", "SettingsError", "RuntimeError", "ValueError", "OSError")
    prefix = "" if type(error).__name__ in known else f"{type(error).__name__}: "
    return f"{prefix}{message} (RCI_DEBUG=1 shows details)" if prefix else message


@main.command()
@click.argument("path")
@click.argument("query")
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 1000), help="Results to show.")
@click.option("--json", "as_json", is_flag=True, help="Print results as a JSON list.")
def search(path: str, query: str, limit: int, as_json: bool) -> None:
    """Search the index of the code base at PATH for QUERY (hybrid: BM25 + vectors)."""
    settings = _settings()
    root = _directory(path)
    if not _debug():
        warnings.filterwarnings("ignore")
    from tasks.search import Searcher, SearchError

    try:
        searcher = Searcher(root, settings)
        try:
            results = searcher.search(query, limit=limit)
        finally:
            searcher.close()
    except SearchError as error:
        _fail(str(error), EXIT_USAGE)
    except Exception as error:
        if _debug():
            raise
        _fail(_one_line(error))
    if as_json:
        click.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    from flows.report import print_results

    print_results(results)


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
    if info.indexed and not info.stores_agree:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
