# Set up yomitori in .venv at the top of this checkout (safe to run again) - Windows.
#
#   powershell -ExecutionPolicy Bypass -File installer\setup.ps1          yomitori + demo model
#   powershell -ExecutionPolicy Bypass -File installer\setup.ps1 -Test    ... plus test tools
#
# llama-cpp-python compiles llama.cpp: install Visual Studio Build Tools with the
# "Desktop development with C++" workload first. Default: a portable CPU build.
# For an NVIDIA GPU (CUDA toolkit installed):  $env:CMAKE_ARGS = "-DGGML_NATIVE=off -DGGML_CUDA=on"
# For Vulkan (AMD/Intel/NVIDIA, Vulkan SDK):    $env:CMAKE_ARGS = "-DGGML_NATIVE=off -DGGML_VULKAN=on"
# The build is redone whenever CMAKE_ARGS differs from the last build's.
param([switch]$Test)
$ErrorActionPreference = "Stop"
Set-Location (Split-Path -Parent $PSScriptRoot)

$python = if ($env:PYTHON) { $env:PYTHON } else { "py" }
$pyArgs = if ($python -eq "py") { @("-3") } else { @() }
& $python @pyArgs -c "import sys; sys.exit(sys.version_info < (3, 10))"
if ($LASTEXITCODE -ne 0) {
    Write-Error "yomitori needs Python 3.10 or newer (python.org installer, with the py launcher), or set `$env:PYTHON."
}
if (-not (Test-Path .venv\Scripts\python.exe)) { & $python @pyArgs -m venv .venv }
$venvPy = Resolve-Path .venv\Scripts\python.exe
& $venvPy -m pip install --quiet --disable-pip-version-check --upgrade pip

$cmakeArgs = if ($env:CMAKE_ARGS) { $env:CMAKE_ARGS } else { "-DGGML_NATIVE=off" }
$stamp = ".venv\.llama-cmake-args"
$previous = if (Test-Path $stamp) { Get-Content $stamp -Raw } else { "" }
& $venvPy -c "import llama_cpp" 2>$null
$haveLlama = ($LASTEXITCODE -eq 0)
if (-not $haveLlama -or $previous -ne $cmakeArgs) {
    Write-Host "Building llama-cpp-python with CMAKE_ARGS=`"$cmakeArgs`" (a few minutes)..."
    $env:CMAKE_ARGS = $cmakeArgs
    $extra = if ($haveLlama -or $previous) { @("--force-reinstall", "--no-cache-dir", "--no-deps") } else { @() }
    & $venvPy -m pip install --quiet @extra "llama-cpp-python>=0.3.16"
    if ($LASTEXITCODE -ne 0) { Write-Error "building llama-cpp-python failed (see above)" }
    Set-Content -Path $stamp -Value $cmakeArgs -NoNewline
}

$extras = if ($Test) { "test" } else { "tiny" }
& $venvPy -m pip install --quiet -e ".[$extras]"
if ($LASTEXITCODE -ne 0) { Write-Error "installing yomitori failed (see above)" }
Write-Host "yomitori is set up: .venv\Scripts\yomitori.exe (try: .venv\Scripts\yomitori.exe --help)"
