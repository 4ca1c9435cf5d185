// The workbench's only script: refresh a running run's loss curve, and stream chat replies side by side.
"use strict";

function refreshCurve() {
  const box = document.getElementById("curve");
  if (!box || box.dataset.live !== "yes") return;
  const timer = setInterval(async () => {
    const response = await fetch(box.dataset.src);
    if (!response.ok) return;
    box.innerHTML = await response.text();
    const status = response.headers.get("X-Run-Status");
    const shown = document.getElementById("status");
    if (shown && status) shown.textContent = status;
    if (status && status !== "running") clearInterval(timer);  // the last curve is drawn
  }, 2000);
}

async function streamReply(api, model, prompt, settings, target) {
  target.textContent = "";
  const response = await fetch(api + "/v1/chat/completions", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: model, messages: [{role: "user", content: prompt}], stream: true,
                          temperature: settings.temperature, max_tokens: settings.max_tokens}),
  });
  if (!response.ok) { target.textContent = "error: " + (await response.text()); return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) target.textContent += delta.content;
    }
  }
  target.dataset.done = "yes";
}

function chat() {
  const form = document.getElementById("chat");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const [base, tuned] = form.dataset.models.split("|");
    const settings = {temperature: Number(form.temperature.value), max_tokens: Number(form.max_tokens.value)};
    const prompt = form.prompt.value;
    const baseBox = document.getElementById("reply-base");
    const tunedBox = document.getElementById("reply-tuned");
    delete baseBox.dataset.done; delete tunedBox.dataset.done;
    await Promise.all([streamReply(form.dataset.api, base, prompt, settings, baseBox),
                       streamReply(form.dataset.api, tuned, prompt, settings, tunedBox)]);
  });
}

document.addEventListener("DOMContentLoaded", () => { refreshCurve(); chat(); });
