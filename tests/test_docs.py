"""Every Python code block in README.md and docs/*.md runs as written and prints what it shows.

pytest-examples finds the blocks and runs each one as a module; a ``#> ...`` comment under a
``print(...)`` is the output that print must give (``pytest tests/test_docs.py --update-examples``
rewrites them). The blocks connect through ``$REDIS_URL`` (``$REDIS_CLUSTER_URL`` for Redis
Cluster), set here to the session's private servers, never to port 6379.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pytest_examples import CodeExample, EvalExample, find_examples

from redis_streaming import EmbeddedServer, EventStream, LocalCluster
from waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = list(find_examples(ROOT / "README.md", ROOT / "docs"))
ON_CLUSTER = [e for e in EXAMPLES if "REDIS_CLUSTER_URL" in e.source]
ON_SERVER = [e for e in EXAMPLES if "REDIS_URL" in e.source and e not in ON_CLUSTER]
ON_THEIR_OWN = [e for e in EXAMPLES if e not in ON_CLUSTER and e not in ON_SERVER]


def _id(example: CodeExample) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.start_line}"


def test_docs_have_examples() -> None:
    files = {e.path.name for e in EXAMPLES}
    assert {"README.md", "RELIABILITY.md", "SCALING.md"} <= files, files


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        yield lc


def _run(example: CodeExample, eval_example: EvalExample, monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest-examples runs a block as sys.modules["__main__"]; put pytest's back afterwards.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    eval_example.set_config(line_length=100)
    if eval_example.update_examples:
        eval_example.run_print_update(example)
    else:
        eval_example.run_print_check(example)


@pytest.mark.parametrize("example", ON_SERVER, ids=_id)
def test_block_runs_on_one_server(
    example: CodeExample,
    eval_example: EvalExample,
    server: EmbeddedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", server.url)
    if not server.running:
        server.start()
    _run(example, eval_example, monkeypatch)


@pytest.mark.parametrize("example", ON_CLUSTER, ids=_id)
def test_block_runs_on_a_cluster(
    example: CodeExample,
    eval_example: EvalExample,
    cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = cluster.nodes[0]
    monkeypatch.setenv("REDIS_CLUSTER_URL", f"redis://{node.host}:{node.port}/0")
    _run(example, eval_example, monkeypatch)


@pytest.mark.parametrize("example", ON_THEIR_OWN, ids=_id)
def test_block_runs_on_its_own(
    example: CodeExample, eval_example: EvalExample, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(example, eval_example, monkeypatch)


def _readme_cli_commands() -> list[list[str]]:
    """The README's CLI block as argv lists: continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The CLI") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_readme_cli_block_runs_as_written(server: EmbeddedServer) -> None:
    """Run with $URL set to the private server; the CLI path is the venv's, as written."""
    assignment, *commands = _readme_cli_commands()
    assert assignment == ["URL=redis://localhost:6379/0"]
    venv_bin = Path(sys.executable).parent
    if not server.running:
        server.start()
    stream = EventStream(redis.Redis.from_url(server.url, decode_responses=True), "orders")
    stream.delete_stream()

    def argv(words: list[str]) -> list[str]:
        assert words[0] == ".venv/bin/redis-streaming", words
        return [str(venv_bin / "redis-streaming")] + [
            server.url if w == "$URL" else w for w in words[1:]
        ]

    ran = []
    for words in commands:
        name = words[1]
        ran.append(name)
        if name == "worker":  # runs until Ctrl+C: interrupt it once it has handled everything
            proc = subprocess.Popen(argv(words), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                wait_until(
                    lambda: any(
                        g.name == "billing" and g.lag == 0 and g.pending == 0
                        for g in stream.info_groups()
                    ),
                    what="the README's worker to drain the stream",
                )
            finally:
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=30)
            assert proc.returncode in (0, 130), err.decode()
            continue
        done = subprocess.run(argv(words), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (words, done.stderr)
        if name == "replay":
            assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [
                e.id for e in stream.replay(count=3)
            ]
    assert ran == ["produce", "worker", "inspect", "replay"]
    assert stream.length() == 1000
