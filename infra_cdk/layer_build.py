"""Builds the shared Lambda layer folder for the Lambda runtime, without Docker.

pip installs the runtime dependencies as manylinux wheels for the Lambda's Python and
architecture into build/layer/python, then adds the chimera package and the breast-cancer
split (computed here by scikit-learn, which is too large for the layer). A stamp keyed on the
inputs makes repeated synths instant.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYER_PYTHON = "3.13"
# The Lambda runtime set minus scikit-learn (scipy alone would take the layer past 250 MB).
REQUIREMENTS = (
    "pydantic>=2.7,<3",
    "aws-lambda-powertools>=3.0,<4",
    "wasmtime>=50,<51",
    "deap>=1.4,<2",
    "numpy>=1.26",
    "gymnasium>=1.1,<2",
)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def _fingerprint() -> str:
    digest = hashlib.sha256("\n".join(REQUIREMENTS + PLATFORMS + (LAYER_PYTHON,)).encode())
    for path in sorted((REPO / "layers_shared/chimera").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_layer(out: Path = REPO / "build" / "layer") -> Path:
    stamp = out / ".stamp"
    fingerprint = _fingerprint()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return out
    if out.exists():
        shutil.rmtree(out)
    target = out / "python"
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--implementation",
            "cp",
            "--python-version",
            LAYER_PYTHON,
            "--only-binary=:all:",
            "--no-compile",
            *platform_args,
            *REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"layer build failed:\n{proc.stdout}\n{proc.stderr}")
    shutil.copytree(
        REPO / "layers_shared/chimera",
        target / "chimera",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    from chimera.domain.suites import write_breast_cancer_split

    write_breast_cancer_split(target / "chimera" / "data" / "breast_cancer_split.npz")
    stamp.write_text(fingerprint)
    return out


def unzipped_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


if __name__ == "__main__":
    path = build_layer()
    print(f"{path}: {unzipped_size(path) / 2**20:.1f} MiB unzipped")
