"""The code's shape, as the architecture (docs/architecture.md) promises it: modules use each
other's public names only, and the layers import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "clusterctl"


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}")
    assert found == []


def loaded_by(module: str) -> set[str]:
    """The clusterctl modules that importing ``module`` loads, in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if 'clusterctl' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_supervisors_record_does_not_import_the_controller():
    assert "clusterctl.cluster" not in loaded_by("clusterctl.supervisor")


def test_the_renderers_and_the_engine_module_import_no_backend():
    modules = ["clusterctl.engine", "clusterctl.images", "clusterctl.labels", "clusterctl.launch"]
    modules += [f"clusterctl.render.{name}" for name in ("compose", "stack", "kubernetes")]
    for module in modules:
        backends = {m for m in loaded_by(module) if m.startswith("clusterctl.backends")}
        assert backends == set(), f"{module} loads {sorted(backends)}"
