"""`rci mcp`: the index as an MCP server for coding agents (Claude Code, Cursor, VS Code...).

Tools: index_codebase, index_status, search, find_definition, find_references,
get_similar_code, read_item, each with typed parameters and a structured answer.

- Warm: each code base's Searcher (model, Tantivy reader, vector store) stays open between
  calls. The vector store is let go whenever an index run from anywhere wants it, and read
  again afterwards (tasks/store_lease.py); Tantivy and the snapshot are reread when a run has
  committed, so answers never lag a reindex.
- index_codebase runs the Prefect flow `index-codebase`: through the `index-codebase/index`
  deployment when a Prefect server is configured and the deployment exists, else in this
  process (on a worker thread, with the temporary Prefect server the CLI uses). Progress goes
  to the client while it runs, from the run's own record (run.json); a run outlives a client
  that stops waiting, and index_status reports it.
- Every answer stays within a size budget (RCI_MCP_MAX_CHARS): what does not fit is left out
  and the answer says so, with the offset to ask for the rest.
- Over HTTP only directories under RCI_ALLOWED_ROOTS (else the registered code bases) are
  served; a non-loopback address needs RCI_MCP_TOKEN (a bearer token) and RCI_ALLOWED_ROOTS.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from tasks import navigate
from tasks.discover import NoRustFiles, discover
from tasks.lock import run_in_progress
from tasks.params import existing_directory
from tasks.progress import read_run_file
from tasks.search import Searcher, SearchError
from tasks.settings import CodebaseLayout, Settings
from tasks.status import index_status as read_index_status
from tasks.uptodate import changes_since_snapshot

PROGRESS_SECONDS = 0.5
Directory = Annotated[str, Field(description="The code base's root folder, absolute (or relative to the server's folder).")]

# --- answers ---------------------------------------------------------------------------------


class Page(BaseModel):
    returned: int = Field(description="Items in this answer.")
    offset: int = Field(description="Where this answer starts in the whole list.")
    next_offset: int | None = Field(None, description="Ask again with this offset for more; null when there is no more.")
    note: str = Field("", description="What was left out and why, if anything.")


class Hit(BaseModel):
    file: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    score: float | None = None
    snippet: str = ""
    stale: bool = Field(False, description="The file changed since it was indexed: reindex to refresh.")


class SearchAnswer(BaseModel):
    results: list[Hit]
    page: Page
    notes: list[str] = Field(default_factory=list, description="E.g. vector results missing while an index run writes.")


class ItemsAnswer(BaseModel):
    items: list[Hit]
    page: Page


class ReferenceHit(Hit):
    lines: list[int] = Field(description="Lines of the item where the identifier appears.")


class ReferencesAnswer(BaseModel):
    references: list[ReferenceHit]
    page: Page


class ItemAnswer(BaseModel):
    item: Hit
    doc: str
    code: str = Field(description="The item's indexed text, from `first_line` on.")
    first_line: int
    page: Page = Field(description="offset and next_offset count lines of the item's code.")


class RunProgress(BaseModel):
    by: str = Field(description="Who is indexing (flow run, pid, host, since).")
    stage: str = ""
    files_done: int = 0
    files_planned: int = 0
    chunks_embedded: int = 0
    chunks_planned: int = 0


class StatusAnswer(BaseModel):
    directory: str
    indexed: bool
    files: int = 0
    chunks_tantivy: int = 0
    chunks_qdrant: int | None = None
    stores_agree: bool | None = None
    last_run: dict = Field(default_factory=dict)
    running: RunProgress | None = None
    stale: bool = Field(False, description="Files were added, changed or deleted since the last run.")
    changed_files: int = 0
    changed_examples: list[str] = Field(default_factory=list)
    note: str = ""


class IndexAnswer(BaseModel):
    directory: str
    via: str = Field(description="'in-process' or the deployment that ran it.")
    flow_run: str = ""
    state: str
    mode: str = ""
    files_total: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_deleted: int = 0
    files_skipped: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    skipped: list[str] = Field(default_factory=list, description="Skipped files with their reasons (first 20).")
    secrets_withheld: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# --- the size budget -------------------------------------------------------------------------


def within_budget(make: Callable[[list, Page], BaseModel], items: list, offset: int, more: bool, budget: int, unit: str):
    """The answer `make(items, page)` with as many of `items` as fit in `budget` characters;
    `more`: items exist beyond these (a longer list than the limit asked)."""
    keep = len(items)
    while True:
        left_out = len(items) - keep
        next_offset = offset + keep if (left_out or more) else None
        note = ""
        if left_out:
            note = (f"{left_out} more {unit} left out to stay within {budget:,} characters; "
                    f"call again with offset={next_offset} (or a smaller limit)")  # fmt: skip
        elif more:
            note = f"more {unit} exist; call again with offset={next_offset}"
        answer = make(items[:keep], Page(returned=keep, offset=offset, next_offset=next_offset, note=note))
        if keep == 0 or len(answer.model_dump_json()) <= budget:
            return answer
        keep -= 1


def paged(found: list, offset: int, limit: int, convert: Callable, make: Callable[[list, Page], BaseModel], budget: int,
          unit: str):
    """The page `found[offset:offset+limit]` (found holds one more when there is more), each
    item converted, within the budget."""
    shown = [convert(item) for item in found[offset : offset + limit]]
    return within_budget(make, shown, offset, len(found) > offset + limit, budget, unit)


def _hit(item: navigate.Item, score: float | None = None, snippet: str = "") -> Hit:
    return Hit(file=item.file, start_line=item.start_line, end_line=item.end_line, symbol=item.symbol,
               kind=item.kind, score=score, snippet=snippet or item.signature, stale=item.stale)  # fmt: skip


def _items_answer(items: list[Hit], page: Page) -> ItemsAnswer:
    return ItemsAnswer(items=items, page=page)


# --- code bases ------------------------------------------------------------------------------


class Runs:
    """What index runs in this process need: a Prefect API (the temporary server, started once)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._prefect: contextlib.ExitStack | None = None

    def prefect_ready(self) -> None:
        """The temporary Prefect server the CLI would start, kept for the server's lifetime."""
        from flows.temporary_server import temporary_prefect_server

        with self._lock:
            if self._prefect is None:
                stack = contextlib.ExitStack()
                stack.enter_context(temporary_prefect_server())
                self._prefect = stack

    def close(self) -> None:
        with self._lock:
            if self._prefect is not None:
                self._prefect.close()
                self._prefect = None


