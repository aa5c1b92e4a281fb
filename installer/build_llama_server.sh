#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp source inside the llama-cpp-python
# sdist (the same llama.cpp the in-process worker runs), offline, and link it as
# .venv/bin/llama-server.  The result is cached outside the checkout, keyed by version and
# CMAKE_ARGS, so a rerun or a fresh clone on the same machine does not build again.
#
#   installer/build_llama_server.sh            (setup.sh --test runs it)
#   CMAKE_ARGS="-DGGML_CUDA=on" installer/build_llama_server.sh   a GPU build
#
# Users with a prebuilt llama-server (llama.cpp's release builds for CUDA, Vulkan, Metal)
# need none of this: put it on PATH or name it as `server = PATH` in models.toml.
set -euo pipefail

cd "$(dirname "$0")/.."
py=.venv/bin/python
version="$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
cmake_args="${CMAKE_ARGS:--DGGML_NATIVE=off}"
key="$(printf '%s|%s' "$version" "$cmake_args" | sha256sum | cut -c1-12)"
cache="${YOMITORI_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yomitori-build}"
target="$cache/llama-server-$version-$key"

if [ ! -x "$target/bin/llama-server" ]; then
  for tool in cmake c++; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "build_llama_server.sh: $tool is needed (Debian/Ubuntu: sudo apt install cmake build-essential)" >&2
      exit 1
    }
  done
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "Building llama-server $version from the llama-cpp-python sdist (about 10 minutes on 2 cores)…"
  "$py" -m pip --disable-pip-version-check download --quiet --no-deps --no-binary :all: \
    -d "$work" "llama-cpp-python==$version"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # No downloads during the build: the web UI's prebuilt assets are fetched by default.
  # shellcheck disable=SC2086
  cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN' \
    $cmake_args >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc 2>/dev/null || echo 2)" \
    >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
  mkdir -p "$cache"
  rm -rf "$target.tmp"
  mkdir -p "$target.tmp/bin"
  cp -a "$work/build/bin/." "$target.tmp/bin/"
  rm -rf "$target"
  mv "$target.tmp" "$target"
fi
ln -sf "$target/bin/llama-server" .venv/bin/llama-server
.venv/bin/llama-server --version >/dev/null 2>&1 || {
  echo "build_llama_server.sh: $target/bin/llama-server does not run; delete $target and try again" >&2
  exit 1
}
echo "llama-server $version: .venv/bin/llama-server"
