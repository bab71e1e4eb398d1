"""What the backends that run our images on a Docker Engine share (docker, compose, swarm).

Each of them finds a cluster the same way, by the labels on what it made (see
:mod:`clusterctl.labels`) and by the state folder that names it, and gives its containers
the same network name, images, labels, mounts and secrets. How a scheduler and workers are
created and removed is each backend's own.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from clusterctl import engine, images, labels, state
from clusterctl.backends.base import Backend
from clusterctl.errors import UserInputError
from clusterctl.spec import ClusterSpec, Mount, WorkerGroup


class ContainerBackend(Backend):
    """A cluster of labelled containers (or swarm services) of clusterctl's images."""

    # Whether swarm services and secrets are among what the backend makes.
    services = False
    # Where the scheduler's labels, with the spec, are read from, and how its absence reads.
    scheduler_holder = "container"
    # Why a cluster named in a state folder can't be read when the engine answers, but
    # engine_or_none() finds it no use (swarm: not a manager). None: it always is.
    wrong_engine: str | None = None
    # What it means for the backend's clusters that the engine does not answer.
    no_answer_means = ""

    def __init__(self, spec: ClusterSpec, problem: str | None = None):
        super().__init__(spec, problem)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The engine's docker SDK client."""
        if self._client is None:
            self._client = engine.docker_client()
        return self._client

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def engine_or_none(cls) -> Any | None:
        """The engine to find this backend's clusters on, or None when there is none."""
        return engine.client_or_none()

    @classmethod
    def scheduler_labels(cls, client: Any, name: str) -> dict[str, str] | None:
        """The labels of cluster ``name``'s scheduler, or None when it has none."""
        found = client.containers.list(
            ignore_removed=True, all=True, filters=labels.filters(cls.kind, name, "scheduler")
        )
        return found[0].labels if found else None

    @classmethod
    def cluster_names(cls) -> list[str]:
        names = {n for n in state.names() if state.stored_backend(n) == cls.kind}
        client = cls.engine_or_none()
        if client is not None:
            names.update(engine.labelled_names(client, cls.kind, cls.services))
        return sorted(names)

    @classmethod
    def attach(cls, name: str) -> ContainerBackend | None:
        client = cls.engine_or_none()
        in_state = state.stored_backend(name) == cls.kind
        if client is None:
            if not in_state:
                return None
            placeholder = ClusterSpec.placeholder(name, cls.kind)
            if cls.wrong_engine and engine.client_or_none() is not None:
                return cls(placeholder, problem=cls.wrong_engine)
            problem = (
                f"its state folder names the {cls.kind} backend, and no Docker Engine answers "
                f"at {engine.docker_host()}{cls.no_answer_means}; nothing was changed"
            )
            backend = cls(placeholder, problem=problem)
            backend.unreachable = True
            return backend
        holder = f"its scheduler {cls.scheduler_holder}"
        found = cls.scheduler_labels(client, name)
        if found is not None:
            spec, problem = labels.spec_of(found, name, cls.kind, holder)
            backend = cls(spec, problem=problem)
        else:
            left = engine.remains(client, cls.kind, name, cls.services)
            if not left and not in_state:
                return None
            problem = f"{holder} is gone (left: {', '.join(left) or 'its state'})"
            backend = cls(ClusterSpec.placeholder(name, cls.kind), problem=problem)
        backend._client = client
        return backend

    # --- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        super().preflight()
        wanted = {self._image("scheduler")} | {self._image("worker", g) for g in self.spec.workers}
        if self.spec.notebook.enabled:
            wanted.add(self._image("notebook"))
        missing = sorted(i for i in wanted if not engine.image_exists(self.client, i))
        if missing:
            raise UserInputError(
                f"image(s) not on this engine: {', '.join(missing)}; build them with "
                "`clusterctl image build` (or load them with `clusterctl image load`)"
            )

    # --- shared pieces --------------------------------------------------------------------

    @property
    def _network(self) -> str:
        return f"clusterctl-{self.spec.name}"

    def _image(self, role: str, group: WorkerGroup | None = None) -> str:
        if group is not None and group.image:
            return group.image
        return images.default_image(role, self.client)

    def _labels(self, role: str | None = None, group: str | None = None) -> dict[str, str]:
        return labels.of(self.spec.name, self.kind, role, group)

    def _address_in_network(self) -> str:
        protocol = "tls" if self.spec.security.tls else "tcp"
        return f"{protocol}://{self.spec.name}-scheduler:8786"

    def _write_notebook_token(self) -> Path:
        """A fresh JupyterLab token in the state folder, for mounting (never in env)."""
        token_file = state.make_cluster_dir(self.spec.name) / "notebook" / "token"
        state.write_text(token_file, secrets.token_urlsafe(24))
        share_with_containers(token_file.parent)
        return token_file

    def _notebook_token(self) -> str | None:
        return state.read_text(state.cluster_dir(self.spec.name) / "notebook" / "token")

    @staticmethod
    def _mounts(mounts: tuple[Mount, ...]) -> dict[str, dict[str, str]]:
        return {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts}


def share_with_containers(folder: Path) -> None:
    """Let the containers' user read a folder of secrets we mount, and no one else.

    As root, the containers run as uid 1000 in group 0: the files stay root's and group 0
    (root's group) may read them. Otherwise the containers run as this user (see
    :func:`clusterctl.launch.container_user`) and read them as their owner already.
    """
    if os.geteuid() == 0:
        folder.chmod(0o750)
        for path in folder.iterdir():
            path.chmod(0o640)
