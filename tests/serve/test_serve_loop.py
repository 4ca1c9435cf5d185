"""The serving loop: /metrics, the redacted request log, POST /v1/feedback, `ayar ab report` and `export-data`.

One server for the module: the tiny Llama (``llama``), adapters ``a`` and ``b``, an A/B
route ``ab`` (a 0.5, b 0.5), an API key and a request log.
"""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import running_server

from ayar.serve.launch import ServeOptions

pytestmark = pytest.mark.slow  # builds the PII redactor (~8 s) and generates ~20 replies

KEY = "sk-loop-0123"
PII_PROMPT = "Ben Ayşe Kaya, T.C. kimlik numaram 10000000146, e-postam ayse.kaya@example.com, siparişim nerede?"


@pytest.fixture(scope="module")
def server(tiny_llama, lora_pair, tmp_path_factory):
    log = tmp_path_factory.mktemp("loop") / "requests.jsonl"
    options = ServeOptions(target=str(tiny_llama), adapters=[f"a={lora_pair['a']}", f"b={lora_pair['b']}"],
                           ab=["ab=a:0.5,b:0.5"], ab_seed=3, ab_log=log.with_name("ab.jsonl"), dtype="fp32",
                           api_key_env="AYAR_TEST_LOOP_KEY", request_log=log, request_log_days=7)
    with pytest.MonkeyPatch.context() as env, running_server(options, api_key=KEY, env=env) as running:
        running.log = log
        running.client = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {KEY}"},
                                      timeout=60)
        yield running


def chat(server, text: str, model: str = "ab", stream: bool = False) -> tuple[str, str, str]:
    """(response id, served by, reply) of one greedy chat request."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 6,
            "stream": stream}
    response = server.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if stream:
        chunks = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        reply = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        return chunks[0]["id"], response.headers["x-ayar-served-by"], reply
    data = response.json()
    return data["id"], response.headers["x-ayar-served-by"], data["choices"][0]["message"]["content"]


def metric_samples(server) -> dict[tuple, float]:
    text = server.client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_need_the_api_key_and_parse(server):
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = server.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"ayar_requests", "ayar_request_latency_seconds", "ayar_time_to_first_token_seconds",
            "ayar_prompt_tokens", "ayar_completion_tokens", "ayar_queue_depth", "ayar_feedback"} <= names


def test_metrics_count_requests_per_route_and_arm(server):
    before = metric_samples(server)
    served = [chat(server, f"soru {i}")[1] for i in range(8)]
    served.append(chat(server, "akış", stream=True)[1])
    chat(server, "doğrudan", model="a")
    after = metric_samples(server)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert {"a", "b"} == set(served)  # seed 3 draws both arms in nine requests
    for arm in ("a", "b"):
        n = served.count(arm)
        assert delta("ayar_requests_total", model="ab", served_by=arm, outcome="ok") == n
        assert delta("ayar_request_latency_seconds_count", model="ab", served_by=arm) == n
        assert delta("ayar_time_to_first_token_seconds_count", model="ab", served_by=arm) == n
        assert delta("ayar_completion_tokens_total", model="ab", served_by=arm) > 0
    assert delta("ayar_requests_total", model="a", served_by="a", outcome="ok") == 1
    assert after[("ayar_queue_depth", ())] == 0.0


def test_feedback_joins_the_arm_that_served(server):
    rid, arm, _ = chat(server, "kargo ne zaman gelir?")
    response = server.client.post("/v1/feedback", json={"response_id": rid, "thumbs": "down",
                                                         "correction": "Kargonuz yarın teslim edilecektir."})
    assert response.status_code == 200 and response.json()["served_by"] == arm
    samples = metric_samples(server)
    assert samples[("ayar_feedback_total", (("kind", "down"), ("model", "ab"), ("served_by", arm)))] >= 1
    records = read_log(server)
    fb = [r for r in records if r["kind"] == "feedback" and r["id"] == rid]
    assert fb and fb[0]["served_by"] == arm and fb[0]["route"] == "ab" and fb[0]["thumbs"] == "down"


def test_feedback_refuses_unknown_ids_and_empty_verdicts(server):
    unknown = server.client.post("/v1/feedback", json={"response_id": "chatcmpl-nope", "thumbs": "up"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
    rid = chat(server, "merhaba")[0]
    for bad in ({"response_id": rid}, {"response_id": rid, "thumbs": "sideways"},
                {"response_id": rid, "score": 1.5}, {"response_id": rid, "thumbs": "up", "extra": 1}):
        response = server.client.post("/v1/feedback", json=bad)
        assert response.status_code == 400, bad
    assert httpx.post(f"{server.url}/v1/feedback", json={"response_id": rid, "thumbs": "up"}).status_code == 401


def read_log(server) -> list[dict]:
    """The request log's records, once everything queued so far is redacted and written."""
    server.server.config.app.state.observer.log.flush()
    return [json.loads(line) for line in server.log.read_text(encoding="utf-8").splitlines()]


def test_the_request_log_holds_no_personal_data(server):
    rid, _, _ = chat(server, PII_PROMPT)
    server.client.post("/v1/feedback", json={"response_id": rid, "thumbs": "up", "score": 0.9,
                                             "comment": "Ayşe Kaya'ya 0532 123 45 67 numarasından ulaşın"})
    read_log(server)
    text = server.log.read_text(encoding="utf-8")
    for secret in ("10000000146", "ayse.kaya@example.com", "0532 123 45 67", "Ayşe Kaya"):
        assert secret not in text
    request = [json.loads(line) for line in text.splitlines() if rid in line and '"request"' in line][0]
    content = request["prompt"][0]["content"]
    assert "[TCKN]" in content and "[E_POSTA]" in content and "siparişim nerede?" in content
    assert request["served_by"] in ("a", "b") and request["prompt_tokens"] > 0 and request["latency_s"] > 0


def test_ab_report_and_export_from_the_served_log(server, tmp_path):
    from ayar.serve.feedback import ab_report, export_data

    for i in range(6):
        rid, arm, _ = chat(server, f"iade {i}")
        server.client.post("/v1/feedback", json={"response_id": rid, "thumbs": "up" if arm == "a" else "down"})
    records = read_log(server)
    report = ab_report(server.log)
    route = next(r for r in report["routes"] if r["route"] == "ab")
    by_arm = {a["arm"]: a for a in route["arms"]}
    served = [r for r in records if r["kind"] == "request" and r["route"] == "ab"]
    for arm in ("a", "b"):
        assert by_arm[arm]["requests"] == sum(r["served_by"] == arm for r in served)
    result = export_data(server.log, tmp_path / "data", route="ab")
    assert result["sft"] >= 1 and result["kto"] >= 6
    kto = [json.loads(line) for line in (tmp_path / "data" / "kto.jsonl").read_text().splitlines()]
    assert all(isinstance(row["label"], bool) and row["prompt"][-1]["role"] == "user" for row in kto)
