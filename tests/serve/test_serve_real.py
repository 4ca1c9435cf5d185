"""`ayar serve` on a real base model: the openai client gets the same reply as offline generation."""

from __future__ import annotations

import openai
import pytest
from serve_helpers import running_server

from ayar.eval.generate import generate, load_for_inference
from ayar.serve.launch import ServeOptions
from helpers import colour_conversations

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_serve_answers_the_openai_client_like_offline_generation(real_lora_run):
    run, _ = real_lora_run
    messages = colour_conversations(3, seed=11)[1]["messages"][:2]
    model, tokenizer = load_for_inference(str(run))
    offline = generate(model, tokenizer, [messages], max_new_tokens=32)[0]
    del model
    options = ServeOptions(target=str(run), api_key_env="AYAR_TEST_REAL_SERVE_KEY")
    with pytest.MonkeyPatch.context() as env, running_server(options, api_key="sk-real", env=env) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-real", max_retries=0, timeout=120)
        names = [m.id for m in client.models.list().data]
        name = run.name  # the run's adapter is served under the run folder's name, beside the base
        assert name in names and len(names) == 2
        reply = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=32)
    choice = reply.choices[0]
    assert choice.message.content == offline and choice.finish_reason == "stop"
