# fowm: `make demo` runs the main job, `make test` runs the tests. Both set themselves up first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MUJOCO_GL ?= egl

# ROS 2's own launch/CLI tools (pure Python, no PyPI wheels): wheels built from the upstream sources.
# In CI a copy of shared/ sits beside the clone; from elsewhere pass ROS2_TOOLS=/path/to/ros2-tools.
ROS2_TOOLS ?= ../shared/ros2-tools

.PHONY: setup sysdeps ros2-tools test test-fast lint demo bench clean

# Debian/Ubuntu libraries that the wheels expect: libusb (pyrealsense2), EGL/Mesa (headless MuJoCo),
# a C compiler for the planner's fused row kernels (fowm_core/planner/native.py), and iproute2's
# `ip` for the two-host test's network namespaces (tests/e2e/test_two_hosts.py).
sysdeps:
	@if ! ldconfig -p | grep -q 'libusb-1.0.so.0' || ! ldconfig -p | grep -q 'libEGL.so.1' \
	    || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || ! command -v gcc >/dev/null \
	    || ! command -v ip >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri gcc libc6-dev iproute2 >/dev/null; fi

$(BIN)/.installed: pyproject.toml ros2_ws/src/fowm/setup.py
	$(MAKE) sysdeps
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[sim,ros,hw,test]'
	$(BIN)/pip install -q --no-deps -e ./ros2_ws/src/fowm
	touch $@

setup: $(BIN)/.installed

# `ros2 launch`, `ros2 topic|node|param` in the venv, for tests/launch (which fail, not skip, when
# they are missing). Skipped with a note when the folder is absent: on a ROS distro, source it.
ros2-tools: $(BIN)/.ros2-tools

$(BIN)/.ros2-tools: $(BIN)/.installed $(wildcard $(ROS2_TOOLS)/*.whl)
	@if [ -f "$(ROS2_TOOLS)/install.sh" ]; then \
	  bash "$(ROS2_TOOLS)/install.sh" $(VENV) && touch $@; \
	else echo "no ROS 2 tools in $(ROS2_TOOLS) (set ROS2_TOOLS=...): tests/launch will fail"; fi

# CI passes PYTEST_ARGS=-v so its log names every test that ran (tests/launch included).
PYTEST_ARGS ?= -q
test: setup ros2-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast lane: everything but the end-to-end and launch runs and the tests marked slow.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --ignore=tests/e2e --ignore=tests/launch

lint: setup
	$(BIN)/ruff check fowm_core tests benchmarks ros2_ws/src/fowm launch

demo: setup
	$(BIN)/fowm demo

clean:
	rm -rf $(VENV) runs ros2_ws/build ros2_ws/install ros2_ws/log
