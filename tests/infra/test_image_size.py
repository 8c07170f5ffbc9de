"""The heavy-dependency route: the optimizer's packages need a container image, not a zip.

pip installs images/optimizer/requirements.txt for Lambda's Python and platform (as the
Dockerfile does, cached under build/optimizer-image) and measures it: with the bytecode the
image ships it is over the 250 MB a zip function may hold with its layers, and far under the
10 GB of an image.
"""

from __future__ import annotations

import json

import pytest

from infra_cdk.layer_build import (
    IMAGE_LIMIT,
    REQUIREMENTS,
    ZIP_LIMIT,
    build_image_packages,
    requirements_file,
    unzipped_size,
)

pytestmark = pytest.mark.infra


def test_image_requirements_are_the_layers_plus_the_search_libraries(repo):
    wanted = requirements_file(repo / "images" / "optimizer" / "requirements.txt")
    assert set(REQUIREMENTS) <= set(wanted)
    assert "hyperopt==0.3.0" in wanted
    # An open torch pulls several GB of CUDA wheels: it is pinned whenever it is added.
    assert all(r == "torch==2.13.0" for r in wanted if r.split("=")[0].strip() == "torch")


def test_optimizer_packages_need_the_image_route(repo):
    packages = build_image_packages()
    installed = unzipped_size(packages, bytecode=False)
    shipped = unzipped_size(packages)
    chimera = unzipped_size(repo / "layers_shared" / "chimera", bytecode=False)
    print(
        f"optimizer image site-packages: {installed / 2**20:.1f} MiB installed, "
        f"{shipped / 2**20:.1f} MiB with bytecode"
    )
    assert (packages / "hyperopt").is_dir() and (packages / "scipy").is_dir()
    assert shipped + chimera > ZIP_LIMIT, "fits a zip now: the image route is not needed"
    assert shipped + chimera < IMAGE_LIMIT


def test_optimizer_is_a_container_image_function(synthesized, repo):
    functions = synthesized.stack.node.find_child("Functions")
    props = synthesized.resources[synthesized.logical_id(functions.optimizer)]["Properties"]
    assert props["PackageType"] == "Image"
    assert "Handler" not in props and "Layers" not in props
    assets = json.loads((synthesized.path.parent / "Chimera.assets.json").read_text())
    images = [a["source"] for a in assets["dockerImages"].values()]
    (source,) = [s for s in images if s["dockerFile"] == "images/optimizer/Dockerfile"]
    context = synthesized.path.parent / source["directory"]
    # The build context holds what the Dockerfile copies, and nothing large.
    assert (context / "images/optimizer/requirements.txt").is_file()
    assert (context / "functions/evolution/handler.py").is_file()
    assert (context / "layers_shared/chimera/__init__.py").is_file()
    assert not (context / ".venv").exists() and not (context / "build").exists()
    assert unzipped_size(context) < 5 * 2**20
