"""Builds the shared Lambda layer folder for the Lambda runtime, without Docker.

pip installs the runtime dependencies as manylinux wheels for the Lambda's Python and
architecture into build/layer/python, then adds the chimera package and the breast-cancer
split (computed here by scikit-learn, which is too large for the layer). A stamp keyed on the
inputs makes repeated synths instant. `install_for_lambda` is the same pip step for the
optimizer image's requirements (its size test, tests/infra/test_image_size.py).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
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
    "ddsketch>=3.0,<4",
)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
ZIP_LIMIT = 250 * 2**20  # a function's code plus its layers, unzipped
IMAGE_LIMIT = 10 * 2**30  # a container image function, uncompressed


def _fingerprint() -> str:
    digest = hashlib.sha256("\n".join(REQUIREMENTS + PLATFORMS + (LAYER_PYTHON,)).encode())
    for path in sorted((REPO / "layers_shared/chimera").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def install_for_lambda(requirements: Sequence[str], target: Path) -> None:
    """pip install `requirements` as Lambda's Python on x86_64 would import them."""
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
            *requirements,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install for Lambda failed:\n{proc.stdout}\n{proc.stderr}")


def build_layer(out: Path = REPO / "build" / "layer") -> Path:
    stamp = out / ".stamp"
    fingerprint = _fingerprint()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return out
    if out.exists():
        shutil.rmtree(out)
    target = out / "python"
    install_for_lambda(REQUIREMENTS, target)
    shutil.copytree(
        REPO / "layers_shared/chimera",
        target / "chimera",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    from chimera.domain.suites import write_breast_cancer_split

    write_breast_cancer_split(target / "chimera" / "data" / "breast_cancer_split.npz")
    stamp.write_text(fingerprint)
    return out


def requirements_file(path: Path) -> tuple[str, ...]:
    """The requirement lines of a pip requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def build_image_packages(
    requirements: Path = REPO / "images" / "optimizer" / "requirements.txt",
    out: Path = REPO / "build" / "optimizer-image",
) -> Path:
    """The optimizer image's site-packages as the Dockerfile installs them (cached by stamp)."""
    wanted = requirements_file(requirements)
    fingerprint = hashlib.sha256(
        "\n".join(wanted + PLATFORMS + (LAYER_PYTHON,)).encode()
    ).hexdigest()[:16]
    stamp = out / ".stamp"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return out / "site-packages"
    if out.exists():
        shutil.rmtree(out)
    install_for_lambda(wanted, out / "site-packages")
    # The Dockerfile compiles bytecode into the image (no compile at each cold start); this
    # interpreter's .pyc stand in for the runtime's in the size (a few files may not compile
    # under an older Python: they are counted as source only).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(out / "site-packages")],
        capture_output=True,
    )
    stamp.write_text(fingerprint)
    return out / "site-packages"


def unzipped_size(folder: Path, *, bytecode: bool = True) -> int:
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and (bytecode or p.suffix != ".pyc")
    )


if __name__ == "__main__":
    path = build_layer()
    print(f"{path}: {unzipped_size(path) / 2**20:.1f} MiB unzipped")
    packages = build_image_packages()
    print(
        f"{packages}: {unzipped_size(packages, bytecode=False) / 2**20:.1f} MiB as installed, "
        f"{unzipped_size(packages) / 2**20:.1f} MiB with bytecode"
    )
