"""Unit tests of clusterctl.state: claiming a free name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from clusterctl import state


def test_names_claimed_at_once_are_all_different(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: state.claim_free_name("unit"), range(16)))
    assert sorted(names, key=lambda n: int(n.split("-")[1])) == [f"unit-{n}" for n in range(1, 17)]
    assert all(state.cluster_dir(name).is_dir() for name in names)


def test_a_claim_skips_taken_names_and_unclaim_removes_only_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    (tmp_path / "clusterctl").mkdir(mode=0o700)
    (tmp_path / "clusterctl" / "unit-2").mkdir()
    assert state.claim_free_name("unit", taken={"unit-1"}) == "unit-3"
    state.unclaim("unit-3")
    assert not state.cluster_dir("unit-3").exists()
    (state.cluster_dir("unit-2") / "spec.json").write_text("{}")
    state.unclaim("unit-2")
    assert (state.cluster_dir("unit-2") / "spec.json").exists()
