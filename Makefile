# The two commands of the README:
#   make demo   train + evaluate ViT-Adapter Mask R-CNN on the generated demo dataset (CPU)
#   make test   run the test suite
#   make demo-seg  train + evaluate ViT-Adapter + UperNet on the generated segmentation dataset (CPU);
#                  HEAD=mask2former: the Mask2Former head instead (configs/demo/<HEAD>_vit_adapter_demo_seg.py);
#                  CONFIG=<file> runs another segmentation demo config the same way
# Both create .venv and install everything on first use (see tools/bootstrap.sh).
#   PYTHON=/path/to/python make test    use that environment instead of .venv (docs/install.md)
#   make test-d2main D2MAIN_SRC=../detectron2   the suite on upstream detectron2 main (a checkout
#                                       or a .tar.gz of one; see tools/ci_detectron2_main.sh)
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
BOOTSTRAP ?= bash tools/bootstrap.sh
export PYTHON VENV

# "installed" stamp: inside the virtual environment when it is ours (removing .venv/
# reinstalls), else under build/ for that interpreter (no .venv/ is created for it).
ifeq ($(PYTHON),$(VENV)/bin/python)
INSTALL_STAMP := $(VENV)/.installed
else
INSTALL_STAMP := build/make/installed$(subst /,_,$(PYTHON))
endif

.PHONY: install test test-d2main demo demo-seg benchmark

$(INSTALL_STAMP): setup.py tools/bootstrap.sh tools/install_detectron2.py
	$(BOOTSTRAP)
	@mkdir -p $(@D)
	touch $@

install: $(INSTALL_STAMP)

test: install
	$(PYTHON) -m pytest tests -q

# The suite, a 20-iteration demo and detectron2's own lazyconfig_train_net.py on upstream
# detectron2 main built from source (own environment .venv-d2main; CI runs it). The source:
# D2MAIN_SRC (a git clone of https://github.com/facebookresearch/detectron2, or a .tar.gz),
# else ../shared/vendor's snapshot, else ../detectron2.
test-d2main:
	bash tools/ci_detectron2_main.sh $(D2MAIN_SRC)

demo: install
	$(PYTHON) tools/run_demo.py

HEAD ?= upernet
DEMO_SEG_CONFIG ?= configs/demo/$(HEAD)_vit_adapter_demo_seg.py
CONFIG ?= $(DEMO_SEG_CONFIG)
demo-seg: install
	$(PYTHON) tools/run_demo_seg.py --config-file $(CONFIG) $(OPTS)

benchmark: install
	$(PYTHON) tools/benchmark.py
