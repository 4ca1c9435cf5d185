"""A vLLM launch script (``serve.sh``) and an OpenAI-client example (``client.py``).

LoRA runs are served as adapters on their base (``vllm serve BASE --enable-lora
--lora-modules name=path ...``), several on one base if asked: each adapter is a
model name of the OpenAI API. vLLM's LoRA support does not cover DoRA, and a full
fine-tune has no adapter, so those are served as merged weights instead. The
script passes the run's chat template, so prompts are rendered as in training.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ayar import __version__

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class VllmPlan:
    """What ``serve.sh`` serves.

    Attributes:
        model: ``vllm serve``'s model: the base (hub id or absolute folder) with adapters, or
            a folder relative to the script (merged weights).
        adapters: ``(name, folder relative to the script)`` of each LoRA adapter; empty when merged.
        max_lora_rank: the largest adapter rank (vLLM must be told it).
        served_name: the API model name of merged weights (adapters are named by ``adapters``).
        stop_ids: end-of-turn token ids, passed as ``stop_token_ids`` by the client.
    """

    model: str
    adapters: tuple[tuple[str, str], ...]
    max_lora_rank: int
    served_name: str
    stop_ids: tuple[int, ...]

    @property
    def model_is_local(self) -> bool:
        return not self.adapters


def serve_script(plan: VllmPlan, run_name: str) -> str:
    """The text of ``serve.sh``; extra arguments are passed on to ``vllm serve``."""
    model = '"$HERE/' + plan.model + '"' if plan.model_is_local else shlex.quote(plan.model)
    args = [f"--port \"${{PORT:-{DEFAULT_PORT}}}\"", '--chat-template "$HERE/chat_template.jinja"']
    if plan.adapters:
        args += ["--enable-lora", f"--max-lora-rank {_lora_rank_bucket(plan.max_lora_rank)}",
                 f"--max-loras {len(plan.adapters)}"]
        args += [f'--lora-modules {name}="$HERE/{folder}"' for name, folder in plan.adapters]
    else:
        args.append(f"--served-model-name {shlex.quote(plan.served_name)}")
    what = (f"{plan.model} with the LoRA adapter(s) {', '.join(n for n, _ in plan.adapters)}" if plan.adapters
            else f"the merged weights of the ayar run {run_name} as {plan.served_name}")
    body = " \\\n  ".join([f"exec vllm serve {model}", *args, '"$@"'])
    return (
        "#!/usr/bin/env bash\n"
        f"# Serve {what} with vLLM's OpenAI-compatible server\n"
        f"# (http://localhost:${{PORT:-{DEFAULT_PORT}}}/v1). Written by ayar {__version__}; needs `pip install vllm`\n"
        "# and a GPU. Extra arguments go to `vllm serve`, e.g. ./serve.sh --gpu-memory-utilization 0.8\n"
        "set -euo pipefail\n"
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
        f"{body}\n"
    )


def _lora_rank_bucket(rank: int) -> int:
    """vLLM accepts only some values of --max-lora-rank; the smallest one that fits ``rank``."""
    return next((b for b in (8, 16, 32, 64, 128, 256, 320, 512) if b >= rank), rank)


def client_example(plan: VllmPlan) -> str:
    """The text of ``client.py``: one chat request with the ``openai`` client."""
    model = plan.adapters[0][0] if plan.adapters else plan.served_name
    return f'''"""Ask the server started by serve.sh (written by ayar {__version__}).

Run ./serve.sh first, then: python client.py "Your question"
The model name is {"an adapter name from serve.sh" if plan.adapters else "the served model name"};
stop_token_ids end the reply at the end of the assistant turn.
"""

import sys

from openai import OpenAI

client = OpenAI(base_url="http://localhost:{DEFAULT_PORT}/v1", api_key="not-needed")
question = sys.argv[1] if len(sys.argv) > 1 else "Merhaba! Kendini kısaca tanıtır mısın?"
reply = client.chat.completions.create(
    model={model!r},
    messages=[{{"role": "user", "content": question}}],
    temperature=0.0,
    max_tokens=256,
    extra_body={{"stop_token_ids": {list(plan.stop_ids)!r}}},
)
print(reply.choices[0].message.content)
'''


def instructions(folder: str, plan: VllmPlan) -> str:
    """How to start the server and query it."""
    quoted = shlex.quote(folder)
    return f"vLLM:      {quoted}/serve.sh   then   python {quoted}/client.py \"Merhaba\""
