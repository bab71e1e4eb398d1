"""Remove what a runtime never needs from an installed Python prefix (run in the image build).

- every package's tests; C headers and sources of the big packages;
- Arrow Flight and Arrow's own S3 client (RPC and S3 code Dask does not use; fsspec/s3fs
  read S3), and Arrow's C++ test module;
- bokeh's unminified JavaScript, source maps and extension compiler (the dashboard serves
  the minified bundles);
- identical copies of a shared library (wheels cannot hold symlinks): kept once, linked.
"""

import hashlib
import os
import shutil
import sys
from pathlib import Path

DIRS = {"tests", "test", "include", "src", "benchmarks"}
FILES = ("*.pyx", "*.pxd", "*.pxi", "*.h", "*.hpp", "*.c", "*.cc", "*.cpp")
PYARROW_FILES = ("*flight*.so*", "libarrow_s3.so*", "_s3fs.*.so", "_pyarrow_cpp_tests*.so")


def trim(site: Path) -> None:
    for tests in [*site.glob("*/tests"), *site.glob("*/test")]:  # every package's own tests
        if tests.is_dir() and not tests.is_symlink():
            shutil.rmtree(tests, ignore_errors=True)
    for pkg in ("pandas", "pyarrow", "numpy", "bokeh", "dask", "distributed"):
        root = site / pkg
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir() and path.name in DIRS and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        remove(root, FILES)
    remove(site / "pyarrow", PYARROW_FILES)
    static = site / "bokeh" / "server" / "static" / "js"
    if static.is_dir():
        shutil.rmtree(static / "lib", ignore_errors=True)
        remove(static, ("*.map", "compiler.js"))
        for script in static.glob("*.js"):
            if script.with_suffix(".min.js").exists() and not script.name.endswith(".min.js"):
                script.unlink()
    link_duplicates(site)


def remove(root: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in root.rglob(pattern) if root.is_dir() else ():
            path.unlink(missing_ok=True)


def link_duplicates(site: Path) -> None:
    """libfoo.so, libfoo.so.1 and libfoo.so.1.0 shipped as three copies: keep one."""
    by_hash: dict[tuple[Path, str], list[Path]] = {}
    for lib in site.rglob("lib*.so*"):
        if lib.is_file() and not lib.is_symlink():
            digest = hashlib.sha256(lib.read_bytes()).hexdigest()
            by_hash.setdefault((lib.parent, digest), []).append(lib)
    for copies in by_hash.values():
        keep, *others = sorted(copies, key=lambda p: len(p.name), reverse=True)
        for other in others:
            other.unlink()
            os.symlink(keep.name, other)


for site_packages in Path(sys.argv[1]).glob("lib/python3*/site-packages"):
    trim(site_packages)
