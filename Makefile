# Thin wrapper over the scripts and CMake; the scripts are the source of truth.
.PHONY: all demo test clean
all:
	cmake -S . -B build/dev && cmake --build build/dev -j
demo:
	scripts/demo.sh
test:
	scripts/test.sh
clean:
	rm -rf build
