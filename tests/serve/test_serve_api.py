"""`ayar serve` end to end: the official openai client against a real uvicorn server on localhost.

One server for the module: the tiny Llama as base (served as ``llama``), adapters
``a`` and ``b``, an A/B route ``ab`` (a 0.75, b 0.25), an API key, a queue of 6 (room for
six concurrent requests).
"""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_helpers import chat_ids, reference, running_server, wait_until

from ayar.eval.generate import generate as offline_generate
from ayar.serve.launch import ServeOptions

KEY = "sk-test-0123"
ADMIN_KEY = "sk-admin-4567"
PROMPT = [{"role": "user", "content": "Ürün: mavi renkli güzel bir masa"}]
GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def server(tiny_llama, lora_pair, tmp_path_factory):
    log = tmp_path_factory.mktemp("ab") / "ab_log.jsonl"
    options = ServeOptions(target=str(tiny_llama), adapters=[f"a={lora_pair['a']}", f"b={lora_pair['b']}"],
                           ab=["ab=a:0.75,b:0.25"], ab_seed=0, ab_log=log, dtype="fp32", max_queue=6,
                           api_key_env="AYAR_TEST_SERVE_KEY", admin_key_env="AYAR_TEST_ADMIN_KEY",
                           adapter_roots=[str(lora_pair["a"].parent), str(lora_pair["b"].parent)])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AYAR_TEST_ADMIN_KEY", ADMIN_KEY)
        with running_server(options, api_key=KEY, env=env) as running:
            yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models_lists_base_adapters_and_route(client):
    assert [m.id for m in client.models.list()] == ["llama", "a", "b", "ab"]


def test_each_model_answers_like_offline_generation(client, offline):
    texts = {}
    for name, offline_name in (("llama", "base"), ("a", "a"), ("b", "b")):
        model, tokenizer = offline[offline_name]
        expected, ids = reference(model, tokenizer, chat_ids(tokenizer, PROMPT), 8)
        reply = client.chat.completions.create(model=name, messages=PROMPT, **GREEDY)
        choice = reply.choices[0]
        assert choice.message.content == expected and reply.model == name
        # ayar's offline path (`ayar generate`) strips the reply; otherwise the same.
        assert choice.message.content.strip() == offline_generate(model, tokenizer, [PROMPT], max_new_tokens=8)[0]
        # 8 tokens generated, none of them the end of turn: cut by max_tokens.
        assert len(ids) == 8 and choice.finish_reason == "length"
        assert reply.usage.prompt_tokens == len(chat_ids(tokenizer, PROMPT))
        assert reply.usage.completion_tokens == 8
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
        texts[name] = expected
    assert len(set(texts.values())) == 3, texts  # the base and the two adapters answer differently


def test_text_completion_matches_reference(client, offline):
    model, tokenizer = offline["a"]
    prompt = "The quick brown fox"
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    expected, _ = reference(model, tokenizer, ids, 6)
    reply = client.completions.create(model="a", prompt=prompt, max_tokens=6, temperature=0)
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(ids), 6)


def test_streamed_chunks_reassemble_to_the_greedy_reply(client, server):
    whole = client.chat.completions.create(model="b", messages=PROMPT, **GREEDY)
    chunks = list(client.chat.completions.create(model="b", messages=PROMPT, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == "b"

    text = client.completions.create(model="a", prompt="kırmızı çanta", max_tokens=6, temperature=0)
    parts = list(client.completions.create(model="a", prompt="kırmızı çanta", max_tokens=6, temperature=0,
                                           stream=True))
    assert "".join(p.choices[0].text for p in parts) == text.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"

    # The wire format itself: SSE `data:` lines, ending with `data: [DONE]`.
    body = {"model": "a", "messages": PROMPT, "stream": True, **GREEDY}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-ayar-served-by"] == "a"
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_stop_sequence_ends_the_reply_and_is_removed(client, offline):
    model, tokenizer = offline["a"]
    full, ids = reference(model, tokenizer, chat_ids(tokenizer, PROMPT), 8)
    stop = full[3:6]
    cut = full.find(stop)  # the reply ends before the first occurrence
    # Tokens generated: up to the first one whose text contains the stop sequence.
    n_tokens = next(k for k in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:k], skip_special_tokens=True))
    for stream in (False, True):
        reply = client.chat.completions.create(model="a", messages=PROMPT, stop=[stop, "zzzz"], stream=stream,
                                               **GREEDY)
        if stream:
            chunks = list(reply)
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
            assert reply.usage.completion_tokens == n_tokens
        assert (text, finish) == (full[:cut], "stop")


def test_end_of_turn_token_stops_with_finish_reason_stop(client, offline):
    tokenizer = offline["a"][1]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    reply = client.chat.completions.create(model="a", messages=PROMPT, logit_bias={str(end): 100}, **GREEDY)
    assert reply.choices[0].message.content == "" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 1


def test_seeded_sampling_is_reproducible_and_matches_offline(client, offline):
    def sample(seed):
        return client.chat.completions.create(model="a", messages=PROMPT, temperature=1.0, top_p=0.9,
                                              max_tokens=8, seed=seed).choices[0].message.content

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again and first != other
    model, tokenizer = offline["a"]
    assert first.strip() == offline_generate(model, tokenizer, [PROMPT], max_new_tokens=8, temperature=1.0,
                                             top_p=0.9, seed=7)[0]


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": -1}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"top_p": 0}, "top_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"extra_body": {"frequency_penalty": 0.5}}, None),
    ({"extra_body": {"unknown_option": 1}}, "unknown_option"),
])
def test_invalid_parameters_are_400_in_openai_shape(client, params, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="a", messages=PROMPT, **{"max_tokens": 4, **params})
    assert err.value.status_code == 400 and err.value.param == param
    assert err.value.type == "invalid_request_error" and err.value.code == "invalid_value"


