"""The backends' own files, rendered from a spec: pure functions of the spec and the tag of
clusterctl's images, which need no engine and import no backend.

- :mod:`.compose`: a Compose file (the compose backend's, or one for plain ``docker compose``);
- :mod:`.stack`: a stack file for ``docker stack deploy``;
- :mod:`.kubernetes`: manifests for ``kubectl apply``, or a DaskCluster for the operator.

``clusterctl render`` prints them; ``scripts/render-deploy`` writes ``deploy/`` and
``docker-compose.yml`` from the default spec.
"""

RENDERED = ("compose", "swarm", "kubernetes")  # the backends whose own files are rendered
