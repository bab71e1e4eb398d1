"""Property-based fuzz of the CLI's flags: whatever `up` and `render` are given, they exit 0
or 2 with no traceback, and `up` starts nothing.

`up` runs with a stub in place of ``clusterctl.cluster.Cluster``: the stub records the spec
and starts nothing. It stands in for the start only; the point here is parsing and
validation, which run for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

pytest.importorskip("hypothesis", reason="hypothesis generates the command lines")
from hypothesis import given, settings
from hypothesis import strategies as st

import clusterctl.cluster
from clusterctl import state
from clusterctl.cli import cli
from clusterctl.spec import ClusterSpec

UP_OPTIONS = [
    "--name",
    "--workers",
    "--threads",
    "--memory-limit",
    "--backend",
    "--host",
    "--port",
    "--dashboard-port",
    "--notebook-port",
    "-f",
]
UP_FLAGS = ["--notebook", "--no-notebook", "--wait", "--no-wait", "--tls", "--no-tls"]
RENDER_OPTIONS = ["--workers", "-f"]
RENDER_FLAGS = ["--notebook", "--no-notebook", "--operator"]

# A command line can't hold a NUL, and bytes that aren't UTF-8 reach Python as the lone
# surrogates U+DC80..U+DCFF (surrogateescape); no other surrogate can come from one.
characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
characters |= st.sampled_from(["\udc80", "\udcff"])
values = st.one_of(
    st.text(characters, max_size=20),
    st.integers().map(str),
    st.floats().map(str),  # inf, nan, 1e+308, 5e-324...
    st.sampled_from(
        [
            "",
            " ",
            "\n",
            "0",
            "-1",
            "1e400",
            "0.0000001",
            "9" * 5000,
            "x" * 100_000,
            "::1",
            "127.0.0.1\n",
            "auto",
            "4GiB",
            "0.5",
            "local",
            "docker",
            "compose",
            "swarm",
            "kubernetes",
            "/dev/zero",
            "/dev/null",
            "/",
        ]
    ),
)


class StubCluster:
    """Stands in for the start of a cluster: records the spec it was given."""

    started: ClassVar[list[ClusterSpec]] = []

    def __init__(self, spec: ClusterSpec, **kwargs: Any) -> None:
        assert isinstance(spec, ClusterSpec)
        StubCluster.started.append(spec)
        self.workers: dict[str, Any] = {}
        self.scheduler_address = "tls://127.0.0.1:8786"
        self.dashboard_link = "http://127.0.0.1:8787/status"
        self.backend = SimpleNamespace(notebook_url=lambda: None)

    def wait_for_workers(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def started() -> Iterator[list[ClusterSpec]]:
    """The specs `up` passed to the stub (a module fixture: hypothesis runs many examples)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clusterctl.cluster, "Cluster", StubCluster)
        yield StubCluster.started


def command_lines(options: list[str], flags: list[str]) -> st.SearchStrategy[list[str]]:
    pairs = st.lists(st.tuples(st.sampled_from(options), values), max_size=4)
    return st.builds(
        lambda p, f: [word for pair in p for word in pair] + f,
        pairs,
        st.lists(st.sampled_from(flags), max_size=2),
    )


def assert_clean(result: Result) -> None:
    """Exit 0 or 2; no exception escaped the command, no traceback printed."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.output}\n{result.exception!r}"
    )
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output, result.output


@settings(max_examples=120, deadline=None)
@given(command_lines(UP_OPTIONS, UP_FLAGS))
def test_up_flags_exit_0_or_2_and_start_nothing(started, args):
    before, count = state.names(), len(started)
    result = CliRunner().invoke(cli, ["up", *args])
    assert_clean(result)
    assert len(started) == count + (result.exit_code == 0), "validated, yet not started"
    assert state.names() == before, "something was started"


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["compose", "swarm", "kubernetes"]), command_lines(RENDER_OPTIONS, RENDER_FLAGS)
)
def test_render_flags_exit_0_or_2(backend, args):
    result = CliRunner().invoke(cli, ["render", "--backend", backend, *args])
    assert_clean(result)
    if result.exit_code == 0:
        assert result.output.strip(), "rendered nothing"
