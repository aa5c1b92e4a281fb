#!/usr/bin/env bash
# Set up yomitori in .venv at the top of this checkout (safe to run again).
#
#   installer/setup.sh          yomitori + the small demo model ('tiny')
#   installer/setup.sh --test   … plus everything the test suite needs
#
# llama-cpp-python compiles llama.cpp from source. The default here is a portable
# CPU build (-DGGML_NATIVE=off): a native build crashes in ggml's AMX kernels on
# some CPUs. For GPU speed, set CMAKE_ARGS first, e.g.
#   CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_CUDA=on"   installer/setup.sh   (NVIDIA)
#   CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_VULKAN=on" installer/setup.sh   (AMD/Intel/NVIDIA)
#   CMAKE_ARGS="-DGGML_METAL=on"                    installer/setup.sh   (Apple Silicon)
# and the build is redone whenever CMAKE_ARGS differs from the last build's.
set -euo pipefail

cd "$(dirname "$0")/.."
extras="tiny"
for arg in "$@"; do
  case "$arg" in
    --test) extras="test" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --test or --help)" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup.sh: yomitori needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "setup.sh: a C++ compiler is needed to build llama.cpp (Debian/Ubuntu: sudo apt install build-essential; macOS: xcode-select --install)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip

cmake_args="${CMAKE_ARGS:--DGGML_NATIVE=off}"
stamp=.venv/.llama-cmake-args
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null || [ "$(cat "$stamp" 2>/dev/null)" != "$cmake_args" ]; then
  echo "Building llama-cpp-python with CMAKE_ARGS=\"$cmake_args\" (a few minutes)…"
  reinstall=()
  if [ -f "$stamp" ] || .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    # pip would reuse its cached wheel from the previous flags otherwise.
    reinstall=(--force-reinstall --no-cache-dir --no-deps)
  fi
  CMAKE_ARGS="$cmake_args" "${pip[@]}" install --quiet "${reinstall[@]}" "llama-cpp-python>=0.3.16"
  printf '%s' "$cmake_args" > "$stamp"
fi

"${pip[@]}" install --quiet -e ".[${extras}]"

# The tray menu on Linux needs AppIndicator through PyGObject, which builds from source
# against the system's GObject libraries: try it where they are present, never fail on it.
if [ "$(uname -s)" = Linux ] && ! .venv/bin/python -c 'import gi' 2>/dev/null; then
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists girepository-2.0 cairo 2>/dev/null; then
    "${pip[@]}" install --quiet PyGObject || echo "setup.sh: PyGObject did not build; the tray will have no menu." >&2
  else
    echo "Note: for a tray menu install libgirepository-2.0-dev libcairo2-dev gir1.2-ayatanaappindicator3-0.1 (Debian/Ubuntu names) and run this again; everything else works without it."
  fi
fi

if [ "$extras" = test ]; then
  # The HTTP engines are tested against a real llama-server, built once from the
  # llama.cpp inside the llama-cpp-python sdist and cached outside the checkout.
  installer/build_llama_server.sh
  # The desktop tests drive a real X server, clipboard and notification daemon.
  need=()
  command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
  command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
  command -v xclip >/dev/null 2>&1 || need+=(xclip)
  command -v dunst >/dev/null 2>&1 || need+=(dunst)
  command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)
  command -v dbus-launch >/dev/null 2>&1 || need+=(dbus-x11)
  command -v xrandr >/dev/null 2>&1 || need+=(x11-xserver-utils)  # two-monitor layouts
  # OCR tests render Japanese with a real font, and check tesseract's vertical reading.
  [ -f /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || need+=(fonts-ipafont-gothic)
  command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
  tesseract --list-langs 2>/dev/null | grep -qx jpn || need+=(tesseract-ocr-jpn)
  tesseract --list-langs 2>/dev/null | grep -qx jpn_vert || need+=(tesseract-ocr-jpn-vert)
  if [ ${#need[@]} -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if command -v apt-get >/dev/null 2>&1 && "${sudo[@]}" true 2>/dev/null; then
      echo "Installing the desktop test tools: ${need[*]}"
      "${sudo[@]}" apt-get update -qq
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "setup.sh: the desktop tests need ${need[*]} (Debian/Ubuntu packages); they skip until installed." >&2
    fi
  fi
fi
echo "yomitori is set up: .venv/bin/yomitori (try: .venv/bin/yomitori --help)"
