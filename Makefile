# The two commands of the README:
#   make demo   train + evaluate ViT-Adapter Mask R-CNN on the generated demo dataset (CPU)
#   make test   run the test suite
#   make demo-seg  train + evaluate ViT-Adapter + UperNet on the generated segmentation dataset (CPU);
#                  HEAD=mask2former: the Mask2Former head instead (configs/demo/<HEAD>_vit_adapter_demo_seg.py);
#                  CONFIG=<file> runs another segmentation demo config the same way
# Both create .venv and install everything on first use (see tools/bootstrap.sh).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
export PYTHON VENV

.PHONY: install test test-d2main demo demo-seg benchmark

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

HEAD ?= upernet
DEMO_SEG_CONFIG ?= configs/demo/$(HEAD)_vit_adapter_demo_seg.py
CONFIG ?= $(DEMO_SEG_CONFIG)
demo-seg: install
	$(PYTHON) tools/run_demo_seg.py --config-file $(CONFIG) $(OPTS)

benchmark: install
	$(PYTHON) tools/benchmark.py
