"""The compose backend: a cluster as a Compose project named after it.

The project's file is :func:`clusterctl.render.compose.render` of the spec. Compose creates
the containers and scales worker services up; the containers carry the docker backend's
labels, so status, logs, ``from_name`` and ``down`` read the engine exactly as that backend
does (this class extends it).

Scale-down: the controller retires the workers it chose through the scheduler, then the
docker backend's ``stop_workers`` removes exactly those containers through the engine
(Compose keeps no state but the containers' labels). Left to itself, ``--scale`` would
remove the highest-numbered replicas, data and all.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import replace
from functools import cache
from typing import Any

import yaml

from clusterctl import images, labels, state
from clusterctl.backends.containers import share_with_containers
from clusterctl.backends.docker import DockerBackend
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.render.compose import render
from clusterctl.security import tls_files
from clusterctl.spec import ClusterSpec, WorkerGroup

logger = logging.getLogger(__name__)


class ComposeBackend(DockerBackend):
    kind = "compose"

    def start_scheduler(self) -> None:
        if self.spec.security.tls:
            share_with_containers(tls_files(self.spec.name).ca.parent)
        self._compose("up", "-d", "--no-recreate", "scheduler")
        if self.spec.notebook.enabled:
            self._write_notebook_token()
            self._compose("up", "-d", "--no-recreate", "--no-deps", "notebook")

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        before = {c.id for c in self._service_containers(group.name)}
        # The group as told (its memory limit sized), in the file its new containers get;
        # --no-recreate leaves the running ones as they are.
        workers = tuple(group if g.name == group.name else g for g in self.spec.workers)
        self._compose(
            "up",
            "-d",
            "--no-recreate",
            "--no-deps",
            "--scale",
            f"{group.name}={len(before) + n}",
            group.name,
            spec=replace(self.spec, workers=workers),
        )
        return [
            self._member_name(c) for c in self._service_containers(group.name) if c.id not in before
        ]

    def _member_name(self, container: Any) -> str:
        if container.labels.get(labels.ROLE) == "worker":  # its hostname: the id's first 12
            return container.id[:12]
        return container.name

    def _service_containers(self, service: str) -> list[Any]:
        return [c for c in self._containers() if c.labels.get(labels.GROUP) == service]

    def _compose(self, *args: str, spec: ClusterSpec | None = None) -> None:
        """Run Compose on this cluster's file (0600, in its 0700 folder: it holds env values),
        written afresh from the spec (or ``spec``); within ``start-timeout`` plus a minute."""
        file = state.make_cluster_dir(self.spec.name) / "docker-compose.yml"
        tag = images.default_tag(self.client)
        rendered = render(spec or self.spec, dashboard=self.dashboard_address(), tag=tag)
        state.write_text(file, yaml.safe_dump(rendered, sort_keys=False))
        command = [*compose_command(), "--project-name", self.spec.name, "--file", str(file)]
        shown = f"`{' '.join(command[:-4])} {' '.join(args)}`"
        timeout = self.spec.start_timeout + 60
        logger.info("running %s", shown)
        try:
            done = subprocess.run(
                [*command, *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterctlError(f"{shown} did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            raise ClusterctlError(f"{shown} failed:\n{done.stderr.strip()[-3000:]}")


@cache
def compose_command() -> tuple[str, ...]:
    """``docker compose`` (v2) where that plugin is installed, else ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        v2 = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if v2.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise UserInputError(
        "backend: compose needs Docker Compose: the `docker compose` plugin or `docker-compose`"
    )
