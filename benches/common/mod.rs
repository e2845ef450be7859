//! Inputs shared by the benches: a realistic Codex SSE stream, composed like PROTOCOL.md §2.5.

/// Text deltas in the message item.
pub const DELTAS: usize = 200;
/// Approximate size of the `output` array carried by `response.completed`.
const COMPLETED_OUTPUT_BYTES: usize = 20 * 1024;

/// One canonical SSE block: `event:` line, one compact `data:` line, blank line.
fn push_event(out: &mut Vec<u8>, data: &str) {
    let ty = data
        .split("\"type\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A streamed answer: created, in_progress, a rate-limit event, a reasoning item, a message item of
/// `DELTAS` ~20-byte `response.output_text.delta` events, the done events, and a
/// `response.completed` whose output (encrypted reasoning plus the text) is about 20 KiB, with usage.
/// Returns the bytes and the number of events in them.
pub fn codex_sse_stream() -> (Vec<u8>, usize) {
    let resp = r#""id":"resp_0a1b2c","object":"response","created_at":1764100000"#;
    let text: Vec<String> = (0..DELTAS)
        .map(|i| format!(" step {i:03} of the plan"))
        .collect();
    let full_text: String = text.concat();
    // Base64-looking filler so the completed event's output comes to about 20 KiB.
    let enc_len = COMPLETED_OUTPUT_BYTES.saturating_sub(full_text.len() + 300);
    let encrypted: String = "gAAAAABpQ2xhdWRlX21vY2tfcmVhc29uaW5n"
        .chars()
        .cycle()
        .take(enc_len)
        .collect();
    let reasoning_item = format!(
        r#"{{"id":"rs_01","type":"reasoning","summary":[],"encrypted_content":"{encrypted}"}}"#
    );
    let message_item = format!(
        r#"{{"id":"msg_01","type":"message","role":"assistant","status":"completed","content":[{{"type":"output_text","text":"{full_text}","annotations":[]}}],"phase":"final_answer"}}"#
    );
    let mut seq = 0u32;
    let mut next = || {
        seq += 1;
        seq - 1
    };
    let mut events = Vec::new();
    events.push(format!(
        r#"{{"type":"response.created","sequence_number":{},"response":{{{resp},"status":"in_progress","model":"gpt-5.5","output":[],"usage":null}}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.in_progress","sequence_number":{},"response":{{{resp},"status":"in_progress","model":"gpt-5.5","output":[],"usage":null}}}}"#,
        next()
    ));
    events.push(
        r#"{"type":"codex.rate_limits","plan_type":"plus","metered_limit_name":"codex","rate_limits":{"allowed":true,"limit_reached":false,"primary":{"used_percent":37.0,"window_minutes":300,"reset_at":1764112345},"secondary":{"used_percent":12.0,"window_minutes":10080,"reset_at":1764600000}},"credits":{"has_credits":false,"unlimited":false,"balance":"0"}}"#
            .to_string(),
    );
    events.push(format!(
        r#"{{"type":"response.output_item.added","sequence_number":{},"output_index":0,"item":{{"id":"rs_01","type":"reasoning","summary":[]}}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.output_item.done","sequence_number":{},"output_index":0,"item":{reasoning_item}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.output_item.added","sequence_number":{},"output_index":1,"item":{{"id":"msg_01","type":"message","role":"assistant","status":"in_progress","content":[]}}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.content_part.added","sequence_number":{},"item_id":"msg_01","output_index":1,"content_index":0,"part":{{"type":"output_text","text":"","annotations":[]}}}}"#,
        next()
    ));
    for delta in &text {
        events.push(format!(
            r#"{{"type":"response.output_text.delta","sequence_number":{},"item_id":"msg_01","output_index":1,"content_index":0,"delta":"{delta}","logprobs":[]}}"#,
            next()
        ));
    }
    events.push(format!(
        r#"{{"type":"response.output_text.done","sequence_number":{},"item_id":"msg_01","output_index":1,"content_index":0,"text":"{full_text}","logprobs":[]}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.content_part.done","sequence_number":{},"item_id":"msg_01","output_index":1,"content_index":0,"part":{{"type":"output_text","text":"{full_text}","annotations":[]}}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.output_item.done","sequence_number":{},"output_index":1,"item":{message_item}}}"#,
        next()
    ));
    events.push(format!(
        r#"{{"type":"response.completed","sequence_number":{},"response":{{{resp},"status":"completed","model":"gpt-5.5","output":[{reasoning_item},{message_item}],"usage":{{"input_tokens":5231,"input_tokens_details":{{"cached_tokens":4864}},"output_tokens":1241,"output_tokens_details":{{"reasoning_tokens":824}},"total_tokens":6472}}}}}}"#,
        next()
    ));
    let mut out = Vec::new();
    for e in &events {
        push_event(&mut out, e);
    }
    (out, events.len())
}
