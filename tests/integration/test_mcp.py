"""`rci mcp` through the MCP SDK's real client over stdio (and HTTP for the refusals), on the demo crate."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import rci

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

RCI = str(Path(sys.executable).parent / "rci")
TOOLS = {"index_codebase", "index_status", "search", "find_definition", "find_references", "get_similar_code", "read_item"}


def server_env(data_dir: Path, **extra: str) -> dict:
    keep = ("PATH", "HOME", "PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    return {**env, "RCI_DATA_DIR": str(data_dir), **extra}


@asynccontextmanager
async def session(data_dir: Path, **extra: str):
    params = StdioServerParameters(command=RCI, args=["mcp"], env=server_env(data_dir, **extra))
    with open(data_dir.parent / "mcp-stderr.log", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as client:
                await client.initialize()
                yield client


async def call(client: ClientSession, tool: str, progress=None, **arguments) -> dict:
    result = await client.call_tool(tool, arguments, progress_callback=progress)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error_of(client: ClientSession, tool: str, **arguments) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


def test_tools_and_their_schemas(tmp_path, data_dir):
    async def scenario():
        async with session(data_dir) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            index = tools["index_codebase"].input_schema["properties"]
            assert index["indexing_mode"]["enum"] == ["auto", "sequential", "parallel", "pipeline"]
            assert index["force_reindex"]["default"] is False and "directory" in tools["index_codebase"].input_schema["required"]
            search = tools["search"].input_schema["properties"]
            assert search["engine"]["enum"] == ["hybrid", "bm25", "vector"] and search["limit"]["default"] == 10
            assert {"offset", "kind", "path"} <= set(search)
            for tool in tools.values():  # structured output: every tool declares its answer
                assert tool.output_schema and tool.output_schema["type"] == "object"
            assert "page" in tools["search"].output_schema["properties"]

    anyio.run(scenario)


def test_index_search_navigate_edit_and_find_again(demo_crate, data_dir):
    root = str(demo_crate)

    async def scenario():
        async with session(data_dir) as client:
            progress = []

            async def on_progress(done, total, message):
                progress.append((done, total, message, time.monotonic()))

            indexed = await call(client, "index_codebase", progress=on_progress, directory=root, indexing_mode="sequential")
            returned_at = time.monotonic()
            assert indexed["state"] == "Completed" and indexed["via"] == "in-process"
            assert (indexed["files_indexed"], indexed["chunks_total"]) == (9, 45)
            assert indexed["secrets_withheld"] == ["src/config.rs:5 (AWS access key id)"]
            assert progress and all(at <= returned_at for *_, at in progress)
            assert any(re.match(r"index: \d+/\d+ files", message) for _, _, message, _ in progress), progress

            found = await call(client, "search", directory=root, query="retry a failed upload", limit=3)
            top = found["results"][0]
            assert (top["file"], top["start_line"], top["symbol"]) == ("src/net.rs", 7, "demo_tensor::net::retry_failed_upload")
            assert top["kind"] == "function" and not top["stale"] and "pub fn retry_failed_upload" in top["snippet"]
            assert found["page"]["returned"] == 3 and found["page"]["next_offset"] == 3

            definition = await call(client, "find_definition", directory=root, symbol="net::retry_failed_upload")
            assert definition["items"][0]["symbol"] == "demo_tensor::net::retry_failed_upload"
            assert definition["items"][0]["snippet"].startswith("pub fn retry_failed_upload(")

            references = await call(client, "find_references", directory=root, symbol="DEFAULT_REGION")
            assert [(r["symbol"], r["lines"]) for r in references["references"]] == [("demo_tensor::config::region", [9])]

            item = await call(client, "read_item", directory=root, symbol="word_frequencies")
            assert item["item"]["file"] == "src/net.rs" and "or_insert(0)" in item["code"]
            assert item["doc"].startswith("Counts how often each word appears")
            same = await call(client, "read_item", directory=root, file="src/net.rs", line=20)
            assert same["code"] == item["code"]

            similar = await call(client, "get_similar_code", directory=root, file="src/net.rs", line=8)
            symbols = [i["symbol"] for i in similar["items"]]
            assert "demo_tensor::net::retry_failed_upload" not in symbols and symbols
            # An inherent impl has no stored vector (its methods have theirs): its code is embedded to ask.
            around = await call(client, "get_similar_code", directory=root, file="src/lib.rs", line=45)
            symbols = [i["symbol"] for i in around["items"]]
            assert symbols[0] == "demo_tensor::Tensor::zeros" and "demo_tensor::Tensor::num_elements" in symbols

            status = await call(client, "index_status", directory=root)
            assert status["indexed"] and status["stores_agree"] and not status["stale"] and status["running"] is None
            assert status["chunks_tantivy"] == 45 and status["chunks_qdrant"] == 44  # no vector: the inherent impl

            (demo_crate / "src" / "extra.rs").write_text("/// Tells the weather on Mars.\npub fn martian_weather() -> u8 { 3 }\n")
            status = await call(client, "index_status", directory=root)
            assert status["stale"] and status["changed_examples"] == ["src/extra.rs"]
            again = await call(client, "index_codebase", directory=root)
            assert again["files_indexed"] == 1 and again["chunks_embedded"] == 1
            found = await call(client, "search", directory=root, query="weather on another planet", limit=1)
            assert found["results"][0]["symbol"] == "demo_tensor::extra::martian_weather"

    anyio.run(scenario)


def test_the_server_and_a_cli_run_take_turns_on_one_code_base(demo_crate, data_dir):
    root = str(demo_crate)
    assert rci("index", root).returncode == 0

    async def scenario():
        async with session(data_dir) as client:
            first = await call(client, "search", directory=root, query="count words in a text", limit=1)
            assert first["results"][0]["symbol"] == "demo_tensor::net::word_frequencies"  # the server holds the store now
            (demo_crate / "src" / "late.rs").write_text("/// Converts degrees Celsius to Fahrenheit.\npub fn to_fahrenheit(c: f64) -> f64 { c * 1.8 + 32.0 }\n")
            done = await anyio.to_thread.run_sync(lambda: rci("index", root))
            assert done.returncode == 0, done.stderr
            assert "1 indexed" in done.stdout
            found = await call(client, "search", directory=root, query="temperature conversion", limit=1, engine="vector")
            assert found["results"][0]["symbol"] == "demo_tensor::late::to_fahrenheit" and not found["notes"]

    anyio.run(scenario)


def test_bad_calls_are_one_line_tool_errors_and_write_nothing(demo_crate, tmp_path, data_dir):
    async def scenario():
        async with session(data_dir, RCI_ALLOWED_ROOTS=json.dumps([str(demo_crate.parent)])) as client:
            missing = await error_of(client, "search", directory=str(tmp_path / "nowhere"), query="x")
            assert "does not exist" in missing
            not_yet = await error_of(client, "search", directory=str(demo_crate), query="x")
            assert "is not indexed yet; call index_codebase" in not_yet
            mode = await client.call_tool("index_codebase", {"directory": str(demo_crate), "indexing_mode": "fastest"})
            assert mode.is_error and "indexing_mode" in mode.content[0].text
            outside = await error_of(client, "index_status", directory="/etc")
            assert "outside the directories this server may index" in outside
            assert not data_dir.exists()  # nothing written for a bad call
            await call(client, "index_codebase", directory=str(demo_crate))
            escape = await error_of(client, "read_item", directory=str(demo_crate), file="../outside.rs", line=1)
            assert "not a path inside the code base" in escape
            secret = await error_of(client, "read_item", directory=str(demo_crate), symbol="AWS_ACCESS_KEY_ID")
            assert "AKIA" not in secret and "no item named" in secret
            linked = await error_of(client, "read_item", directory=str(demo_crate), file="src/outside.rs", line=1)
            assert "not in the index" in linked and "outside_fn" not in linked  # a symlink out was never indexed
            found = await call(client, "search", directory=str(demo_crate), query="AWS access key of the test account")
            assert all("AKIA" not in r["snippet"] for r in found["results"])

    anyio.run(scenario)


def test_answers_stay_within_the_budget_and_say_how_to_get_the_rest(demo_crate, data_dir):
    assert rci("index", str(demo_crate)).returncode == 0

    async def scenario():
        async with session(data_dir, RCI_MCP_MAX_CHARS="1500") as client:
            first = await call(client, "search", directory=str(demo_crate), query="tensor shape", limit=20)
            assert len(json.dumps(first)) <= 1500
            page = first["page"]
            assert 0 < page["returned"] < 20 and "left out to stay within 1,500 characters" in page["note"]
            second = await call(client, "search", directory=str(demo_crate), query="tensor shape", limit=20,
                                offset=page["next_offset"])  # fmt: skip
            seen = {(r["file"], r["start_line"]) for r in first["results"]}
            assert second["results"] and not seen & {(r["file"], r["start_line"]) for r in second["results"]}
            long = await call(client, "read_item", directory=str(demo_crate), symbol="opcode_name")
            assert long["page"]["next_offset"] and long["code"].count("\n") + 1 == long["page"]["returned"]
            rest = await call(client, "read_item", directory=str(demo_crate), symbol="opcode_name", offset=long["page"]["next_offset"])
            assert rest["first_line"] == long["first_line"] + long["page"]["returned"]

    anyio.run(scenario)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_http_refuses_a_public_address_without_token_and_roots(data_dir):
    refused = rci("mcp", "--http", f"0.0.0.0:{free_port()}")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: --http on 0.0.0.0 (not loopback) needs RCI_MCP_TOKEN and RCI_ALLOWED_ROOTS: a bearer token clients "
        "must send, and the folders they may index"
    )


def test_http_checks_the_token_and_the_host_header(tmp_path, data_dir):
    port = free_port()
    env = {**os.environ, "RCI_MCP_TOKEN": "s3cret-token", "RCI_ALLOWED_ROOTS": json.dumps([str(tmp_path)])}
    server = subprocess.Popen([RCI, "mcp", "--http", f"127.0.0.1:{port}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.post(url, json=hello, headers=headers, timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
                time.sleep(0.2)
        assert anonymous.status_code == 401
        authorized = {**headers, "Authorization": "Bearer s3cret-token"}
        assert httpx.post(url, json=hello, headers=authorized, timeout=10).status_code == 200
        rebinding = httpx.post(url, json=hello, headers={**authorized, "Host": "evil.example:80"}, timeout=10)
        assert rebinding.status_code in (400, 403, 421)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_run_outlives_a_client_that_stops_waiting_and_index_status_reports_it(demo_crate, data_dir):
    root = str(demo_crate)

    async def scenario():
        async with session(data_dir) as client:
            with pytest.raises(Exception, match="(?i)timed out|timeout"):
                await client.call_tool("index_codebase", {"directory": root, "indexing_mode": "sequential"},
                                       read_timeout_seconds=1.0)  # fmt: skip
            seen_running = False
            deadline = time.monotonic() + 240
            while True:
                status = await call(client, "index_status", directory=root)
                if status["running"]:
                    seen_running = True
                    assert status["running"]["by"].startswith("flow run")
                elif status["indexed"]:
                    break
                assert time.monotonic() < deadline, status
                await anyio.sleep(0.3)
            assert seen_running and status["chunks_tantivy"] == 45 and status["stores_agree"]

    anyio.run(scenario)


def test_watch_reindexes_a_registered_code_base_after_its_files_change(demo_crate, data_dir):
    root = str(demo_crate)
    assert rci("index", root).returncode == 0

    async def scenario():
        params = StdioServerParameters(command=RCI, args=["mcp", "--watch"], env=server_env(data_dir, RCI_CODEBASES=json.dumps([root])))
        with open(data_dir.parent / "mcp-watch.log", "a") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as client:
                    await client.initialize()
                    await anyio.sleep(1)  # the watcher is up
                    (demo_crate / "src" / "watched.rs").write_text("/// Parses a sailing route.\npub fn parse_sailing_route() {}\n")
                    deadline = time.monotonic() + 180
                    while True:
                        found = await call(client, "find_definition", directory=root, symbol="parse_sailing_route", exact=True)
                        if found["items"]:
                            break
                        assert time.monotonic() < deadline, (data_dir.parent / "mcp-watch.log").read_text()[-2000:]
                        await anyio.sleep(1)
                    assert found["items"][0]["file"] == "src/watched.rs"
                    status = await call(client, "index_status", directory=root)
                    assert not status["stale"] and status["last_run"]["files_indexed"] == 1

    anyio.run(scenario)
