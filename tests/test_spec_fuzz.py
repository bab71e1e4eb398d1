"""Property-based fuzz of the spec loader: any YAML-ish input (or any bytes) is either a
valid spec or a one-line SpecError — never another exception, never a half-valid spec.
(tests/test_cli_fuzz.py does the same for the command line's flags.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("hypothesis", reason="hypothesis generates the spec files")
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl.errors import SpecError
from clusterctl.spec import ClusterSpec, load_spec

KEYS = [
    "name",
    "backend",
    "scheduler",
    "worker",
    "workers",
    "notebook",
    "security",
    "start-timeout",
    "count",
    "threads",
    "memory-limit",
    "cpus",
    "port",
    "host",
    "dashboard-port",
    "enabled",
    "tls",
    "env",
    "resources",
    "mounts",
    "image",
    "death-timeout",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "4GiB", "0.5", "docker", "local", "w1"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def load_or_refuse(path: Path) -> ClusterSpec | None:
    """The spec in ``path``, or None after a SpecError of one line of sane length."""
    try:
        return load_spec(path)
    except SpecError as err:
        message = str(err)
        assert message.strip(), "an empty message"
        assert "\n" not in message and len(message) < 500, message[:1000]
        return None


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_is_a_spec_or_a_spec_error(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(yaml.safe_dump(document))
    if spec := load_or_refuse(path):
        assert ClusterSpec.from_dict(spec.to_dict(), source="round trip") == spec


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_spec_or_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(text)
    load_or_refuse(path)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_spec_or_a_spec_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_bytes(data)
    load_or_refuse(path)


# Pieces of YAML's syntax (anchors, aliases, tags, flow and block collections), so that
# the composer and the constructor meet what they refuse, not only the scanner.
yaml_pieces = st.sampled_from(
    [
        "&a ",
        "&b ",
        "*a",
        "*b",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "\n",
        "  ",
        "- ",
        "? ",
        "'",
        '"',
        "!!binary ",
        "!!timestamp ",
        "!!float ",
        "!!int ",
        "!!set ",
        "<<: ",
        "x",
        "1",
        ".inf",
        ".nan",
        "name",
        "worker",
        "env",
        "count",
        "null",
        "\\u0000",
        "#",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(yaml_pieces, max_size=40).map("".join))
def test_any_yaml_syntax_is_a_spec_or_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(text)
    load_or_refuse(path)
