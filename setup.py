from setuptools import find_packages, setup

setup(
    name="mrfa",
    version="0.1.0",
    description="Learning Motion Refinement for Unsupervised Face Animation (MRFA, NeurIPS 2023): "
    "a faithful, tested re-implementation",
    packages=find_packages(include=["mrfa", "mrfa.*"]),
    package_data={"mrfa": ["configs/*.yaml", "ops/corr_lookup/csrc/*"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "pillow",
        "scikit-image",
        "imageio",
        "imageio-ffmpeg",
        "pyyaml",
        "tqdm",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest"],
        "face": ["face-alignment"],
    },
    entry_points={"console_scripts": ["mrfa=mrfa.cli:main"]},
)
