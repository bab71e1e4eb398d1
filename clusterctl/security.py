"""TLS for a cluster: a key and certificate made per cluster, kept as files.

The files live in the cluster's state folder (readable by its owner only); backends hand
them to the scheduler and workers, and :func:`client_security` gives this machine's
clients a ``distributed.Security`` that uses them. They are never baked into images or
passed in environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distributed.security import Security

from clusterctl import state

if TYPE_CHECKING:
    from clusterctl.spec import ClusterSpec


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def exist(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()


def tls_files(name: str) -> TLSFiles:
    folder = state.cluster_dir(name) / "tls"
    return TLSFiles(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")


def create_tls_files(name: str) -> TLSFiles:
    """Make a fresh key and self-signed certificate for cluster ``name``.

    distributed's ``Security.temporary()`` makes them (one certificate, its own CA, for
    every role); we only write them to files so other processes can use them.
    """
    files = tls_files(name)
    made = Security.temporary()
    for path, text in (
        (files.ca, made.tls_ca_file),
        (files.cert, made.tls_client_cert),
        (files.key, made.tls_client_key),
    ):
        state.write_text(path, text)  # atomic and 0600; a full disk is a message
    return files


def plaintext_note(spec: ClusterSpec) -> str | None:
    """A warning for a cluster that runs without TLS where TLS is the default (all backends
    but kubernetes), however it was turned off: ``--no-tls``, a spec file, dask.config or
    ``DASK_CLUSTERCTL__SECURITY__TLS``; None when it uses TLS."""
    if spec.security.tls or spec.backend == "kubernetes":
        return None
    return (
        f"cluster {spec.name!r} runs without TLS (security.tls: false): any user of this "
        "machine who reaches its scheduler runs code as you there"
    )


def client_security(name: str, tls: bool) -> Security:
    """The ``Security`` a client on this machine needs for cluster ``name``."""
    if not tls:
        return Security()
    files = tls_files(name)
    for path in (files.ca, files.cert, files.key):
        state.check_regular(path)  # a FIFO there would hang every TLS handshake
    return Security(
        require_encryption=True,
        tls_ca_file=str(files.ca),
        tls_client_cert=str(files.cert),
        tls_client_key=str(files.key),
    )
