# The two commands of the README:
#   make demo   train + evaluate ViT-Adapter Mask R-CNN on the generated demo dataset (CPU)
#   make test   run the test suite
# Both create .venv and install everything on first use (see tools/bootstrap.sh).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
export PYTHON VENV

.PHONY: install test test-d2main demo benchmark

$(VENV)/.installed: setup.py tools/bootstrap.sh tools/install_detectron2.py
	bash tools/bootstrap.sh
	touch $@

install: $(VENV)/.installed

test: install
	$(PYTHON) -m pytest tests -q

# The suite, a 20-iteration demo and detectron2's own lazyconfig_train_net.py on upstream
# detectron2 main built from ../shared/vendor (own environment .venv-d2main; CI runs it).
test-d2main:
	bash tools/ci_detectron2_main.sh

demo: install
	$(PYTHON) tools/run_demo.py

benchmark: install
	$(PYTHON) tools/benchmark.py