class Codebases:
    """Which directories this server may touch, and a warm Searcher per code base."""

    def __init__(self, settings: Settings, http: bool):
        self.settings = settings
        self.http = http
        self._searchers: dict[Path, Searcher] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()

    def roots(self) -> list[Path] | None:
        """Folders served; None: any (stdio without RCI_ALLOWED_ROOTS)."""
        if self.settings.allowed_roots is not None:
            return [Path(p).expanduser().resolve() for p in self.settings.allowed_roots]
        if self.http:
            return [Path(p).expanduser().resolve() for p in self.settings.codebases]
        return None

    def resolve(self, directory: str) -> Path:
        try:
            root = Path(existing_directory(directory))
        except ValueError as error:
            raise ToolError(str(error)) from None
        roots = self.roots()
        if roots is not None and not any(root == r or root.is_relative_to(r) for r in roots):
            allowed = ", ".join(map(str, roots)) or "none (set RCI_ALLOWED_ROOTS or RCI_CODEBASES)"
            raise ToolError(f"{root} is outside the directories this server may index; allowed: {allowed}")
        return root

    def searcher(self, root: Path) -> tuple[Searcher, threading.Lock]:
        with self._lock:
            searcher = self._searchers.get(root)
            if searcher is None:
                try:
                    searcher = Searcher(root, self.settings, warm=True)
                except SearchError as error:
                    message = str(error)
                    if "has no index yet" in message:
                        message = f"{root} is not indexed yet; call index_codebase with directory={str(root)!r} first"
                    raise ToolError(message) from None
                self._searchers[root] = searcher
                self._locks[root] = threading.Lock()
            return searcher, self._locks[root]

    def close(self) -> None:
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers.clear()


