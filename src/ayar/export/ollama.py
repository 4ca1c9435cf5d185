"""An Ollama ``Modelfile`` beside the GGUF file.

Ollama renders prompts with Go templates, not Jinja, so each bundled chat
template has a hand-written Go twin under ``ollama_templates/`` (data files)
that renders the same text for a list of messages followed by the generation
prompt. The BOS token is left out of those files: it is added by the runtime
when the GGUF says so (``tokenizer.ggml.add_bos_token``), and written into the
template only when it does not. Every end-of-turn token becomes a ``stop``
parameter, so generation ends where the chat template ends a turn.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from ayar import __version__
from ayar.chat.templates import bundled_template_of

# Sampling defaults written to the Modelfile (the same as `ayar chat`); users edit them freely.
SAMPLING = {"temperature": 0.7, "top_p": 0.9}
MAX_NUM_CTX = 4096


@cache
def go_template(name: str) -> str:
    """The Go template twin of the bundled chat template ``name`` (without its BOS token)."""
    return resources.files("ayar.export").joinpath(f"ollama_templates/{name}.txt").read_text("utf-8")


def modelfile(gguf_file: str, tokenizer, *, stops: list[str], add_bos: bool, context_length: int,
              model_name: str, run_name: str, adapter: str | None = None) -> str:
    """The Modelfile text for ``gguf_file`` (a path relative to the Modelfile).

    Args:
        gguf_file: the GGUF file ``FROM`` names.
        tokenizer: the run's tokenizer; its chat template picks the Go template.
        stops: token strings that end a turn (``PARAMETER stop``).
        add_bos: whether the GGUF makes the runtime add BOS itself.
        context_length: the model's context; ``num_ctx`` is at most ``MAX_NUM_CTX``.
        model_name: the name suggested for ``ollama create``.
        run_name: recorded in the header comment.
        adapter: a LoRA GGUF file applied on top of ``gguf_file`` (``ADAPTER``), or None.
    """
    lines = [
        f"# Ollama Modelfile for the ayar run {run_name}, written by ayar {__version__}.",
        f"# Create and run it from this folder:  ollama create {model_name} -f Modelfile && ollama run {model_name}",
        f"FROM ./{gguf_file}",
    ]
    if adapter is not None:
        lines.append(f"ADAPTER ./{adapter}")
    bundled = bundled_template_of(tokenizer)
    if bundled is None:
        lines.append("# No TEMPLATE: the run's chat template is not a bundled one, so ayar has no Go version of it. "
                     "Ollama falls back to the template stored in the GGUF when it recognises it; check it with "
                     f"`ollama show {model_name} --template`.")
    else:
        template = go_template(bundled.name)
        if bundled.bos is not None and not add_bos:
            template = bundled.bos + template
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    lines += [f"PARAMETER {key} {value}" for key, value in SAMPLING.items()]
    lines.append(f"PARAMETER num_ctx {min(context_length, MAX_NUM_CTX)}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def instructions(folder: str, gguf_file: str, model_name: str) -> str:
    """How to serve the GGUF file with Ollama and llama.cpp, as shell commands."""
    return (
        f"Ollama:    cd {folder} && ollama create {model_name} -f Modelfile && ollama run {model_name}\n"
        f"llama.cpp: llama-server -m {folder}/{gguf_file} --jinja --port 8080   "
        "(OpenAI-compatible API at http://localhost:8080/v1)"
    )
