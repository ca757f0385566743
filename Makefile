# camfleet: the two README commands are `make demo` and `make test`.
.PHONY: demo test bench setup lint services

# e.g. make test PYTEST_ARGS="tests/hub -x"
PYTEST_ARGS ?=

demo:  ## install into .venv and run hub + trainer + agent on embedded defaults
	bash scripts/demo.sh

test:  ## install what the tests need (venv, mosquitto, postgresql), lint, run pytest
	bash scripts/test.sh $(PYTEST_ARGS)

bench:  ## run the benchmarks in bench/
	bash scripts/bench.sh

setup:  ## create .venv and install the packages and test tools
	bash scripts/setup.sh

services:  ## install/start mosquitto and postgresql for the tests (root)
	bash scripts/services.sh

lint:  ## ruff + mypy
	bash scripts/setup.sh
	CAMFLEET_MYPY=1 bash scripts/lint.sh
