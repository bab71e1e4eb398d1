"""share-dir: one folder the scheduler, workers and notebook see at the client's path, start
in, and write in as the folder's owner. End to end on docker and compose (a dask.bag written
by the workers under a relative path and read back by the client), on local processes, and
in the rendered Compose file, stack file and Kubernetes manifests."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

import clusterctl
from clusterctl.api import build_spec
from clusterctl.errors import SpecError, UserInputError
from clusterctl.render import compose, kubernetes, stack
from clusterctl.spec import ClusterSpec
from tests.test_container_backends import ours

OWNER = (1234, 1234)  # a user that is not the one running the tests, nor root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A fresh project folder owned by OWNER (chown needs root, as the docker tests do)."""
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    path = tmp_path / "project"
    path.mkdir()
    os.chown(path, *OWNER)
    return path


def owners(root: Path) -> set[tuple[int, int]]:
    """The (uid, gid) of ``root`` and everything in it."""
    paths = [root, *root.rglob("*")]
    return {(p.stat().st_uid, p.stat().st_gid) for p in paths}


# --- the spec ------------------------------------------------------------------------------


def test_the_folder_is_made_absolute_and_resolved_on_the_client(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path / "link")
    spec = build_spec(backend="local", share_dir=".")
    assert spec.share_dir == str(real)
    assert build_spec(backend="local", share_dir=Path("..") / "real").share_dir == str(real)
    assert build_spec(backend="local").share_dir is None
    # a stored spec is found again after its folder is gone (to be removed)
    stored = spec.to_dict()
    real.rmdir()
    assert ClusterSpec.from_dict(stored).share_dir == str(real)


def test_root_owned_and_other_users_folders_are_refused_for_containers(tmp_path):
    """Containers run as the folder's owner and never as root; local processes run as
    the client whatever owns the folder."""
    if os.geteuid() != 0:
        with pytest.raises(SpecError, match="belongs to uid 0, not to you"):
            build_spec(backend="docker", share_dir="/tmp")
        return
    os.chown(tmp_path, 0, 0)
    for backend in ("docker", "compose", "swarm"):
        with pytest.raises(SpecError, match="is owned by root, and the containers"):
            build_spec(backend=backend, share_dir=tmp_path)
    assert build_spec(backend="local", share_dir=tmp_path).share_dir == str(tmp_path)


def test_a_folder_chowned_to_root_after_the_start_is_not_run_in_as_root(folder):
    spec = build_spec(backend="docker", share_dir=folder)
    assert compose.render(spec)["services"]["scheduler"]["user"] == "1234:1234"
    os.chown(folder, 0, 0)
    with pytest.raises(UserInputError, match="owned by root"):
        compose.render(spec)


def test_claims_only_on_kubernetes_and_host_folders_never_there(tmp_path):
    with pytest.raises(SpecError, match="share-dir: a PersistentVolumeClaim"):
        build_spec(backend="docker", share_dir="pvc:data")
    with pytest.raises(SpecError, match="share-dir: folders of this machine are not on"):
        build_spec(backend="kubernetes", share_dir=tmp_path)
    with pytest.raises(SpecError, match="is not a PersistentVolumeClaim name"):
        build_spec(backend="kubernetes", share_dir="pvc:Data_1")
    assert build_spec(backend="kubernetes", share_dir="pvc:data").share_dir == "pvc:data"


# --- renderings ----------------------------------------------------------------------------


def test_the_compose_files_mount_the_folder_and_run_in_it_as_its_owner(folder):
    path = str(folder)
    for managed in (True, False):
        spec = build_spec(backend="compose", share_dir=folder, notebook=True, tls=managed)
        services = compose.render(spec, managed=managed)["services"]
        assert set(services) == {"scheduler", "worker", "notebook"}
        for service in services.values():
            assert f"{path}:{path}" in service["volumes"]  # read-write
            assert service["working_dir"] == path
            assert service["user"] == "1234:1234"
            assert service["group_add"] == ["0"]  # the images' writable files are group 0's
    plain = compose.render(build_spec(backend="compose", tls=False), managed=False)["services"]
    assert not any({"user", "working_dir", "group_add"} & set(s) for s in plain.values())
    # a stack file can't add a group: the owner, in group 0
    spec = build_spec(backend="swarm", share_dir=folder, tls=False)
    for service in stack.render(spec)["services"].values():
        assert (service["user"], service["working_dir"]) == ("1234:0", path)
        assert f"{path}:{path}" in service["volumes"] and "group_add" not in service


