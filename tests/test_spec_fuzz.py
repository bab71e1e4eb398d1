"""Property-based fuzz of the spec loader: any YAML-ish input is either a valid spec or a
SpecError naming a field — never another exception, never a half-valid spec."""

from __future__ import annotations

import contextlib

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl.errors import SpecError
from clusterctl.spec import ClusterSpec, load_spec

KEYS = ["name", "backend", "scheduler", "worker", "workers", "notebook", "security",
        "start-timeout", "count", "threads", "memory-limit", "cpus", "port", "host",
        "dashboard-port", "enabled", "tls", "env", "resources", "mounts", "image",
        "death-timeout", "bogus"]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["auto", "4GiB", "0.5", "docker", "local", "w1"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_is_a_spec_or_a_spec_error(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        spec = load_spec(path)
    except SpecError as err:
        assert str(err).strip(), "an empty message"
        return
    assert ClusterSpec.from_dict(spec.to_dict(), source="round trip") == spec


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_spec_or_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(text)
    with contextlib.suppress(SpecError):
        load_spec(path)
