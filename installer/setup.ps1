# Set up yomitori in .venv at the top of this checkout (safe to run again) - Windows.
#
#   powershell -ExecutionPolicy Bypass -File installer\setup.ps1          yomitori + demo model
#   powershell -ExecutionPolicy Bypass -File installer\setup.ps1 -Test    ... plus test tools
#
# llama-cpp-python compiles llama.cpp: install Visual Studio Build Tools with the
# "Desktop development with C++" workload first. Default: a portable CPU build
# (-DGGML_NATIVE=off: a native build crashes in ggml's AMX kernels on some CPUs).
# For an NVIDIA GPU (CUDA toolkit installed):  $env:CMAKE_ARGS = "-DGGML_NATIVE=off -DGGML_CUDA=on"
# For Vulkan (AMD/Intel/NVIDIA, Vulkan SDK):    $env:CMAKE_ARGS = "-DGGML_NATIVE=off -DGGML_VULKAN=on"
# The build is redone whenever CMAKE_ARGS differs from the last build's.
param([switch]$Test)
$ErrorActionPreference = "Stop"
Set-Location (Split-Path -Parent $PSScriptRoot)

# Runs a program and fails on a non-zero exit code. Windows PowerShell 5.1 turns a
# program's stderr into errors when it is redirected (or in the ISE), and "Stop" would
# abort on the first one (a pip warning, the traceback of a failed import check), so
# the preference is relaxed while it runs and the exit code decides.
function Invoke-Checked([string]$What, [scriptblock]$Command) {
    $ErrorActionPreference = "Continue"
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "setup.ps1: $What failed (exit code $LASTEXITCODE; see above)" }
}

# True when the command exits 0; its output and errors are dropped.
function Test-Command([scriptblock]$Command) {
    $ErrorActionPreference = "Continue"
    & $Command *> $null
    return ($LASTEXITCODE -eq 0)
}

if ($env:PYTHON) { $python = $env:PYTHON; $pyArgs = @() }
elseif (Get-Command py -ErrorAction SilentlyContinue) { $python = "py"; $pyArgs = @("-3") }
else { $python = "python"; $pyArgs = @() }
if (-not (Get-Command $python -ErrorAction SilentlyContinue)) {
    throw "setup.ps1: no Python found; install Python 3.10 or newer from python.org, or set `$env:PYTHON."
}
if (-not (Test-Command { & $python @pyArgs -c "import sys; sys.exit(sys.version_info < (3, 10))" })) {
    throw "setup.ps1: yomitori needs Python 3.10 or newer (python.org installer, with the py launcher), or set `$env:PYTHON."
}
if (-not (Test-Path .venv\Scripts\python.exe)) {
    Invoke-Checked "creating .venv" { & $python @pyArgs -m venv .venv }
}
$venvPy = (Resolve-Path .venv\Scripts\python.exe).Path
Invoke-Checked "upgrading pip" { & $venvPy -m pip install --quiet --disable-pip-version-check --upgrade pip }

$cmakeArgs = if ($env:CMAKE_ARGS) { $env:CMAKE_ARGS } else { "-DGGML_NATIVE=off" }
$stamp = ".venv\.llama-cmake-args"
$previous = if (Test-Path $stamp) { "$(Get-Content $stamp -Raw)".Trim() } else { "" }
$haveLlama = Test-Command { & $venvPy -c "import llama_cpp" }
if (-not $haveLlama -or $previous -ne $cmakeArgs) {
    $vswhere = if (${env:ProgramFiles(x86)}) { Join-Path ${env:ProgramFiles(x86)} "Microsoft Visual Studio\Installer\vswhere.exe" } else { "" }
    $haveVs = ($vswhere -and (Test-Path $vswhere)) -or (Get-Command cl.exe -ErrorAction SilentlyContinue)
    if (-not $haveVs) {
        Write-Warning "No Visual Studio C++ compiler found; llama.cpp will not build without the Build Tools' 'Desktop development with C++' workload."
    }
    Write-Host "Building llama-cpp-python with CMAKE_ARGS=`"$cmakeArgs`" (a few minutes)..."
    $env:CMAKE_ARGS = $cmakeArgs
    # pip would reuse its cached wheel from the previous flags otherwise.
    $extra = if ($haveLlama -or $previous) { @("--force-reinstall", "--no-cache-dir", "--no-deps") } else { @() }
    Invoke-Checked "building llama-cpp-python" {
        & $venvPy -m pip install --quiet --disable-pip-version-check @extra "llama-cpp-python>=0.3.16"
    }
    Set-Content -Path $stamp -Value $cmakeArgs -NoNewline
}

$extras = if ($Test) { "test" } else { "tiny" }
Invoke-Checked "installing yomitori" { & $venvPy -m pip install --quiet --disable-pip-version-check -e ".[$extras]" }
if ($Test) {
    Write-Host "Note: the desktop tests drive an X server (Xvfb, xdotool, xclip, dunst); on Windows they skip."
}
Write-Host "yomitori is set up: .venv\Scripts\yomitori.exe (try: .venv\Scripts\yomitori.exe --help)"