def test_the_kubernetes_manifests_mount_the_claim_and_start_in_it():
    from tests.test_kubernetes import validate

    spec = build_spec(
        backend="kubernetes", share_dir="pvc:team-data", notebook=True, name="share-k8s"
    )
    for docs in (kubernetes.render(spec), kubernetes.render_operator(spec)):
        pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
        for cluster in (d for d in docs if d["kind"] == "DaskCluster"):
            pods += [cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"]]
        assert len(pods) == 3  # scheduler, workers, notebook
        for pod in pods:
            assert pod["volumes"] == [
                {"name": "share", "persistentVolumeClaim": {"claimName": "team-data"}}
            ]
            (container,) = pod["containers"]
            assert container["volumeMounts"] == [{"name": "share", "mountPath": "/share"}]
            assert container["workingDir"] == "/share"
        for doc in docs:
            validate(doc)


# --- running clusters ----------------------------------------------------------------------


def test_local_processes_start_in_the_folder(tmp_path):
    cluster = clusterctl.up(
        name="share-local", workers=1, port=0, dashboard_port=0, share_dir=tmp_path
    )
    try:
        with Client(cluster) as client:
            assert set(client.run(os.getcwd).values()) == {str(tmp_path)}
            assert client.run_on_scheduler(os.getcwd) == str(tmp_path)
    finally:
        cluster.shutdown()


# The Must-show's code, run by the folder's owner in the cluster's JupyterLab container.
BAG_SCRIPT = """
import json, dask.bag as db
from distributed import Client
with Client():
    bag = db.from_sequence([{"i": i} for i in range(100)], npartitions=4).map(json.dumps)
    bag.to_textfiles("data/*.json")
    print(db.read_text("data/*.json").count().compute())
"""


@pytest.mark.parametrize("backend", ["docker", "compose"])
def test_a_bag_written_by_the_workers_is_read_back_by_the_client(
    backend, folder, images, docker_engine, monkeypatch
):
    """The Must-show: in a fresh folder, `up --share-dir .`; the workers write a bag under a
    relative path, a client reads it back by the same glob, and the files are the folder
    owner's. The tests run as root, so the owner's client is the notebook's (fsspec makes
    the output folder on the client: a root client would make it root's); then this root
    client writes more into that folder through the workers, and reads it all back."""
    import dask.bag as db

    monkeypatch.chdir(folder)
    (folder / "input.txt").write_text("21\n")
    os.chown(folder / "input.txt", *OWNER)
    name = f"share-{backend}"
    cluster = clusterctl.up(
        name=name,
        backend=backend,
        workers=2,
        port=0,
        dashboard_port=0,
        notebook=True,
        notebook_port=0,
        share_dir=".",
    )
    try:
        notebook = docker_engine.containers.get(f"{name}-notebook")
        code, out = notebook.exec_run(["python", "-c", BAG_SCRIPT])
        assert code == 0 and out.decode().split()[-1] == "100", out.decode()
        with Client(cluster) as client:
            assert db.read_text("data/*.json").count().compute() == 100
            bag = db.from_sequence([{"i": i} for i in range(50)], npartitions=2)
            bag.map(json.dumps).to_textfiles("data/more-*.json")
            assert db.read_text("data/*.json").count().compute() == 150
            # the workers and the scheduler run in the folder, as its owner
            assert set(client.run(os.getcwd).values()) == {str(folder)}
            assert set(client.run(os.getuid).values()) == {OWNER[0]}
            assert client.run_on_scheduler(os.getcwd) == str(folder)
            assert client.submit(lambda: int(Path("input.txt").read_text()) * 2).result() == 42
        written = sorted(p.name for p in (folder / "data").iterdir())
        assert written == ["0.json", "1.json", "2.json", "3.json", "more-0.json", "more-1.json"]
        assert owners(folder) == {OWNER}
        # the notebook: in the folder, as its owner, and JupyterLab serves its files
        code, out = notebook.exec_run(["sh", "-c", "pwd; id -u"])
        assert code == 0 and out.decode().split() == [str(folder), "1234"], out
        base, token = cluster.backend.notebook_url().split("/lab?token=")
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as r:
            listed = {item["name"] for item in json.load(r)["content"]}
        assert {"data", "input.txt"} <= listed
    finally:
        cluster.shutdown()
    assert ours(docker_engine, name) == []
