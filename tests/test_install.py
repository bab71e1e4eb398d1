"""clusterctl as a user who doesn't clone has it: its wheel, installed (not editable) into a
fresh virtualenv, renders every backend's files and builds the images; and with
``image build --sync`` a docker cluster runs this environment's packages (scikit-learn).
The synced build makes its wheelhouse and runtimes from the wheel install; the plain
build, at the session's lock, reuses the session's runtimes and builds the role images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from clusterctl import environment
from clusterctl.errors import EnvironmentMismatchWarning
from clusterctl.images import ROLES, Lock

pytestmark = pytest.mark.timeout(1800)
ROOT = Path(__file__).resolve().parent.parent


LOCAL_PROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "{name}"
version = "0.1"
"""


@dataclass
class Venv:
    folder: Path  # also the working folder: the checkout must not be importable from it

    def run(self, *args: str, timeout: float = 1200, check: bool = True):
        """A command of the virtualenv's bin folder, run there."""
        result = subprocess.run(
            [str(self.folder / "venv" / "bin" / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
            env={**os.environ, "VIRTUAL_ENV": str(self.folder / "venv")},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory, images, docker_engine):
    """clusterctl[docker] and scikit-learn from clusterctl's wheel, in a new virtualenv, at
    this environment's versions. Afterwards the images it built are removed and
    ``:latest`` points at the session's images again."""
    folder = tmp_path_factory.mktemp("install")
    source = folder / "source"  # a copy: building a wheel writes build/ into its source
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".*_cache"
        ),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(folder / "dist"), str(source)],
        check=True,
        timeout=600,
    )
    (wheel,) = (folder / "dist").glob("clusterctl-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    pins = [f"{n}=={v}" for n, v in environment.installed().items() if n != "clusterctl"]
    (folder / "constraints.txt").write_text("\n".join(pins) + "\n")
    env = Venv(folder)
    env.run(
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        f"{wheel}[docker]",
        "scikit-learn",
        "-c",
        str(folder / "constraints.txt"),
    )
    # Two packages installed from folders: one still there, one whose folder is gone.
    for name in ("localpkg", "gonepkg"):
        package = folder / name
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text(f"WHO = {name!r}\n")
        (package / "pyproject.toml").write_text(LOCAL_PROJECT.format(name=name))
        env.run("pip", "install", "--quiet", "--disable-pip-version-check", str(package))
    shutil.rmtree(folder / "gonepkg")
    before = {tag for image in docker_engine.images.list() for tag in image.tags}
    session = {name: docker_engine.images.get(name).id for name in images.values()}
    yield env
    for image in docker_engine.images.list():
        for tag in set(image.tags) - before:
            docker_engine.images.remove(tag)
    for role, name in images.items():  # the session's own images under their names again
        rebuilt = docker_engine.images.get(name).id
        docker_engine.images.get(session[name]).tag(name)
        docker_engine.images.get(session[name]).tag(f"clusterctl-{role}", "latest")
        if rebuilt != session[name]:
            docker_engine.images.remove(rebuilt)


def test_the_wheel_carries_what_render_and_image_build_read(venv):
    where = venv.run("python", "-c", "import clusterctl; print(clusterctl.__file__)").stdout
    assert where.startswith(str(venv.folder / "venv")), where  # the wheel, not the checkout
    listing = venv.run(
        "python",
        "-c",
        textwrap.dedent("""
        from importlib.resources import files
        package = files("clusterctl")
        for name in ("Dockerfile", "Dockerfile.runtime", "entrypoint.sh", "trim.py", "dask.yaml"):
            print("images/" + name, (package / "images" / name).is_file())
        print("notebooks", len([p for p in (package / "notebooks").iterdir()
                                if p.name.endswith(".ipynb")]))
    """),
    ).stdout
    assert "False" not in listing, listing
    shipped = len(list((ROOT / "clusterctl" / "notebooks").glob("*.ipynb")))
    assert f"notebooks {shipped}\n" in listing


@pytest.mark.parametrize("backend", ["compose", "swarm", "kubernetes"])
def test_render_from_a_wheel_install(venv, backend):
    rendered = venv.run("clusterctl", "render", "--backend", backend).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert documents, rendered
    assert "clusterctl-worker" in rendered


FIT = """
import warnings
from distributed import Client
from clusterctl import Cluster
from clusterctl.errors import EnvironmentMismatchWarning

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cluster = Cluster.from_name("s1")
for warning in caught:
    if warning.category is EnvironmentMismatchWarning:
        print("mismatch", str(warning.message).splitlines()[1:])
client = Client(cluster)


def fit():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X, y).score(X, y)


def local():
    import localpkg  # installed here from a folder: built into a wheel for the images

    return localpkg.WHO


print("score", round(client.submit(fit).result(timeout=120), 2))
print("local", client.submit(local).result(timeout=60))
client.close()
cluster.close()
"""


def test_a_synced_environment_runs_scikit_learn_on_a_docker_cluster(venv, docker_engine):
    built = venv.run("clusterctl", "image", "build", "--base", "debian", "--sync").stdout
    names = {r: n for r, n, *_ in map(str.split, built.splitlines()) if r in ROLES}
    assert all("-sync-" in name for name in names.values()), built
    start = time.monotonic()  # again: the environment layer is cached, the code is not
    listed = venv.run("clusterctl", "image", "build", "--base", "debian", "--sync").stderr
    assert "no wheel to be had for: gonepkg==0.1" in listed  # listed, not silently dropped
    print(f"synced images (rebuilt in {time.monotonic() - start:.1f} s):\n{built}")
    # No EXTRA_PIP_PACKAGES, no mounted wheels: scikit-learn is in the images.
    venv.run("clusterctl", "up", "--backend", "docker", "--name", "s1", "--workers", "1")
    try:
        (venv.folder / "fit.py").write_text(FIT)
        fitted = venv.run("python", "fit.py", timeout=300).stdout
        assert "score 0.9" in fitted and "local localpkg" in fitted, fitted
        # The one package with no wheel to be had, and nothing else, is named as missing.
        assert "mismatch ['missing there: gonepkg 0.1 (everywhere)']" in fitted, fitted
        workers = docker_engine.containers.list(filters={"label": "io.clusterctl.cluster=s1"})
        assert {c.image.tags[0] for c in workers} <= set(names.values())
        # This session's own environment has packages the synced images lack: named.
        from clusterctl import Cluster

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Cluster.from_name("s1").close()
        (mismatch,) = [w for w in caught if w.category is EnvironmentMismatchWarning]
        theirs = venv.run(
            "python",
            "-c",
            "from clusterctl.environment import installed; print(' '.join(installed()))",
        ).stdout.split()
        lacking = sorted(set(environment.installed()) - set(theirs) - environment.NOT_COMPARED)
        text = str(mismatch.message)
        assert f"missing there: {lacking[0]} " in text, text
        assert f"and {len(lacking) - environment.SHOWN} more" in text, text
    finally:
        venv.run("clusterctl", "down", "s1", check=False)


def test_image_build_from_a_wheel_install(venv, images, docker_engine):
    # The locked and notebook packages at this environment's versions make the wheel
    # install's lock the session's: its runtimes are reused (the synced test above builds a
    # wheelhouse and runtimes from the wheel install); the role images come from its files.
    lock = Lock.of_this_client()
    pins = [*lock.core_requirements(), *lock.notebook_requirements()]
    venv.run("pip", "install", "--quiet", "--disable-pip-version-check", *pins)
    built = venv.run("clusterctl", "image", "build", "--base", "debian")
    names = {r: n for r, n, *_ in map(str.split, built.stdout.splitlines()) if r in ROLES}
    assert sorted(names) == sorted(ROLES), built.stdout
    assert names == images, built.stdout  # the session's lock, hence its tag
    assert "-runtime:" not in built.stderr, built.stderr  # no runtime built again
    probe = (
        "import clusterctl, importlib.metadata as m, pathlib; "
        "print(m.version('clusterctl'), clusterctl.__file__, "
        "len(list(pathlib.Path('/home/dask/notebooks').glob('*.ipynb'))))"
    )
    out = docker_engine.containers.run(
        names["notebook"], ["python", "-c", probe], remove=True
    ).decode()
    version, where, notebooks = out.split()
    ours = venv.run("python", "-c", "import clusterctl; print(clusterctl.__version__)")
    assert where.startswith("/opt/venv/lib/") and version == ours.stdout.strip()
    assert int(notebooks) == len(list((ROOT / "clusterctl" / "notebooks").glob("*.ipynb")))
