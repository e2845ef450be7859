"""Drives the gateway's /v1 routes with the official OpenAI Python SDK.

Run by tests/openai_sdk.rs with CODEX_LB_BASE_URL pointing at a gateway in front of the mock
upstream. Each check asserts what the mock was told to answer (through a `[[mock {...}]]`
directive in the prompt) and prints one line; any failure raises and exits non-zero.
"""

import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["CODEX_LB_BASE_URL"], api_key=os.environ.get("CODEX_LB_API_KEY", "unused"))


def mock(text, **extra):
    return "[[mock " + json.dumps(dict(text=text, deltas=4, **extra)) + "]]"


# Responses API, one JSON object.
r = client.responses.create(model="gpt-5.5", input="Say hi. " + mock("Hello from the pool."))
assert r.output_text == "Hello from the pool.", r.output_text
assert r.usage.total_tokens > 0
print("responses.create ok", r.id)

# Responses API, streamed.
text = ""
completed = None
with client.responses.stream(model="gpt-5.5", input="Stream it. " + mock("Streamed through codex-lb.")) as s:
    for event in s:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            completed = event.response
assert text == "Streamed through codex-lb.", text
assert completed is not None and completed.usage.output_tokens > 0
print("responses.stream ok")

# Chat Completions, one object, with system and user messages.
c = client.chat.completions.create(
    model="gpt-5.5",
    messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi. " + mock("Chat says hello.")},
    ],
)
assert c.choices[0].message.content == "Chat says hello.", c.choices[0].message
assert c.choices[0].finish_reason == "stop"
assert c.usage.total_tokens > 0 and c.usage.prompt_tokens > 0
print("chat.completions.create ok", c.id)

# Chat Completions, streamed, with usage in the last chunk.
parts = []
usage = None
for chunk in client.chat.completions.create(
    model="gpt-5.5",
    messages=[{"role": "user", "content": "Stream. " + mock("Chunks all the way.")}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
assert "".join(parts) == "Chunks all the way.", parts
assert usage is not None and usage.completion_tokens > 0
print("chat.completions stream ok")

# A tool call round trip.
tools = [{
    "type": "function",
    "function": {
        "name": "shell",
        "description": "Run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}},
    },
}]
messages = [{"role": "user", "content": "List files. " + mock("", tool_call=True)}]
first = client.chat.completions.create(model="gpt-5.5", messages=messages, tools=tools)
choice = first.choices[0]
assert choice.finish_reason == "tool_calls", choice
call = choice.message.tool_calls[0]
assert call.function.name == "shell"
args = json.loads(call.function.arguments)
assert isinstance(args, dict), args
messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
messages.append({"role": "tool", "tool_call_id": call.id, "content": "README.md\nsrc"})
messages.append({"role": "user", "content": "Summarize. " + mock("Two entries.")})
second = client.chat.completions.create(model="gpt-5.5", messages=messages, tools=tools)
assert second.choices[0].message.content == "Two entries.", second.choices[0].message
print("tool round trip ok", call.id)

# Streamed tool call: arguments arrive in pieces and join into JSON.
calls = {}
for chunk in client.chat.completions.create(
    model="gpt-5.5",
    messages=[{"role": "user", "content": "Again. " + mock("", tool_call=True)}],
    tools=tools,
    stream=True,
):
    for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        entry = calls.setdefault(tc.index, {"name": "", "args": ""})
        if tc.function and tc.function.name:
            entry["name"] = tc.function.name
        if tc.function and tc.function.arguments:
            entry["args"] += tc.function.arguments
assert calls and calls[0]["name"] == "shell", calls
json.loads(calls[0]["args"])
print("streamed tool call ok")

# The model list.
ids = [m.id for m in client.models.list()]
assert "gpt-5.5" in ids, ids
print("models.list ok", len(ids))
