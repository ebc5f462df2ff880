# make install   .venv with torch pinned, tsekit and all extras
# make test      the test suite (installs first)
# make docs      the manual (docs/) as a site in site/; any warning fails it
# make demo      mini corpus + egs/mini_libri2mix/run.sh as far as the built stages reach; ends with the report's path
#                and the packaged Z-SpEx, with the command and Python lines that run it on your own recording
SHELL := /bin/bash
VENV ?= .venv
EXTRAS ?= asr,codec,dac,docs,metrics,report,test
PYTEST_ARGS ?=
# the last recipe stage this version of tsekit implements
DEMO_STOP_STAGE ?= 9

.PHONY: install test test-all demo lint docs clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml tools/constraints.txt tools/install.sh tools/requirements.py
	bash tools/install.sh $(VENV) $(EXTRAS)
	touch $@

test: install
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(VENV)/bin/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check tsekit tests tools bench

# NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2, printed on every build, says nothing about these docs
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

demo: install
	bash tools/system_packages.sh
	cd egs/mini_libri2mix && PATH=$(CURDIR)/$(VENV)/bin:$$PATH ./run.sh --stop-stage $(DEMO_STOP_STAGE)
	@# stage 8 wrote one page per test set; say where, last
	@for page in $(CURDIR)/egs/mini_libri2mix/exp/report/*/index.html; do \
	  if [ -f "$$page" ]; then echo "demo report (open it in a browser): $$page"; fi; done
	@# stage 9 packaged the demo's Z-SpEx: how to run it on a recording of your own
	@model=$(CURDIR)/egs/mini_libri2mix/exp/zspex/packaged; if [ -f "$$model/manifest.json" ]; then \
	  echo "packaged model: $$model (its model card: $$model/README.md)"; \
	  echo "extract a speaker from your own recording:"; \
	  echo "  $(CURDIR)/$(VENV)/bin/tsekit extract --model $$model --mix MIXTURE.wav --enroll ENROLLMENT.wav -o TARGET.wav"; \
	  echo "or in Python ($(CURDIR)/$(VENV)/bin/python):"; \
	  echo "  import soundfile as sf, tsekit"; \
	  echo "  model = tsekit.load_model('$$model')"; \
	  echo "  mixture, rate = sf.read('MIXTURE.wav'); enrollment, _ = sf.read('ENROLLMENT.wav')"; \
	  echo "  sf.write('TARGET.wav', model.extract(mixture, enrollment, rate), rate)"; fi

clean:
	rm -rf $(VENV) site egs/*/data egs/*/dump egs/*/exp egs/mini_libri2mix/downloads
