# ovseg-d2: one entry point for setting up, testing and running the main job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ovseg-installed
OUTPUT ?= output/demo
LEADERBOARD ?= output/leaderboard
# OpenMP threads sleep instead of spinning while they wait: on a 2-core machine shared by several
# processes (multi-process tests, data workers) spinning threads slow small-tensor work down 5-10x.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test demo leaderboard web-demo toy-world clean-venv

# Create the virtual environment once; re-run the installer only when its inputs change.
setup: $(STAMP)

$(STAMP): setup.py requirements/base.txt requirements/test.txt tools/install_env.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	bash tools/install_env.sh $(PY)
	@touch $(STAMP)

# The whole test suite on CPU (tiny models, generated data). Processes the tests spawn print their
# Python stacks if they crash (SIGSEGV, SIGABRT), as pytest does for its own process.
test: export PYTHONFAULTHANDLER = 1
test: setup
	$(PY) -m pytest -q tests

# The main job: toy world -> tiny CLIP -> CAT-Seg on seen classes -> evaluation (seen/unseen/hIoU) -> overlays.
demo: setup
	$(PY) tools/run_demo.py --output $(OUTPUT)

# Every method's toy config trained the way its paper trains and evaluated on toy_val: one table
# (LEADERBOARD/leaderboard.md + .json), cached and resumable; e.g. LEADERBOARD_ARGS="--seeds 0 1 2 --clip-seeds 0 1 2".
leaderboard: setup
	$(PY) tools/run_demo.py --methods all --output $(LEADERBOARD) $(LEADERBOARD_ARGS)

# The web page (Gradio) over the trained toy runs of `make demo` / `make leaderboard`: http://127.0.0.1:7860
web-demo: setup
	$(PY) tools/web_demo.py --runs $(OUTPUT)

toy-world: setup
	$(PY) tools/make_toy_world.py --output $(OUTPUT)/toy_world

clean-venv:
	rm -rf $(VENV)
