"""Scheduler, worker and notebook images locked to this client's versions, built offline.

Three steps, each cached by what it depends on:

1. ``build_base``: a Debian root filesystem by debootstrap, with this client's own Python
   interpreter copied in (so the images run exactly the client's Python, micro version
   included), imported with ``docker import``. For engines that reach no registry.
2. The runtime (``images/Dockerfile.runtime``): a wheelhouse of the client's versions is
   built on the host with pip, then installed in the image with ``--no-index``. Built
   again only when the lock changes.
3. The role images (``images/Dockerfile``): the runtime plus this package; a change to
   clusterctl's code rebuilds only this small last step.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from clusterctl import __version__, engine, environment
from clusterctl.errors import ClusterctlError, UserInputError

ROLES = ("scheduler", "worker", "notebook")
# What Dask compares between client, scheduler and workers, and what tasks commonly need.
LOCKED_PACKAGES = (
    "dask",
    "distributed",
    "cloudpickle",
    "msgpack",
    "tornado",
    "toolz",
    "lz4",
    "numpy",
    "pandas",
    "pyarrow",
    "bokeh",
    "psutil",
    "prometheus-client",  # /metrics on the scheduler's and workers' HTTP ports
)
# pip is installed in the notebook; scheduler and worker run it from its wheel when needed.
NOTEBOOK_PACKAGES = ("jupyterlab", "dask-labextension", "pip")
# Shared libraries the interpreter's extension modules link against (Debian bookworm names).
BASE_PACKAGES = (
    "tini",
    "ca-certificates",
    "libssl3",
    "libffi8",
    "libsqlite3-0",
    "libbz2-1.0",
    "libncursesw6",
    "libreadline8",
    "libexpat1",
    "libnsl2",
)
# The Dockerfiles, entrypoint and dask config: package data, beside this module.
IMAGES_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = IMAGES_DIR.parent
# A Debian suite or codename (bookworm, trixie, stable, sid); it reaches debootstrap's
# command line and an image label.
RELEASE = re.compile(r"[a-z][a-z0-9-]{0,31}")
# A mirror debootstrap can use: http(s) or file, and nothing a shell or label would split.
MIRROR = re.compile(r"(https?|file)://[^\s\"'`\\]{1,500}")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Lock:
    """The versions every image carries: this client's."""

    python: str
    packages: dict[str, str]  # name -> version, as installed here
    notebook: dict[str, str]  # notebook-only packages, pinned when installed here
    extra: tuple[str, ...]  # the user's extra requirements
    synced: bool = False  # packages: every distribution installed here (image build --sync)

    @classmethod
    def of_this_client(cls, extra: Iterable[str] = (), sync: bool = False) -> Lock:
        """The default lock (what Dask compares, and what tasks commonly need), or with
        ``sync`` this whole environment but clusterctl itself, which images add apart."""
        if sync:
            packages = _host_packages()
        else:
            packages = {p: v for p in LOCKED_PACKAGES if (v := _installed(p))}
        return cls(
            python=platform.python_version(),
            packages=packages,
            notebook={p: _installed(p) or "" for p in NOTEBOOK_PACKAGES},
            extra=tuple(extra),
            synced=sync,
        )

    @property
    def digest(self) -> str:
        text = json.dumps([self.python, self.packages, self.notebook, self.extra], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        """The image tag: this lock, this version of clusterctl, and the runtime's recipe;
        ``-sync-`` in it for a whole environment's images."""
        recipe = hashlib.sha256(self.digest.encode())
        for name in ("Dockerfile.runtime", "trim.py"):
            recipe.update((IMAGES_DIR / name).read_bytes())
        return f"{__version__}-{'sync-' if self.synced else ''}{recipe.hexdigest()[:12]}"

    def core_requirements(self) -> list[str]:
        return [f"{p}=={v}" for p, v in self.packages.items()] + list(self.extra)

    def notebook_requirements(self) -> list[str]:
        return [f"{p}=={v}" if v else p for p, v in self.notebook.items()]

    def label(self) -> str:
        """``python=3.11.7,dask=2026.8.0,...``: the ``io.clusterctl.lock`` image label; for
        synced images the Dask packages and ``synced=<number of packages>``."""
        pins = {"python": self.python}
        pins |= {p: v for p in LOCKED_PACKAGES if (v := self.packages.get(p))}
        if self.synced:
            pins["synced"] = str(len(self.packages))
        return ",".join(f"{name}={version}" for name, version in pins.items())


def image_name(role: str, tag: str) -> str:
    return f"clusterctl-{role}:{tag}"


def default_tag(client: Any = None) -> str:
    """The tag of the images that match this client, which the container backends run: the
    synced ones (``image build --sync`` of this very environment) if the engine of
    ``client`` has them, else the locked ones."""
    if client is not None:
        synced = _synced_tag()
        if all(engine.image_exists(client, image_name(role, synced)) for role in ROLES):
            return synced
    return Lock.of_this_client().tag


def default_image(role: str, client: Any = None) -> str:
    """The image of ``role`` that matches this client (see :func:`default_tag`)."""
    return image_name(role, default_tag(client))


@functools.cache
def _synced_tag() -> str:
    """The tag of this environment's synced images (reading it takes ~0.1 s: once)."""
    return Lock.of_this_client(sync=True).tag


def base_name(release: str = "bookworm") -> str:
    return f"clusterctl-base:{release}-py{platform.python_version()}"


def image_sizes_mb(names: Iterable[str]) -> dict[str, int]:
    """Each image's size in MB (10^6 bytes), as ``docker images`` shows it."""
    client = engine.docker_client()
    return {name: round(client.images.get(name).attrs["Size"] / 1e6) for name in names}


# What the engine's storage driver says when it loses a file in the middle of a COPY (seen
# once with fuse-overlayfs: "failed to copy files: lchown …: no such file or directory"):
# the same build then succeeds, from the steps already cached.
TRANSIENT_BUILD_ERROR = "failed to copy files"


def _build(client: Any, context: Path, progress: Progress, **kwargs: Any) -> None:
    """``docker build`` through the SDK, its output passed to ``progress``; retried once
    after the engine's storage driver failed mid-copy."""
    failed = _build_once(client, context, progress, **kwargs)
    if failed and TRANSIENT_BUILD_ERROR in failed[0]:
        progress(f"the engine failed mid-copy ({failed[0][:200]}); once more")
        failed = _build_once(client, context, progress, **kwargs)
    if failed:
        error, tail = failed
        raise ClusterctlError(f"building {kwargs.get('tag')} failed: {error}\n{tail}")


def _build_once(
    client: Any, context: Path, progress: Progress, **kwargs: Any
) -> tuple[str, str] | None:
    """One build: None when it succeeded, else the engine's error and the output's end."""
    lines: list[str] = []
    for chunk in client.api.build(path=str(context), rm=True, forcerm=True, decode=True, **kwargs):
        if "error" in chunk:
            return chunk["error"], "".join(lines[-15:])
        if text := chunk.get("stream"):
            lines.append(text)
            if text.strip():
                progress(text.rstrip())
    return None


# --- step 1: the offline base ---------------------------------------------------------------


def build_base(
    release: str = "bookworm", mirror: str | None = None, progress: Progress = print
) -> str:
    """Make ``clusterctl-base:<release>-py<X.Y.Z>`` from Debian's archive; return its name."""
    check_release(release)
    if mirror is not None:
        check_mirror(mirror)
    client = engine.docker_client()
    if shutil.which("debootstrap") is None:
        raise UserInputError("debootstrap is not installed here: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise UserInputError("building the base image runs debootstrap, which needs root")
    mirror = mirror or _host_mirror(release)
    name = base_name(release)
    with tempfile.TemporaryDirectory(prefix="clusterctl-base-", dir=_cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap {release} from {mirror}")
        debs = _cache_dir() / "debs"
        debs.mkdir(exist_ok=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                f"--cache-dir={debs}",
                release,
                str(rootfs),
                mirror,
            ],
            progress,
        )
        progress("copying this client's Python interpreter into the image")
        _copy_interpreter(rootfs / "usr" / "local")
        _run(["chroot", str(rootfs), "ldconfig"], progress)
        check = (
            "import sys, ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, decimal, readline; "
            "print(sys.version.split()[0])"
        )
        version = _run(["chroot", str(rootfs), "/usr/local/bin/python3", "-c", check], progress)
        if version.strip() != platform.python_version():
            raise ClusterctlError(f"the interpreter in the base runs Python {version.strip()}")
        _trim_rootfs(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."], progress)
        progress(f"docker import as {name}")
        client.api.import_image_from_file(
            str(archive),
            repository=name.split(":")[0],
            tag=name.split(":")[1],
            changes=[
                "ENV LANG=C.UTF-8",
                'CMD ["/bin/sh"]',
                f'LABEL org.opencontainers.image.description="Debian {release} with '
                f'Python {platform.python_version()}, made by clusterctl image base"',
            ],
        )
    return name


def check_release(release: str) -> None:
    """Refuse a ``--release`` that is not a Debian suite or codename."""
    if not isinstance(release, str) or not RELEASE.fullmatch(release):
        raise UserInputError(
            f"--release: must be a Debian suite or codename such as bookworm, trixie or stable "
            f"(lower-case letters, digits and '-'), got {_shown(release)}"
        )


def check_mirror(mirror: str) -> None:
    """Refuse a ``--mirror`` that is not an http(s) or file URL without spaces or quotes."""
    if not isinstance(mirror, str) or not MIRROR.fullmatch(mirror):
        raise UserInputError(
            "--mirror: must be an http://, https:// or file:// URL with no spaces, quotes or "
            f"backslashes, such as http://deb.debian.org/debian, got {_shown(mirror)}"
        )


def _shown(value: Any) -> str:
    """A user's value in a message: quoted, and cut when long."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _host_mirror(release: str) -> str:
    """The Debian mirror this machine's apt uses for ``release``."""
    sources = []
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources", "") and path.is_file():
            sources.append(path.read_text())
    text = "\n".join(sources)
    for stanza in re.split(r"\n\s*\n", text):  # deb822 .sources files
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        if uris and suites and release in suites.group(1).split():
            return uris.group(1)
    for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
        if match.group(2) == release:
            return match.group(1)
    raise UserInputError(
        f"no Debian mirror for {release!r} in /etc/apt; give one with --mirror URL"
    )


def _copy_interpreter(prefix: Path) -> None:
    """This Python's executable, shared library and standard library into ``prefix``."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix})["stdlib"])
    skip = {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "__phello__",
    }
    target = prefix / "lib" / f"python{version}"

    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n in skip or n.startswith("config-")}
        return ignored | {n for n in names if ".opt-" in n and n.endswith(".pyc")}

    shutil.copytree(stdlib, target, ignore=ignore, symlinks=True)
    (target / "site-packages").mkdir(exist_ok=True)
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    executable = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    shutil.copy2(executable, prefix / "bin" / f"python{version}")
    for link in ("python3", "python"):
        (prefix / "bin" / link).unlink(missing_ok=True)
        (prefix / "bin" / link).symlink_to(f"python{version}")
    binaries = [prefix / "bin" / f"python{version}"]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = Path(sysconfig.get_config_var("LIBDIR"))
        soname = sysconfig.get_config_var("INSTSONAME")
        shutil.copy2(libdir / soname, prefix / "lib" / soname)
        binaries.append(prefix / "lib" / soname)
    dynload = target / "lib-dynload"
    for module in dynload.glob("*.so"):  # test modules, and Tk, which the base lacks
        if module.name.startswith(("_test", "_ctypes_test", "_xxtest", "xxlimited", "_tkinter")):
            module.unlink()
    binaries += dynload.glob("*.so")
    if shutil.which("strip"):  # interpreters built from source keep their debug symbols
        subprocess.run(["strip", "--strip-unneeded", *map(str, binaries)], check=False)


def _trim_rootfs(rootfs: Path) -> None:
    # gconv: glibc's iconv modules; Python brings its own codecs.
    for rel in (
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/log",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "tmp",
        "usr/lib/x86_64-linux-gnu/gconv",
    ):
        folder = rootfs / rel
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    doc = rootfs / "usr/share/doc"
    for path in doc.rglob("*") if doc.is_dir() else ():
        if path.is_file() and path.name != "copyright":
            path.unlink()
    (rootfs / "etc/machine-id").write_text("")


# --- steps 2 and 3: runtime and role images -------------------------------------------------


def build_images(
    base: str | None = None,
    extra: Iterable[str] = (),
    fresh: bool = False,
    sync: bool = False,
    progress: Progress = print,
) -> dict[str, str]:
    """Build the scheduler, worker and notebook images for this client; return their names.

    ``base``: an image with this client's Python at /usr/local/bin/python3; ``"debian"``
    for the offline base (made by :func:`build_base` first if missing, or if ``fresh``).
    By default the offline base if the engine has it, else ``python:X.Y.Z-slim``.
    ``fresh`` rebuilds every step, wheelhouse included, with no cache. ``sync`` puts this
    whole environment into the scheduler and worker images, every distribution at its
    version as installed here, not only the default lock; backends then prefer them.
    """
    client = engine.docker_client()
    lock = Lock.of_this_client(extra, sync)
    if base == "debian":
        if fresh or not engine.image_exists(client, base_name()):
            build_base(progress=progress)
        base = base_name()
    elif base is None:
        offline = engine.image_exists(client, base_name())
        base = base_name() if offline else f"python:{lock.python}-slim"
    if not engine.image_exists(client, base):
        progress(
            f"{base} is not on this engine, so the build will pull it; with no registry, "
            "use --base debian to build a base from Debian's archive instead"
        )
    buildargs = {
        "BASE_IMAGE": base,
        "CLUSTERCTL_VERSION": __version__,
        "CLUSTERCTL_LOCK": lock.label(),
        # A synced lock is installed as it is, without pip's resolver: exactly what is
        # installed here, even where this environment's own requirements disagree.
        "CORE_INSTALL_OPTIONS": "--no-deps" if lock.synced else "",
    }
    runtimes = {role: image_name(f"{role}-runtime", lock.tag) for role in ROLES}
    if fresh or not all(engine.image_exists(client, name) for name in runtimes.values()):
        wheelhouse = build_wheelhouse(lock, fresh, progress)
        for i, (role, name) in enumerate(runtimes.items()):
            progress(f"building {name} from {base}")
            # fresh: the first target rebuilds the shared stages; the others reuse them
            _build(
                client,
                wheelhouse,
                progress,
                dockerfile="Dockerfile.runtime",
                target=role,
                tag=name,
                buildargs=buildargs,
                pull=False,
                nocache=fresh and i == 0,
            )
    if unavailable := _lines(_wheelhouse_dir(lock) / "unavailable.txt"):
        progress(f"not in the images, no wheel to be had for: {', '.join(unavailable)}")
    names = {role: image_name(role, lock.tag) for role in ROLES}

    def build_role(role: str) -> None:
        progress(f"building {names[role]}")
        _build(
            client,
            context,
            progress,
            tag=names[role],
            buildargs={"RUNTIME_IMAGE": runtimes[role]},
        )
        client.images.get(names[role]).tag(f"clusterctl-{role}", "latest")

    with tempfile.TemporaryDirectory(prefix="clusterctl-app-") as tmp:
        context = _app_context(Path(tmp), progress)
        with (context / "Dockerfile").open("a") as dockerfile:
            dockerfile.write(label_instruction(oci_labels(base)))
        with ThreadPoolExecutor(max_workers=len(ROLES)) as pool:  # the engine overlaps the I/O
            list(pool.map(build_role, ROLES))
    return names


def build_wheelhouse(lock: Lock, fresh: bool = False, progress: Progress = print) -> Path:
    """Wheels of every locked package and their dependencies, as installed here.

    The folder is also the build context of ``Dockerfile.runtime``; cached per lock. For a
    synced lock, packages installed from a local folder are built into wheels here, and
    those no wheel can be had for are left out and listed in ``unavailable.txt``.
    """
    folder = _wheelhouse_dir(lock)
    if (folder / "lock.txt").exists() and not fresh:
        progress(f"wheelhouse {folder} (cached)")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        wheels = folder / "wheels"
        wheels.mkdir(parents=True)
        pins = sorted(f"{n}=={v}" for n, v in _host_packages().items())
        (folder / "constraints.txt").write_text("\n".join(pins) + "\n")
        (folder / "notebook.txt").write_text("\n".join(lock.notebook_requirements()) + "\n")
        if lock.synced:
            core = _sync_wheels(lock, wheels, progress)
            (folder / "unavailable.txt").write_text(
                "".join(f"{p}\n" for p in lock.core_requirements() if p not in core)
            )
        else:
            core = lock.core_requirements()
        (folder / "core.txt").write_text("\n".join(core) + "\n")
        # A synced lock's wheels are all there by now; the rest come with their dependencies.
        wanted = ["notebook.txt"] if lock.synced else ["core.txt", "notebook.txt"]
        progress(f"pip wheel: {' and '.join(wanted)}, with their dependencies")
        requirements = [arg for name in wanted for arg in ("-r", str(folder / name))]
        _pip_wheel(
            wheels,
            "--find-links",
            str(wheels),
            "-c",
            str(folder / "constraints.txt"),
            *requirements,
            progress=progress,
        )
        if not list(wheels.glob("pip-*.whl")):  # pip wheel leaves pip out when it is installed
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--dest",
                    str(wheels),
                    f"pip=={lock.notebook['pip']}",
                ],
                progress,
            )
        pins = sorted(_pin_of_wheel(w.name) for w in wheels.glob("*.whl"))
        for whl in wheels.glob("*.whl"):  # the build context wants them at its top
            whl.rename(folder / whl.name)
        wheels.rmdir()
        (folder / "lock.txt").write_text("\n".join(pins) + "\n")
    shutil.copy2(IMAGES_DIR / "Dockerfile.runtime", folder / "Dockerfile.runtime")
    shutil.copy2(IMAGES_DIR / "trim.py", folder / "trim.py")
    return folder


def _wheelhouse_dir(lock: Lock) -> Path:
    return _cache_dir() / f"wheelhouse-{'sync-' if lock.synced else ''}{lock.digest}"


def _sync_wheels(lock: Lock, wheels: Path, progress: Progress) -> list[str]:
    """Wheels in ``wheels`` of every package of a synced lock that has one; return the
    pins that do. Packages installed from a local folder are built from it; the others
    come from pip's cache or index, all at once, then one by one to find which failed."""
    index: list[str] = []
    local: dict[str, Path] = {}
    for pin in lock.core_requirements():
        source = environment.local_source(pin.partition("==")[0])
        if source is None:
            index.append(pin)
        else:
            local[pin] = source
    progress(f"sync: {len(index)} packages from pip's cache or index, {len(local)} from folders")
    found = []
    for pin, source in local.items():
        try:
            if source.is_file() and source.suffix == ".whl":
                shutil.copy2(source, wheels / source.name)
            else:
                progress(f"building a wheel of {pin} from {source}")
                _pip_wheel(wheels, "--no-deps", str(source), progress=progress)
            found.append(pin)
        except (OSError, ClusterctlError):
            pass
    try:
        _pip_wheel(wheels, "--no-deps", *index, progress=progress)
        return found + index
    except ClusterctlError:
        progress("sync: some packages have no wheel; finding which")

    def has_wheel(pin: str) -> bool:
        try:
            _pip_wheel(wheels, "--no-deps", pin, progress=progress)
        except ClusterctlError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        had = list(pool.map(has_wheel, index))
    return found + [pin for pin, ok in zip(index, had, strict=True) if ok]


def _pip_wheel(wheels: Path, *args: str, progress: Progress) -> None:
    """``pip wheel`` into ``wheels``: offline with the build tools installed here if that
    works, else in pip's isolated build environment."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "--wheel-dir",
        str(wheels),
        *args,
    ]
    try:
        _run([*command, "--no-build-isolation"], progress)
    except ClusterctlError:
        _run(command, progress)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _app_context(folder: Path, progress: Progress) -> Path:
    """The build context of ``Dockerfile``: ``app/`` is laid out as the image's root.

    clusterctl goes in as it is installed here, editable or not: its package files and its
    metadata into /opt/venv's site-packages, so the image build is a single COPY.
    """
    shutil.copy2(IMAGES_DIR / "Dockerfile", folder / "Dockerfile")
    app = folder / "app"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = app / "opt" / "venv" / "lib" / f"python{version}" / "site-packages"
    files = package_files(PACKAGE_DIR)
    progress(f"clusterctl {__version__}: {len(files)} files from {PACKAGE_DIR}")
    for path in files:
        _copy(PACKAGE_DIR / path, site / "clusterctl" / path)
    _write_metadata(site)
    _copy(IMAGES_DIR / "entrypoint.sh", app / "usr/local/bin/clusterctl-entrypoint", mode=0o755)
    _copy(IMAGES_DIR / "dask.yaml", app / "etc/dask/clusterctl.yaml")
    for path in files:
        if path.parts[0] == "notebooks" and path.suffix == ".ipynb":
            _copy(PACKAGE_DIR / path, app / "home/dask" / path)
    script = app / "opt/venv/bin/clusterctl"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\nexec /opt/venv/bin/python -m clusterctl "$@"\n')
    script.chmod(0o755)
    (app / "home" / "dask").mkdir(parents=True, exist_ok=True)
    for writable in (app / "opt" / "venv", app / "home" / "dask"):
        for path in [writable, *writable.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | ((mode & 0o700) >> 3))  # group gets what the owner has
    return folder


def _copy(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _write_metadata(site: Path) -> None:
    """clusterctl's ``.dist-info`` in ``site``, from the metadata installed here: its
    entry points (Dask's cluster discovery) and a RECORD of what was copied."""
    dist = metadata.distribution("clusterctl")
    info = site / f"clusterctl-{__version__}.dist-info"
    info.mkdir(parents=True)
    # METADATA in a wheel install, PKG-INFO in an egg-info (a source checkout's)
    (info / "METADATA").write_text(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
    (info / "entry_points.txt").write_text(dist.read_text("entry_points.txt") or "")
    (info / "INSTALLER").write_text("clusterctl image build\n")
    record = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    (info / "RECORD").write_text("".join(f"{p},,\n" for p in [*record, f"{info.name}/RECORD"]))


def package_files(package: Path) -> list[Path]:
    """The files of clusterctl's package folder that go into the images, relative to it.

    Every Python module outside hidden folders and ``__pycache__``, as a wheel would have
    it; of the other files (notebooks, data), in a git checkout (an editable install) only
    those git tracks, so nothing a user left lying around, such as notebook outputs or
    credentials. Symlinks never.
    """
    found = [
        p
        for p in package.rglob("*")
        if not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(package).parts
        )
    ]
    try:
        listed = subprocess.run(
            ["git", "-C", str(package), "ls-files", "-z"],  # paths relative to package
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):  # no git here
        listed = None
    if listed is not None and listed.returncode == 0 and listed.stdout:
        tracked = {package / p for p in listed.stdout.split("\0") if p}
        found = [p for p in found if p in tracked or p.suffix == ".py"]
    return sorted(p.relative_to(package) for p in found if p.is_file() and not p.is_symlink())


def oci_labels(base: str) -> dict[str, str]:
    """The OCI labels of the role images, set on the build's last step (so no cached step
    is redone for them): when and from what they were built, under which license. Those
    that can't be known here (``source`` with no URL to give, ``revision`` outside a git
    checkout) are left out rather than filled with a local path."""
    labels = {
        "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(
            timespec="seconds"
        ),
        "org.opencontainers.image.base.name": base,
        "org.opencontainers.image.licenses": _package_metadata().get("License") or "",
        "org.opencontainers.image.revision": _git("rev-parse", "HEAD"),
        "org.opencontainers.image.source": _source_url(),
    }
    if labels["org.opencontainers.image.revision"] and _git("status", "--porcelain"):
        labels["org.opencontainers.image.revision"] += "-dirty"  # built from changed files
    return {key: value for key, value in labels.items() if value}


def label_instruction(labels: dict[str, str]) -> str:
    """One Dockerfile ``LABEL`` line setting all of ``labels``: one step, where the build
    API's own ``labels`` adds one per label (each a commit of the whole image)."""

    def quoted(text: str) -> str:  # one line, in double quotes, nothing for the builder to expand
        return json.dumps(" ".join(text.split()), ensure_ascii=False).replace("$", "\\$")

    return "LABEL " + " ".join(f"{quoted(k)}={quoted(v)}" for k, v in labels.items()) + "\n"


def _source_url() -> str:
    """Where clusterctl's source is: its checkout's remote when that is a URL, else the
    package's ``Source`` project URL; "" when neither is known."""
    remote = _git("remote", "get-url", "origin")
    if re.match(r"(https?|ssh|git)://|git@", remote):
        return remote
    for entry in _package_metadata().get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("source", "repository") and "://" in url:
            return url.strip()
    return ""


def _git(*args: str) -> str:
    """The output of a git command in clusterctl's own checkout ("" outside one)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _package_metadata() -> Any:
    try:
        return metadata.metadata("clusterctl")
    except metadata.PackageNotFoundError:  # an empty one: get() and get_all() answer None
        from email.message import Message

        return Message()


def _host_packages() -> dict[str, str]:
    """Every distribution installed here but clusterctl itself, which images add apart."""
    return {n: v for n, v in environment.installed().items() if n != "clusterctl"}


def _pin_of_wheel(filename: str) -> str:
    name, version = filename.split("-")[:2]
    return f"{name}=={version}"


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(base) / "clusterctl"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(command: list[str], progress: Progress) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterctlError(
            f"{command[0]} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    return result.stdout


# --- shipping without a registry ------------------------------------------------------------


def save_images(path: Path, names: Iterable[str] | None = None) -> list[str]:
    """Write images (default: this client's three) to one archive, gzip-compressed unless
    its name ends in ``.tar`` (quicker to write and load where its size doesn't matter)."""
    client = engine.docker_client()
    names = list(names or (default_image(role) for role in ROLES))
    missing = [n for n in names if not engine.image_exists(client, n)]
    if missing:
        raise UserInputError(
            f"no such image(s): {', '.join(missing)}; run `clusterctl image build`"
        )
    # One tar of several images (the SDK's get_image takes one): GET /images/get?names=...
    url = f"{client.api.base_url}/v{client.api.api_version}/images/get"
    response = client.api.get(url, params={"names": names}, stream=True)
    response.raise_for_status()
    plain = path.suffix == ".tar"
    with open(path, "wb") if plain else gzip.open(path, "wb", compresslevel=3) as out:
        for chunk in response.iter_content(chunk_size=1 << 20):
            out.write(chunk)
    return names


def load_images(path: Path) -> list[str]:
    """Load an archive from :func:`save_images` into the engine DOCKER_HOST names."""
    if not path.is_file():
        raise UserInputError(f"no such archive: {path}")
    client = engine.docker_client()
    with open(path, "rb") as f:
        result = client.api.load_image(f)
    loaded = []
    for item in _iter(result):
        if "error" in item:
            raise ClusterctlError(f"loading {path} failed: {item['error']}")
        if text := item.get("stream", ""):
            loaded += re.findall(r"Loaded image: (\S+)", text)
    return loaded


def _iter(result: Any) -> Iterator[dict[str, Any]]:
    if isinstance(result, dict):
        yield result
    else:
        yield from result
