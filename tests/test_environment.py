"""Comparing a client's packages with a cluster's: what the warning names, in seconds."""

from __future__ import annotations

from clusterctl import environment
from clusterctl.environment import differences


def test_installed_reads_this_environment():
    found = environment.installed()
    assert found["distributed"] and found["dask"] and "pytest" in found
    assert all(name == environment.normal(name) for name in found)


def test_nothing_to_say_when_the_cluster_has_what_the_client_has():
    client = {"dask": "1", "numpy": "2"}
    assert differences(client, {"the scheduler": {**client, "extra": "9"}}) == ""


def test_missing_and_other_versions_are_named_with_where():
    client = {"scikit-learn": "1.5", "numpy": "2.0", "dask": "1"}
    sides = {
        "the scheduler": {"numpy": "1.26", "dask": "1"},
        "tls://w1": {"numpy": "2.0", "dask": "1", "scikit-learn": "1.5"},
    }
    text = differences(client, sides)
    assert "missing there: scikit-learn 1.5 (the scheduler)" in text
    assert "at another version: numpy 2.0 here, 1.26 on the scheduler" in text
    assert "dask" not in text


def test_a_long_list_is_cut_and_counted():
    client = {f"pkg{i:02}": "1" for i in range(30)}
    sides = {"the scheduler": {}, "tls://a": {}, "tls://b": {}}
    text = differences(client, sides)
    assert "pkg00 1 (everywhere)" in text and "and 18 more" in text and "pkg29" not in text