async def _in_thread(call):
    """A blocking call on a worker thread; our errors become one-line tool errors."""

    def run():
        try:
            return call()
        except (SearchError, ValueError, FileNotFoundError, NoRustFiles) as error:
            raise ToolError(" ".join(str(error).split())) from None

    return await anyio.to_thread.run_sync(run)


# --- the server ------------------------------------------------------------------------------


@dataclass
class App:
    server: MCPServer
    runs: Runs
    close: Callable[[], None]
    on_indexed: list[Callable[[Path], None]] = field(default_factory=list)  # told each code base indexed here


def build_server(settings: Settings, http: bool = False) -> App:
    """The MCP server with its tools, and what it holds open."""
    budget = settings.mcp_max_chars
    codebases = Codebases(settings, http)
    runs = Runs(settings)
    server = MCPServer(
        name="rust-code-index",
        instructions=(
            "Search and navigate Rust code bases indexed with rci (BM25 + vectors, fused). Call index_codebase "
            "once per code base, then search, find_definition, find_references, get_similar_code and read_item. "
            "Every answer says what it left out and which offset gets the rest."
        ),
    )

    def read(directory: str, call: Callable[[Searcher], object]):
        root = codebases.resolve(directory)

        def locked():
            searcher, lock = codebases.searcher(root)
            with lock:
                return call(searcher)

        return _in_thread(locked)

    @server.tool()
    async def search(
        directory: Directory,
        query: str,
        limit: Annotated[int, Field(ge=1, le=100, description="Results to return.")] = 10,
        offset: Annotated[int, Field(ge=0, description="Results to skip (from a previous answer's next_offset).")] = 0,
        engine: Literal["hybrid", "bm25", "vector"] = "hybrid",
        kind: Annotated[list[str] | None, Field(description="Only these item kinds: function, method, struct, enum, trait, impl, ...")] = None,
        path: Annotated[str | None, Field(description="Only files matching this glob, or under this folder (src/builder).")] = None,
    ) -> SearchAnswer:
        """Search a code base by meaning and by identifiers: results with file, lines, symbol,
        kind, score, a snippet and whether the file changed since it was indexed."""

        def run(searcher: Searcher):
            found = searcher.search(query, limit=offset + limit + 1, engine=engine, kinds=kind, path=path)
            return paged(found, offset, limit, lambda result: Hit(**result.to_json()),
                         lambda items, p: SearchAnswer(results=items, page=p, notes=found.notes), budget, "results")  # fmt: skip

        return await read(directory, run)

    @server.tool()
    async def find_definition(
        directory: Directory,
        symbol: Annotated[str, Field(description="A name (`get_matches`) or a path ending in one (`Command::get_matches`).")],
        exact: Annotated[bool, Field(description="Only items of exactly this name; otherwise names sharing its parts too.")] = False,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> ItemsAnswer:
        """Where an item is defined, from the index's name and qualified-name fields; exact
        matches first."""

        def run(searcher: Searcher):
            found = navigate.find_definition(searcher, symbol, exact=exact, limit=offset + limit + 1)
            return paged(found, offset, limit, _hit, _items_answer, budget, "items")

        return await read(directory, run)

    @server.tool()
    async def find_references(
        directory: Directory,
        symbol: Annotated[str, Field(description="The identifier used (its last part if a path is given).")],
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> ReferencesAnswer:
        """The items whose code uses an identifier, with the lines where it appears (the
        definitions themselves left out)."""

        def run(searcher: Searcher):
            found = navigate.find_references(searcher, symbol, limit=offset + limit + 1)
            return paged(found, offset, limit, lambda r: ReferenceHit(**_hit(r.item).model_dump(), lines=r.lines),
                         lambda items, p: ReferencesAnswer(references=items, page=p), budget, "references")  # fmt: skip

        return await read(directory, run)

    @server.tool()
    async def get_similar_code(
        directory: Directory,
        file: Annotated[str | None, Field(description="With `line`: the item there is the example.")] = None,
        line: Annotated[int | None, Field(ge=1)] = None,
        query: Annotated[str | None, Field(description="Or describe the code wanted.")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> ItemsAnswer:
        """The items nearest by vector to the item at file:line, or to a description."""

        def run(searcher: Searcher):
            found = navigate.similar_items(searcher, file, line, query, limit=offset + limit + 1)
            return paged(found, offset, limit, _hit, _items_answer, budget, "items")

        return await read(directory, run)

    @server.tool()
    async def read_item(
        directory: Directory,
        symbol: Annotated[str | None, Field(description="The item's name or path (`Command::get_matches`).")] = None,
        file: Annotated[str | None, Field(description="Or a file (relative to the code base) ...")] = None,
        line: Annotated[int | None, Field(ge=1, description="... and a line inside the item.")] = None,
        offset: Annotated[int, Field(ge=0, description="Lines of the item to skip (from a previous answer's next_offset).")] = 0,
    ) -> ItemAnswer:
        """An item's whole code and doc, from the index (never from outside the code base,
        never a chunk withheld for holding a secret)."""

        def run(searcher: Searcher):
            text = navigate.read_item(searcher, symbol, file, line)
            lines = text.code.splitlines()
            hit = _hit(text.item)

            def make(kept: list[str], page: Page) -> ItemAnswer:
                return ItemAnswer(item=hit, doc=text.doc, code="\n".join(kept), first_line=text.item.start_line + offset,
                                  page=page)  # fmt: skip

            return within_budget(make, lines[offset:], offset, False, budget, "lines")

        return await read(directory, run)

    @server.tool()
    async def index_status(directory: Directory) -> StatusAnswer:
        """Whether a code base is indexed, what its stores hold and whether they agree, its last
        run, a run in progress, and whether files changed since (stale)."""
        root = codebases.resolve(directory)
        return await _in_thread(lambda: status_of(root, settings))

    @server.tool()
    async def index_codebase(
        directory: Directory,
        ctx: Context,
        force_reindex: Annotated[bool, Field(description="Clear the index and rebuild it (vectors from the cache).")] = False,
        indexing_mode: Literal["auto", "sequential", "parallel", "pipeline"] = "auto",
    ) -> IndexAnswer:
        """Index a Rust code base (incrementally unless force_reindex): runs the Prefect flow
        `index-codebase`, reports progress while it runs, and returns the run's statistics."""
        root = codebases.resolve(directory)
        layout = CodebaseLayout.for_root(root, settings)
        try:
            discover(root, settings.max_file_bytes).require_files()
        except NoRustFiles as error:
            raise ToolError(str(error)) from None
        outcome: dict = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["answer"] = run_index(root, force_reindex, indexing_mode, runs)
            except BaseException as error:  # handed to the waiting call
                outcome["error"] = error
            finally:
                done.set()

        # Its own thread, not the tool call's: a client that stops waiting does not stop the run.
        threading.Thread(target=work, name=f"rci-index {root.name}", daemon=True).start()
        last = None
        while not done.is_set():  # progress while it runs, never after it returns
            record = read_run_file(layout.run_path)
            if record and record != last:
                last = record
                total = record.get("files_planned") or None
                message = (f"{record.get('stage', '')}: {record.get('files_done', 0):,}/{total or '?'} files, "
                           f"{record.get('chunks_embedded', 0):,}/{record.get('chunks_planned', 0):,} chunks embedded")  # fmt: skip
                await ctx.report_progress(record.get("files_done", 0), total, message)
            await anyio.sleep(PROGRESS_SECONDS)
        if "error" in outcome:
            raise ToolError(_one_line(outcome["error"]))
        for hook in app.on_indexed:
            hook(root)
        return outcome["answer"]

    def close() -> None:
        codebases.close()
        runs.close()

    app = App(server, runs, close)
    return app


def _one_line(error: BaseException) -> str:
    from flows.cli import _one_line as cli_one_line

    return cli_one_line(error)


def run_index(root: Path, force: bool, mode: str, runs: Runs) -> IndexAnswer:
    """The flow run: through the deployment when a Prefect server has it, else in this process."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        answer = _through_deployment(root, force, mode)
        if answer is not None:
            return answer
    else:
        runs.prefect_ready()
    from flows.index import index_codebase

    state = index_codebase(directory=str(root), force_reindex=force, indexing_mode=mode, return_state=True)
    if not state.is_completed():
        raise RuntimeError(" ".join((state.message or state.name or "the run failed").split()))
    stats = state.result()
    return _answer(stats, via="in-process", flow_run=str(state.state_details.flow_run_id), state="Completed")


DEPLOYMENT = "index-codebase/index"
PICKUP_SECONDS = 30  # a served deployment starts its runs within seconds; past this, nobody serves it


def _through_deployment(root: Path, force: bool, mode: str) -> IndexAnswer | None:
    """Start the `index` deployment's run and wait for it; None when the server has no such
    deployment, or nobody serves it now (`rci serve` or a worker: its status is READY)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            return None
    if str(getattr(deployment.status, "value", deployment.status)).upper() != "READY":
        return None
    run = run_deployment(DEPLOYMENT, parameters={"directory": str(root), "force_reindex": force, "indexing_mode": mode},
                         timeout=0)  # fmt: skip
    picked_up_by = time.monotonic() + PICKUP_SECONDS
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run.id)
            if run.state and run.state.is_final():
                break
            if run.state and run.state.is_scheduled() and time.monotonic() > picked_up_by:
                client.delete_flow_run(run.id)  # nobody serves it after all (a stopped `rci serve`): run it here
                return None
            time.sleep(1)
    if not run.state.is_completed():
        raise RuntimeError(f"flow run {run.name} of {DEPLOYMENT} ended {run.state.name}: {run.state.message or ''}".strip())
    from tasks.commit import load_manifest

    manifest = load_manifest(CodebaseLayout.for_root(root, _settings()).manifest_path)
    last = manifest.last_run if manifest else {}
    return IndexAnswer(
        directory=str(root), via=f"deployment {DEPLOYMENT}", flow_run=run.name, state=run.state.name,
        mode=last.get("mode", ""), files_total=last.get("files_total", 0), files_indexed=last.get("files_indexed", 0),
        files_skipped=last.get("files_skipped", 0), chunks_written=last.get("chunks_written", 0),
        chunks_embedded=last.get("chunks_embedded", 0), seconds=last.get("seconds", 0.0),
    )  # fmt: skip


def _settings() -> Settings:
    from tasks.settings import load_settings

    return load_settings()


def _answer(stats, via: str, flow_run: str, state: str) -> IndexAnswer:
    return IndexAnswer(
        directory=stats.directory, via=via, flow_run=flow_run, state=state, mode=stats.mode,
        files_total=stats.files_total, files_indexed=stats.files_indexed, files_unchanged=stats.files_unchanged,
        files_deleted=stats.files_deleted, files_skipped=len(stats.files_skipped), chunks_written=stats.chunks_written,
        chunks_embedded=stats.chunks_embedded, chunks_total=stats.chunks_total, seconds=stats.wall_seconds,
        skipped=[f"{s.path}: {s.reason}" for s in stats.files_skipped[:20]], secrets_withheld=stats.secrets_withheld,
        notes=stats.notes,
    )  # fmt: skip


def status_of(root: Path, settings: Settings) -> StatusAnswer:
    info = read_index_status(root, settings)
    running = None
    if info.running:
        record = info.progress or {}
        running = RunProgress(by=info.running, **{k: record[k] for k in RunProgress.model_fields if k in record and k != "by"})
    changed: list[str] = []
    if info.indexed:
        try:
            changed = changes_since_snapshot(CodebaseLayout.for_root(root, settings), discover(root, settings.max_file_bytes))
        except NoRustFiles:
            changed = ["(no .rs files left)"]
    return StatusAnswer(
        directory=info.directory, indexed=info.indexed, files=info.files, chunks_tantivy=info.chunks_tantivy,
        chunks_qdrant=info.chunks_qdrant, stores_agree=info.stores_agree, last_run=info.last_run, running=running,
        stale=bool(changed), changed_files=len(changed), changed_examples=changed[:10], note=info.note,
    )  # fmt: skip


# --- watching --------------------------------------------------------------------------------


class Watcher:
    """`--watch`: an incremental index run of a code base a few seconds after its files change.

    Watches the registered code bases (RCI_CODEBASES) and those indexed through this server;
    changes are gathered until none came for DEBOUNCE_MS, and a code base being indexed when
    its files change is indexed again after."""

    DEBOUNCE_MS = 2_000

    def __init__(self, settings: Settings, runs: Runs, log: Callable[[str], None]):
        self.settings = settings
        self.runs = runs
        self.log = log
        self.roots: set[Path] = {Path(p).expanduser().resolve() for p in settings.codebases if Path(p).is_dir()}
        self._changed = threading.Event()  # the set of roots changed: watch again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rci-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, root: Path) -> None:
        if root not in self.roots:
            self.roots.add(root)
            self._changed.set()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def _loop(self) -> None:
        import watchfiles

        while not self._stop.is_set():
            self._changed.clear()
            roots = sorted(self.roots)
            if not roots:
                self._changed.wait()
                continue
            for changes in watchfiles.watch(
                *roots, watch_filter=self._relevant, debounce=self.DEBOUNCE_MS, stop_event=self._changed,
                raise_interrupt=False,
            ):  # fmt: skip
                touched = {root for root in roots for _, path in changes if Path(path).is_relative_to(root)}
                for root in sorted(touched):
                    self._reindex(root)

    def _relevant(self, change, path: str) -> bool:
        parts = Path(path).parts
        if "target" in parts or ".git" in parts:
            return False
        data_dir = Path(self.settings.data_dir).expanduser().resolve()
        return path.endswith(".rs") and not Path(path).is_relative_to(data_dir) or Path(path).name in (".gitignore", ".ignore")

    def _reindex(self, root: Path) -> None:
        self.log(f"files changed in {root}: indexing")
        try:
            answer = run_index(root, False, "auto", self.runs)
            self.log(f"indexed {root}: {answer.files_indexed} files, {answer.chunks_embedded} chunks embedded")
        except Exception as error:  # a bad run must not stop the watching
            self.log(f"indexing {root} after a change failed: {_one_line(error)}")


# --- serving ---------------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class UsageError(ValueError):
    """`rci mcp` was asked for something it refuses; the message says why."""


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT, or PORT alone (or :PORT) for 127.0.0.1."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--http takes HOST:PORT or PORT, e.g. 127.0.0.1:8765; got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_http(settings: Settings, host: str) -> None:
    if host in LOOPBACK:
        return
    missing = [name for name, value in (("RCI_MCP_TOKEN", settings.mcp_token), ("RCI_ALLOWED_ROOTS", settings.allowed_roots))
               if not value]  # fmt: skip
    if missing:
        raise UsageError(
            f"--http on {host} (not loopback) needs {' and '.join(missing)}: a bearer token clients must send, "
            "and the folders they may index"
        )


class BearerToken:
    """ASGI middleware: every request must carry `Authorization: Bearer <RCI_MCP_TOKEN>`."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        import hmac

        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token (RCI_MCP_TOKEN)\n"})
                return
        await self.app(scope, receive, send)


def serve(settings: Settings, http: str | None = None, watch: bool = False) -> None:
    """`rci mcp`: serve over stdio until the client closes it, or over streamable HTTP."""
    import sys

    def log(message: str) -> None:
        print(f"rci mcp: {message}", file=sys.stderr, flush=True)  # stdout carries the protocol

    host = port = None
    if http:
        host, port = parse_address(http)
        check_http(settings, host)
    app = build_server(settings, http=bool(http))
    server = app.server
    watcher = None
    if watch:
        watcher = Watcher(settings, app.runs, log)
        app.on_indexed.append(watcher.add)
        watcher.start()
    try:
        if http is None:
            server.run("stdio")
            return
        import uvicorn
        from mcp.server.transport_security import TransportSecuritySettings

        security = None
        if host not in LOOPBACK:
            security = TransportSecuritySettings(
                allowed_hosts=[f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"],
                allowed_origins=[f"http://{host}:{port}", f"http://127.0.0.1:{port}", f"http://localhost:{port}"],
            )
        asgi = server.streamable_http_app(host=host, transport_security=security)
        if settings.mcp_token:
            asgi = BearerToken(asgi, settings.mcp_token.get_secret_value())
        log(f"serving MCP at http://{host}:{port}/mcp")
        uvicorn.run(asgi, host=host, port=port, log_level="warning")
    finally:
        if watcher is not None:
            watcher.stop()
        app.close()
