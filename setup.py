"""ovseg-d2: a Detectron2 project extension for open-vocabulary and zero-shot semantic segmentation.

`projects/<method>/` folders are installed as `ovseg_d2.projects.<method>`, the way detectron2 maps
`projects/PointRend/point_rend` to `detectron2.projects.point_rend`.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def project_packages() -> dict[str, str]:
    """Map every projects/<m> package (and its sub-packages) to ovseg_d2.projects.<m>."""
    mapping: dict[str, str] = {}
    for init in sorted((ROOT / "projects").glob("*/**/__init__.py")):
        rel = init.parent.relative_to(ROOT)
        name = "ovseg_d2." + ".".join(rel.parts)
        mapping[name] = str(rel)
    return mapping


PROJECTS = project_packages()

setup(
    name="ovseg-d2",
    version="0.1.0",
    description="Open-vocabulary and zero-shot semantic segmentation on Detectron2 "
    "(CAT-Seg, Cascade-CLIP, TCL, OVSegmentor, SAZS)",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ovseg_d2", "ovseg_d2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"ovseg_d2": ["data/vocab/*.json", "clip/model_configs/*.json", "clip/templates/*.txt",
                              "data/toy/weights/*.pt", "data/toy/weights/scores.json"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "open_clip_torch>=2.24",
        "timm>=0.9",
        "fvcore",
        "pycocotools",
        "opencv-python-headless",
        "scipy",
        "numpy",
        "tqdm",
        "webdataset",
        "safetensors",
        "transformers>=4.40",
    ],
)