def test_neutral_values_of_unimplemented_parameters_are_accepted(client):
    reply = client.chat.completions.create(model="a", messages=PROMPT, presence_penalty=0, frequency_penalty=0,
                                           max_tokens=2)
    assert reply.usage.completion_tokens == 2


def test_unknown_model_is_404_and_long_prompt_is_400(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=PROMPT, max_tokens=2)
    assert err.value.code == "model_not_found" and err.value.param == "model"
    long = [{"role": "user", "content": "masa " * 1100}]  # more tokens than the 1024-position context
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="a", messages=long, max_tokens=2)
    assert err.value.code == "context_length_exceeded" and "1024" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # fits alone, not with the tokens asked for
        client.completions.create(model="a", prompt="masa", max_tokens=1024)
    assert err.value.code == "context_length_exceeded"


def test_api_key_is_enforced(server):
    url = f"{server.url}/v1/models"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.post(f"{server.url}/admin/adapters", json={"name": "x", "path": "/tmp"}).status_code == 401
    # The inference key is not an admin key, and the admin key is not an inference key.
    for path, key in (("/admin/adapters", KEY), ("/v1/models", ADMIN_KEY)):
        assert httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert httpx.get(f"{server.url}/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "queued": 0}
    bad_json = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    # Authentication comes before everything, routing included.
    assert httpx.get(f"{server.url}/v1/engines").status_code == 401
    unknown_path = httpx.get(f"{server.url}/v1/engines", headers={"Authorization": f"Bearer {KEY}"})
    assert unknown_path.status_code == 404 and unknown_path.json()["error"]["message"] == "Not Found"


def test_concurrent_requests_get_their_own_answers(client):
    jobs = [(model, prompt, stream) for model, stream in (("a", False), ("b", True), ("llama", False))
            for prompt in ("Ürün: sarı kupa", "Merhaba")]  # 6 requests
    sequential = [client.chat.completions.create(
        model=m, messages=[{"role": "user", "content": p}], **GREEDY).choices[0].message.content
        for m, p, _ in jobs]

    def ask(job):
        model, prompt, stream = job
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               stream=stream, **GREEDY)
        return "".join(c.choices[0].delta.content or "" for c in reply) if stream else reply.choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(ask, jobs))
    assert concurrent == sequential
    assert len(set(sequential)) >= 4  # the requests really differ (adapters and prompts)


def test_full_queue_answers_503_at_once(client, server):
    entered, release = threading.Event(), threading.Event()

    def hold(job):
        entered.set()
        release.wait(timeout=30)

    server.engine.before_job = hold
    results = []

    def ask():
        reply = client.chat.completions.create(model="a", messages=PROMPT, max_tokens=1, temperature=0)
        results.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=ask) for _ in range(7)]
    try:
        threads[0].start()
        assert entered.wait(timeout=20)  # the worker holds the first request
        for t in threads[1:]:
            t.start()
        wait_until(lambda: server.engine.pending() == 6)  # six wait: the queue is full
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="a", messages=PROMPT, max_tokens=1)
        assert err.value.status_code == 503 and err.value.code == "queue_full"
    finally:
        release.set()
        for t in threads:
            t.join(timeout=30)
        server.engine.before_job = None
    assert results == [1] * 7  # every accepted request was answered


def test_ab_route_splits_by_weight_and_logs_each_request(client, server):
    replies = [client.chat.completions.with_raw_response.create(model="ab", messages=PROMPT, max_tokens=1)
               for _ in range(40)]
    served = [r.parse().model for r in replies]
    assert served == [r.headers["x-ayar-served-by"] for r in replies]
    # Arm i serves when u = rng.random() falls in its slice of [0, 1): a for u < 0.75, else b.
    rng = random.Random(0)
    assert served == ["a" if rng.random() < 0.75 else "b" for _ in range(40)]
    assert abs(served.count("a") - 30) <= 8  # roughly 3 in 4
    log = [json.loads(line) for line in server.host.ab_log.read_text().splitlines()]
    assert [(e["request_id"], e["route"], e["served_by"]) for e in log] == [
        (r.parse().id, "ab", s) for r, s in zip(replies, served, strict=True)]


def test_admin_loads_and_unloads_adapters(client, server, lora_pair, offline):
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    created = admin.post("/admin/adapters", json={"name": "a2", "path": str(lora_pair["a"])})
    assert created.status_code == 201
    assert [m.id for m in client.models.list()] == ["llama", "a", "b", "a2", "ab"]
    listing = admin.get("/admin/adapters").json()
    assert [a["name"] for a in listing["adapters"]] == ["a", "b", "a2"]
    assert listing["routes"] == [{"name": "ab", "arms": [{"model": "a", "weight": 0.75}, {"model": "b", "weight": 0.25}]}]
    same = [client.chat.completions.create(model=m, messages=PROMPT, **GREEDY).choices[0].message.content
            for m in ("a", "a2")]
    assert same[0] == same[1]  # the same weights under another name

    assert admin.post("/admin/adapters", json={"name": "a2", "path": str(lora_pair["b"])}).status_code == 409
    missing = admin.post("/admin/adapters", json={"name": "c", "path": "nonexistent"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "path"
    assert admin.delete("/admin/adapters/a").status_code == 409  # the A/B route uses it

    assert admin.delete("/admin/adapters/a2").status_code == 200
    assert admin.delete("/admin/adapters/a2").status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="a2", messages=PROMPT, max_tokens=1)
    model, tokenizer = offline["b"]
    expected, _ = reference(model, tokenizer, chat_ids(tokenizer, PROMPT), 8)
    assert client.chat.completions.create(model="b", messages=PROMPT, **GREEDY).choices[0].message.content == expected
