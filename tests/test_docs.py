"""Every Python code block in README.md and docs/*.md runs as written and prints what it shows.

pytest-examples finds the blocks and runs each one as a module; a ``#> ...`` comment under a
``print(...)`` is the output that print must give (``pytest tests/test_docs.py --update-examples``
rewrites them). The blocks connect through ``$REDIS_URL`` (``$REDIS_CLUSTER_URL`` for Redis
Cluster), set here to the session's private servers, never to port 6379.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

from redis_streaming import EmbeddedServer, LocalCluster

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


def _run(example: CodeExample, eval_example: EvalExample) -> None:
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
    _run(example, eval_example)


@pytest.mark.parametrize("example", ON_CLUSTER, ids=_id)
def test_block_runs_on_a_cluster(
    example: CodeExample,
    eval_example: EvalExample,
    cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = cluster.nodes[0]
    monkeypatch.setenv("REDIS_CLUSTER_URL", f"redis://{node.host}:{node.port}/0")
    _run(example, eval_example)


@pytest.mark.parametrize("example", ON_THEIR_OWN, ids=_id)
def test_block_runs_on_its_own(example: CodeExample, eval_example: EvalExample) -> None:
    _run(example, eval_example)
