//! Codex-shaped `/responses` request bodies: what the Codex CLI sends for a turn (model,
//! instructions, tools, developer and user messages, `store: false`, `stream: true`,
//! `prompt_cache_key`), optionally with a long history padded to a target size.
//!
//! The mock scenario travels as a `[[mock {json}]]` directive in the last user message, so the
//! same bytes work against the mock directly, through nginx and through any gateway (headers
//! might be dropped on the way; the body is not).

use serde_json::{json, Value};

/// A paragraph of plausible prose for instructions and history text.
const PROSE: &str = "You are Codex, a coding agent running in a terminal. Read the repository \
before changing it, keep changes small, run the tests, and explain what you did and why. ";
/// A plausible file excerpt, as `function_call_output` items carry.
const FILE: &str = "fn main() {\n    let args: Vec<String> = std::env::args().collect();\n    \
if args.len() < 2 {\n        eprintln!(\"usage: tool FILE\");\n        std::process::exit(2);\n    }\n    \
let text = std::fs::read_to_string(&args[1]).expect(\"readable\");\n    \
println!(\"{} lines\", text.lines().count());\n}\n";

fn repeat_to(s: &str, len: usize) -> String {
    s.chars().cycle().take(len).collect()
}

fn message(role: &str, part_type: &str, text: String) -> Value {
    json!({"type": "message", "role": role, "content": [{"type": part_type, "text": text}]})
}

fn tools() -> Value {
    json!([
        {"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
         "strict": false, "parameters": {"type": "object", "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
            "workdir": {"type": "string", "description": "The working directory"},
            "timeout_ms": {"type": "number", "description": "Timeout in milliseconds"}},
          "required": ["command"], "additionalProperties": false}},
        {"type": "function", "name": "update_plan", "description": "Updates the task plan.",
         "strict": false, "parameters": {"type": "object", "properties": {
            "explanation": {"type": "string"},
            "plan": {"type": "array", "items": {"type": "object", "properties": {
                "step": {"type": "string"}, "status": {"type": "string"}},
              "required": ["step", "status"], "additionalProperties": false}}},
          "required": ["plan"], "additionalProperties": false}},
        {"type": "custom", "name": "apply_patch", "description": "Applies a patch to files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
    ])
}

/// History item `i` of a long Codex session: a cycle of reasoning, a shell call, its output
/// and an assistant message, each a few KB like the real ones.
fn history_item(i: usize) -> Value {
    let call_id = format!("call_{i:06}");
    match i % 4 {
        0 => json!({"type": "reasoning", "summary": [], "content": null,
                    "encrypted_content": format!("gAAAAA{}", repeat_to("QkFTRTY0ZW5jcnlwdGVk", 1500))}),
        1 => json!({"type": "function_call", "name": "shell", "call_id": call_id,
                    "arguments": json!({"command": ["bash", "-lc", format!("sed -n 1,200p src/module_{i}.rs")]}).to_string()}),
        2 => json!({"type": "function_call_output", "call_id": format!("call_{:06}", i - 1),
                    "output": repeat_to(FILE, 4000)}),
        _ => message("assistant", "output_text", repeat_to(PROSE, 700)),
    }
}

/// A request body asking the mock for `directive`; when `target_bytes` exceeds the natural
/// size, history items are added until the body reaches it (within one item, a few KB).
pub fn codex_body(directive: &Value, target_bytes: usize, cache_key: &str) -> Vec<u8> {
    let last = message(
        "user",
        "input_text",
        format!("Fix the failing test and run the suite again. [[mock {directive}]]"),
    );
    let mut input = vec![
        message(
            "developer",
            "input_text",
            "<permissions instructions>Filesystem sandboxing: workspace-write. Network: \
             restricted. Approvals: on-request.</permissions instructions>"
                .into(),
        ),
        message(
            "user",
            "input_text",
            "<environment_context>\n  <cwd>/home/dev/project</cwd>\n  <shell>bash</shell>\n\
             </environment_context>"
                .into(),
        ),
    ];
    let mut body = json!({
        "model": "gpt-5.5",
        "instructions": repeat_to(PROSE, 3000),
        "input": [],
        "tools": tools(),
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": cache_key,
    });
    let mut size = serde_json::to_vec(&body).map_or(0, |b| b.len())
        + input
            .iter()
            .chain(std::iter::once(&last))
            .map(|v| v.to_string().len() + 1)
            .sum::<usize>();
    let mut i = 0;
    while size < target_bytes {
        let item = history_item(i);
        size += item.to_string().len() + 1;
        input.push(item);
        i += 1;
    }
    input.push(last);
    body["input"] = Value::Array(input);
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_body_is_a_codex_turn_with_the_directive_last() {
        let d = json!({"deltas": 3});
        let raw = codex_body(&d, 0, "key-1");
        assert!(raw.len() < 12_000, "{}", raw.len());
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["model"], "gpt-5.5");
        assert_eq!(
            (v["stream"].as_bool(), v["store"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(v["prompt_cache_key"], "key-1");
        let last = v["input"].as_array().unwrap().last().unwrap();
        assert_eq!(last["role"], "user");
        assert!(last["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with(r#"[[mock {"deltas":3}]]"#));
    }

    #[test]
    fn big_bodies_land_just_past_the_target() {
        for target in [200_000, 1_000_000, 2_000_000] {
            let raw = codex_body(&json!({}), target, "k");
            assert!(raw.len() >= target, "{target}: {}", raw.len());
            assert!(raw.len() < target + 8_000, "{target}: {}", raw.len());
            let v: Value = serde_json::from_slice(&raw).unwrap();
            let kinds: Vec<&str> = v["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["type"].as_str().unwrap())
                .collect();
            assert!(kinds.contains(&"function_call_output") && kinds.contains(&"reasoning"));
        }
    }
}
