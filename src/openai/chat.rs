//! `/v1/chat/completions` ↔ Responses translation (PROTOCOL.md §7.3).
//!
//! Owns three pure conversions and nothing else:
//! - a Chat Completions request becomes the Responses body the Codex backend accepts (§1.5:
//!   `store:false`, `stream:true`, system text hoisted into `instructions`, only function tools);
//! - upstream SSE events become `chat.completion.chunk` frames, one event at a time
//!   ([`ChunkStream`]), including the error frame for a failed or truncated stream (§2.2, §2.4);
//! - a final response object becomes a `chat.completion` ([`completion_from_response`]), with
//!   [`ResponseCollector`] rebuilding `output` from the streamed items because the backend leaves
//!   `response.completed.output` empty when `store` is false.
//!
//! It must not touch sockets, clocks, accounts or metrics: the route owns the IO, picks the
//! `chatcmpl-…` id and `created` time, and decides when the upstream stream has ended.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{json, Map, Value};

use crate::http::error_body::ApiError;

/// The frame that ends every chat stream, after success and after an error frame alike.
pub const DONE_FRAME: &str = "data: [DONE]\n\n";
/// Message of the error sent when the upstream stream ends before a terminal event (§7.3).
pub const TRUNCATED_MESSAGE: &str = "Responses stream ended before a terminal event";
/// Code of the error sent when the upstream stream ends before a terminal event (§7.3).
pub const TRUNCATED_CODE: &str = "upstream_stream_truncated";

/// Used when a failure carries no message of its own.
const DEFAULT_FAILURE_MESSAGE: &str = "The upstream response failed";

/// Error codes and types that mean a rate or usage limit: answered 429 (PROTOCOL.md §3.3, §8).
const LIMIT_CODES: &[&str] = &[
    "rate_limit_exceeded",
    "rate_limit_error",
    "usage_limit_reached",
    "usage_not_included",
    "insufficient_quota",
    "quota_exceeded",
];

/// Error codes and types that blame the request itself: answered 400 (PROTOCOL.md §2.4, §8).
const INVALID_REQUEST_CODES: &[&str] = &[
    "invalid_request_error",
    "invalid_request",
    "invalid_prompt",
    "invalid_value",
    "invalid_type",
    "missing_required_parameter",
    "unsupported_parameter",
    "unsupported_value",
    "context_length_exceeded",
    "cyber_policy",
];

/// Members of an upstream error object copied into the envelope the client sees (§8).
const ERROR_EXTRAS: &[&str] = &["plan_type", "resets_at", "resets_in_seconds"];

// === Request ===

/// A chat request translated for the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The Responses request to send upstream: `model`, `instructions`, `input`, `tools`,
    /// `tool_choice`, `parallel_tool_calls`, `reasoning`, `text`, `store:false`, `stream:true`,
    /// `include:[]` and `prompt_cache_key` when the client sent one.
    pub body: Value,
    /// Whether the client asked for a stream (`stream:true`); the upstream always streams.
    pub stream: bool,
    /// `stream_options.include_usage`, only ever true for a streaming request.
    pub include_usage: bool,
    /// The model the client named, echoed in every chunk and completion.
    pub model: String,
}

/// Why a chat request cannot be translated; always the client's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("Missing required parameter: '{param}'.")]
    Missing { param: String },
    #[error("Invalid value for '{param}': {reason}.")]
    Invalid { param: String, reason: String },
    #[error("Unsupported parameter '{param}': {reason}.")]
    Unsupported { param: String, reason: String },
}

impl ChatError {
    /// The request field at fault, OpenAI style (`messages[2].content[0].type`).
    pub fn param(&self) -> Option<&str> {
        match self {
            ChatError::NotAnObject => None,
            ChatError::Missing { param }
            | ChatError::Invalid { param, .. }
            | ChatError::Unsupported { param, .. } => Some(param),
        }
    }

    /// The OpenAI error code for the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::NotAnObject => "invalid_type",
            ChatError::Missing { .. } => "missing_required_parameter",
            ChatError::Invalid { .. } => "invalid_value",
            ChatError::Unsupported { .. } => "unsupported_parameter",
        }
    }

    /// The 400 `invalid_request_error` envelope naming the field.
    pub fn to_api_error(&self) -> ApiError {
        let err = ApiError::invalid_request(self.code(), self.to_string());
        match self.param() {
            Some(param) => err.with_param(param),
            None => err,
        }
    }
}

fn missing(param: impl Into<String>) -> ChatError {
    ChatError::Missing {
        param: param.into(),
    }
}

fn invalid(param: impl Into<String>, reason: impl Into<String>) -> ChatError {
    ChatError::Invalid {
        param: param.into(),
        reason: reason.into(),
    }
}

fn unsupported(param: impl Into<String>, reason: impl Into<String>) -> ChatError {
    ChatError::Unsupported {
        param: param.into(),
        reason: reason.into(),
    }
}

/// Translates a Chat Completions request into the Responses request the upstream accepts.
///
/// Fields the upstream rejects or ignores (`max_tokens`, `max_completion_tokens`, `store`,
/// `temperature`, `top_p`, `stop`, `user`, `metadata`, `seed`, penalties, `logit_bias`, …) are not
/// carried over; features it cannot serve (`n` > 1, logprobs, audio, non-function tools, the
/// legacy `functions`) are refused so the client is not silently given something else.
///
/// # Errors
///
/// A [`ChatError`] naming the offending field ([`ChatError::param`]) when the request is not an
/// object, lacks `model` or `messages`, holds a malformed value, or asks for something the
/// upstream cannot do; the route answers it with [`ChatError::to_api_error`] (HTTP 400).
pub fn to_responses_request(chat: &Value) -> Result<ChatRequest, ChatError> {
    let req = chat.as_object().ok_or(ChatError::NotAnObject)?;
    let model = required_str(req, "model", "model")?.to_string();
    reject_unsupported(req)?;
    let messages = match req.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(invalid("messages", "at least one message is required"))
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(invalid("messages", "expected an array of messages")),
    };
    let stream = opt_bool(req, "stream", "stream")?.unwrap_or(false);
    let include_usage = match req.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => {
            opt_bool(o, "include_usage", "stream_options.include_usage")?.unwrap_or(false)
        }
        Some(_) => return Err(invalid("stream_options", "expected an object")),
    };
    let (instructions, input) = convert_messages(messages)?;

    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.clone()));
    // The backend answers 400 "Instructions are required" when the field is absent.
    body.insert("instructions".into(), Value::String(instructions));
    body.insert("input".into(), Value::Array(input));
    if let Some(tools) = convert_tools(req.get("tools"))? {
        body.insert("tools".into(), tools);
    }
    if let Some(choice) = convert_tool_choice(req.get("tool_choice"))? {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = opt_bool(req, "parallel_tool_calls", "parallel_tool_calls")? {
        body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    }
    if let Some(effort) =
        opt_str(req, "reasoning_effort", "reasoning_effort")?.filter(|e| !e.is_empty())
    {
        body.insert("reasoning".into(), json!({ "effort": effort }));
    }
    let mut text = Map::new();
    if let Some(format) = convert_response_format(req.get("response_format"))? {
        text.insert("format".into(), format);
    }
    if let Some(verbosity) = opt_str(req, "verbosity", "verbosity")?.filter(|v| !v.is_empty()) {
        text.insert("verbosity".into(), Value::String(verbosity.to_string()));
    }
    if !text.is_empty() {
        body.insert("text".into(), Value::Object(text));
    }
    body.insert("store".into(), Value::Bool(false));
    body.insert("stream".into(), Value::Bool(true));
    body.insert("include".into(), Value::Array(Vec::new()));
    if let Some(key) =
        opt_str(req, "prompt_cache_key", "prompt_cache_key")?.filter(|k| !k.is_empty())
    {
        body.insert("prompt_cache_key".into(), Value::String(key.to_string()));
    }
    Ok(ChatRequest {
        body: Value::Object(body),
        stream,
        include_usage: stream && include_usage,
        model,
    })
}

/// Refuses what the upstream cannot serve rather than answering something else.
fn reject_unsupported(req: &Map<String, Value>) -> Result<(), ChatError> {
    match req.get("n") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_u64() {
            Some(1) => {}
            Some(k) if k > 1 => {
                return Err(unsupported(
                    "n",
                    format!("only one choice per request is supported, got n={k}"),
                ))
            }
            _ => return Err(invalid("n", "expected a positive integer")),
        },
    }
    match req.get("logprobs") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(unsupported(
                "logprobs",
                "log probabilities are not available from this backend",
            ))
        }
        Some(_) => return Err(invalid("logprobs", "expected a boolean")),
    }
    match req.get("top_logprobs") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(0) => {}
            Some(_) => {
                return Err(unsupported(
                    "top_logprobs",
                    "log probabilities are not available from this backend",
                ))
            }
            None => return Err(invalid("top_logprobs", "expected a non-negative integer")),
        },
    }
    for (key, instead) in [("functions", "tools"), ("function_call", "tool_choice")] {
        if req.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                key,
                format!("the legacy '{key}' parameter is not supported; use '{instead}'"),
            ));
        }
    }
    if req.get("audio").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("audio", "audio output is not supported"));
    }
    if let Some(Value::Array(modalities)) = req.get("modalities") {
        if modalities.iter().any(|m| m.as_str() == Some("audio")) {
            return Err(unsupported("modalities", "audio output is not supported"));
        }
    }
    Ok(())
}

/// Splits the conversation into `instructions` (system and developer text, in order, one per
/// line) and Responses input items (everything else, in order).
fn convert_messages(messages: &[Value]) -> Result<(String, Vec<Value>), ChatError> {
    let mut instructions: Vec<String> = Vec::new();
    let mut input = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let message = as_object(message, &at)?;
        let role = match message.get("role") {
            Some(Value::String(role)) => role.as_str(),
            None | Some(Value::Null) => return Err(missing(format!("{at}.role"))),
            Some(_) => return Err(invalid(format!("{at}.role"), "expected a string")),
        };
        match role {
            "system" | "developer" => {
                let text = text_only(message.get("content"), &at)?;
                if !text.is_empty() {
                    instructions.push(text);
                }
            }
            "user" => {
                let content = user_content(message.get("content"), &at)?;
                input.push(json!({ "type": "message", "role": "user", "content": content }));
            }
            "assistant" => assistant_items(message, &at, &mut input)?,
            "tool" => input.push(tool_output(message, &at)?),
            "function" => {
                return Err(unsupported(
                    format!("{at}.role"),
                    "legacy 'function' messages are not supported; use 'tool' messages",
                ))
            }
            other => {
                return Err(invalid(
                    format!("{at}.role"),
                    format!("unknown role '{other}'"),
                ))
            }
        }
    }
    Ok((instructions.join("\n"), input))
}

/// A content that may only hold text (system, developer and tool messages): a string, null, or
/// `text` parts joined with newlines.
fn text_only(content: Option<&Value>, at: &str) -> Result<String, ChatError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                let part = as_object(part, &pat)?;
                match part_type(part, &pat)? {
                    "text" => texts.push(text_field(part, &pat)?),
                    other => {
                        return Err(unsupported(
                            format!("{pat}.type"),
                            format!("'{other}' parts are not allowed in this message, only text"),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(invalid(
            format!("{at}.content"),
            "expected a string or an array of content parts",
        )),
    }
}

/// User content: a string or parts (`text`, `image_url`, `file`) as Responses input parts.
fn user_content(content: Option<&Value>, at: &str) -> Result<Vec<Value>, ChatError> {
    match content {
        None | Some(Value::Null) => Err(missing(format!("{at}.content"))),
        Some(Value::String(s)) => Ok(vec![json!({ "type": "input_text", "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| user_part(part, &format!("{at}.content[{j}]")))
            .collect(),
        Some(_) => Err(invalid(
            format!("{at}.content"),
            "expected a string or an array of content parts",
        )),
    }
}

fn user_part(part: &Value, at: &str) -> Result<Value, ChatError> {
    let part = as_object(part, at)?;
    match part_type(part, at)? {
        "text" => Ok(json!({ "type": "input_text", "text": text_field(part, at)? })),
        "image_url" => image_part(part.get("image_url"), &format!("{at}.image_url")),
        "file" => file_part(part.get("file"), &format!("{at}.file")),
        "input_audio" => Err(unsupported(
            format!("{at}.type"),
            "audio input is not supported",
        )),
        other => Err(invalid(
            format!("{at}.type"),
            format!("unknown content part type '{other}'"),
        )),
    }
}

/// `image_url` is `{url, detail?}` (or, leniently, the URL string itself).
fn image_part(image: Option<&Value>, at: &str) -> Result<Value, ChatError> {
    let (url, detail) = match image {
        Some(Value::String(url)) => (url.as_str(), None),
        Some(Value::Object(o)) => (
            required_str(o, "url", &format!("{at}.url"))?,
            opt_str(o, "detail", &format!("{at}.detail"))?,
        ),
        None | Some(Value::Null) => return Err(missing(at)),
        Some(_) => return Err(invalid(at, "expected an object with a 'url'")),
    };
    if url.trim().is_empty() {
        return Err(missing(format!("{at}.url")));
    }
    Ok(json!({
        "type": "input_image",
        "image_url": url,
        "detail": detail.filter(|d| !d.is_empty()).unwrap_or("auto"),
    }))
}

/// `file` is `{file_id?, file_data?, filename?}`; one of the first two is needed.
fn file_part(file: Option<&Value>, at: &str) -> Result<Value, ChatError> {
    let o = match file {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => return Err(missing(at)),
        Some(_) => return Err(invalid(at, "expected an object")),
    };
    let mut out = Map::new();
    out.insert("type".into(), Value::String("input_file".into()));
    for key in ["file_id", "file_data", "filename"] {
        if let Some(v) = opt_str(o, key, &format!("{at}.{key}"))?.filter(|v| !v.is_empty()) {
            out.insert(key.into(), Value::String(v.to_string()));
        }
    }
    if !out.contains_key("file_id") && !out.contains_key("file_data") {
        return Err(missing(format!("{at}.file_data")));
    }
    Ok(Value::Object(out))
}

/// An assistant turn: its text (and refusal) as one `message` item, then one `function_call`
/// item per tool call, in order.
fn assistant_items(
    message: &Map<String, Value>,
    at: &str,
    input: &mut Vec<Value>,
) -> Result<(), ChatError> {
    let mut content = Vec::new();
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                content.push(json!({ "type": "output_text", "text": s }));
            }
        }
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                let part = as_object(part, &pat)?;
                match part_type(part, &pat)? {
                    "text" => {
                        let text = text_field(part, &pat)?;
                        if !text.is_empty() {
                            content.push(json!({ "type": "output_text", "text": text }));
                        }
                    }
                    "refusal" => {
                        let refusal = required_str(part, "refusal", &format!("{pat}.refusal"))?;
                        content.push(json!({ "type": "refusal", "refusal": refusal }));
                    }
                    other => {
                        return Err(unsupported(
                            format!("{pat}.type"),
                            format!("'{other}' parts are not allowed in assistant messages"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("{at}.content"),
                "expected a string or an array of content parts",
            ))
        }
    }
    let has_refusal_part = content
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("refusal"));
    if let Some(refusal) =
        opt_str(message, "refusal", &format!("{at}.refusal"))?.filter(|r| !r.is_empty())
    {
        if !has_refusal_part {
            content.push(json!({ "type": "refusal", "refusal": refusal }));
        }
    }
    if !content.is_empty() {
        input.push(json!({ "type": "message", "role": "assistant", "content": content }));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (k, call) in calls.iter().enumerate() {
                input.push(function_call_item(call, &format!("{at}.tool_calls[{k}]"))?);
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("{at}.tool_calls"),
                "expected an array of tool calls",
            ))
        }
    }
    Ok(())
}

fn function_call_item(call: &Value, at: &str) -> Result<Value, ChatError> {
    let call = as_object(call, at)?;
    match opt_str(call, "type", &format!("{at}.type"))? {
        None | Some("function") => {}
        Some(other) => {
            return Err(unsupported(
                format!("{at}.type"),
                format!("only function tool calls are supported, got '{other}'"),
            ))
        }
    }
    let id = required_str(call, "id", &format!("{at}.id"))?;
    let function = match call.get("function") {
        Some(Value::Object(f)) => f,
        None | Some(Value::Null) => return Err(missing(format!("{at}.function"))),
        Some(_) => return Err(invalid(format!("{at}.function"), "expected an object")),
    };
    let name = required_str(function, "name", &format!("{at}.function.name"))?;
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => "{}".to_string(),
        // Some clients send the arguments as a JSON value instead of its text.
        Some(other) => other.to_string(),
    };
    Ok(json!({ "type": "function_call", "call_id": id, "name": name, "arguments": arguments }))
}

fn tool_output(message: &Map<String, Value>, at: &str) -> Result<Value, ChatError> {
    let call_id = ["tool_call_id", "toolCallId", "call_id"]
        .iter()
        .find_map(|k| {
            message
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| missing(format!("{at}.tool_call_id")))?;
    let output = text_only(message.get("content"), at)?;
    Ok(json!({ "type": "function_call_output", "call_id": call_id, "output": output }))
}

/// `tools[{type:function, function{name, description, parameters, strict}}]` flattened to the
/// Responses shape. `strict` defaults to false (the Chat Completions default; Responses would
/// otherwise default to strict and reject loose schemas) and a missing `parameters` becomes an
/// empty object schema (Chat Completions: "an empty parameter list").
fn convert_tools(tools: Option<&Value>) -> Result<Option<Value>, ChatError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools", "expected an array of tools")),
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let tool = as_object(tool, &at)?;
        match opt_str(tool, "type", &format!("{at}.type"))? {
            Some("function") => {}
            Some(other) => {
                return Err(unsupported(
                    format!("{at}.type"),
                    format!("only function tools are supported, got '{other}'"),
                ))
            }
            None => return Err(missing(format!("{at}.type"))),
        }
        let function = match tool.get("function") {
            Some(Value::Object(f)) => f,
            None | Some(Value::Null) => return Err(missing(format!("{at}.function"))),
            Some(_) => return Err(invalid(format!("{at}.function"), "expected an object")),
        };
        let name = required_str(function, "name", &format!("{at}.function.name"))?;
        let mut flat = Map::new();
        flat.insert("type".into(), Value::String("function".into()));
        flat.insert("name".into(), Value::String(name.to_string()));
        if let Some(d) = opt_str(
            function,
            "description",
            &format!("{at}.function.description"),
        )? {
            flat.insert("description".into(), Value::String(d.to_string()));
        }
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(invalid(
                    format!("{at}.function.parameters"),
                    "expected a JSON schema object",
                ))
            }
        };
        flat.insert("parameters".into(), parameters);
        let strict = opt_bool(function, "strict", &format!("{at}.function.strict"))?;
        flat.insert("strict".into(), Value::Bool(strict.unwrap_or(false)));
        out.push(Value::Object(flat));
    }
    Ok(Some(Value::Array(out)))
}

fn convert_tool_choice(choice: Option<&Value>) -> Result<Option<Value>, ChatError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" | "none" | "required" => Ok(Some(Value::String(s.clone()))),
            other => Err(invalid(
                "tool_choice",
                format!("expected 'auto', 'none', 'required' or a function, got '{other}'"),
            )),
        },
        Some(Value::Object(o)) => {
            match opt_str(o, "type", "tool_choice.type")? {
                Some("function") => {}
                Some(other) => {
                    return Err(unsupported(
                        "tool_choice.type",
                        format!("only function tool choices are supported, got '{other}'"),
                    ))
                }
                None => return Err(missing("tool_choice.type")),
            }
            // The chat shape nests the name; accept the flat Responses shape too.
            let name = match o.get("function") {
                Some(Value::Object(f)) => required_str(f, "name", "tool_choice.function.name")?,
                _ => required_str(o, "name", "tool_choice.function.name")?,
            };
            Ok(Some(json!({ "type": "function", "name": name })))
        }
        Some(_) => Err(invalid("tool_choice", "expected a string or an object")),
    }
}

fn convert_response_format(format: Option<&Value>) -> Result<Option<Value>, ChatError> {
    let o = match format {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("response_format", "expected an object")),
    };
    match opt_str(o, "type", "response_format.type")? {
        Some("text") => Ok(Some(json!({ "type": "text" }))),
        Some("json_object") => Ok(Some(json!({ "type": "json_object" }))),
        Some("json_schema") => {
            let spec = match o.get("json_schema") {
                Some(Value::Object(s)) => s,
                None | Some(Value::Null) => return Err(missing("response_format.json_schema")),
                Some(_) => {
                    return Err(invalid("response_format.json_schema", "expected an object"))
                }
            };
            let name = required_str(spec, "name", "response_format.json_schema.name")?;
            let schema = match spec.get("schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                None | Some(Value::Null) => {
                    return Err(missing("response_format.json_schema.schema"))
                }
                Some(_) => {
                    return Err(invalid(
                        "response_format.json_schema.schema",
                        "expected a JSON schema object",
                    ))
                }
            };
            let mut out = Map::new();
            out.insert("type".into(), Value::String("json_schema".into()));
            out.insert("name".into(), Value::String(name.to_string()));
            if let Some(d) = opt_str(
                spec,
                "description",
                "response_format.json_schema.description",
            )? {
                out.insert("description".into(), Value::String(d.to_string()));
            }
            out.insert("schema".into(), schema);
            if let Some(strict) = opt_bool(spec, "strict", "response_format.json_schema.strict")? {
                out.insert("strict".into(), Value::Bool(strict));
            }
            Ok(Some(Value::Object(out)))
        }
        Some(other) => Err(invalid(
            "response_format.type",
            format!("expected 'text', 'json_object' or 'json_schema', got '{other}'"),
        )),
        None => Err(missing("response_format.type")),
    }
}

fn as_object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ChatError> {
    v.as_object()
        .ok_or_else(|| invalid(at, "expected an object"))
}

fn part_type<'a>(part: &'a Map<String, Value>, at: &str) -> Result<&'a str, ChatError> {
    match part.get("type") {
        Some(Value::String(t)) => Ok(t),
        None | Some(Value::Null) => Err(missing(format!("{at}.type"))),
        Some(_) => Err(invalid(format!("{at}.type"), "expected a string")),
    }
}

/// The `text` of a text part; may be empty.
fn text_field(part: &Map<String, Value>, at: &str) -> Result<String, ChatError> {
    match part.get("text") {
        Some(Value::String(t)) => Ok(t.clone()),
        None | Some(Value::Null) => Err(missing(format!("{at}.text"))),
        Some(_) => Err(invalid(format!("{at}.text"), "expected a string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, param: &str) -> Result<Option<bool>, ChatError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(param, "expected a boolean")),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    param: &str,
) -> Result<Option<&'a str>, ChatError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(param, "expected a string")),
    }
}

/// A string that must be present and not blank.
fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    param: &str,
) -> Result<&'a str, ChatError> {
    match opt_str(obj, key, param)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(missing(param)),
    }
}

// === Streaming ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// No terminal event yet.
    Open,
    /// `response.completed` / `response.incomplete` seen: the finish chunk went out.
    Ended,
    /// `response.failed` / `error` seen: the error frame went out.
    Failed,
    /// `[DONE]` went out; nothing more is produced.
    Closed,
}

/// A function call being streamed, at its `index` in `ChunkStream::calls`.
#[derive(Debug)]
struct ToolCallSlot {
    /// The upstream item id (`fc_…`) that argument deltas name.
    item_id: Option<String>,
    output_index: Option<u64>,
    /// Arguments sent to the client so far.
    arguments: String,
    /// `response.output_item.done` seen for it.
    done: bool,
}

/// Turns upstream Responses events into `chat.completion.chunk` SSE frames, one event at a time.
///
/// Feed every upstream event to [`ChunkStream::on_event`] and send what it returns; when the
/// upstream stream ends (or as soon as [`ChunkStream::is_terminal`]), call
/// [`ChunkStream::finish`] and send that too. Each returned string is one complete frame,
/// `data: {json}\n\n`. Events after a terminal one are ignored.
#[derive(Debug)]
pub struct ChunkStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    calls: Vec<ToolCallSlot>,
    /// Chat-shaped usage from the terminal event, for the last chunk.
    usage: Option<Value>,
    state: StreamState,
    emitted: bool,
}

// === impl ChunkStream ===

impl ChunkStream {
    pub fn new(id: String, created: u64, model: String, include_usage: bool) -> Self {
        ChunkStream {
            id,
            created,
            model,
            include_usage,
            role_sent: false,
            calls: Vec::new(),
            usage: None,
            state: StreamState::Open,
            emitted: false,
        }
    }

    /// Translates one upstream event. `event_type` is the SSE `event:` name; when it is empty the
    /// `type` member of `data` is used.
    pub fn on_event(&mut self, event_type: &str, data: &Value) -> Vec<String> {
        if self.state != StreamState::Open {
            return Vec::new();
        }
        match event_kind(event_type, data) {
            "response.output_text.delta" | "response.text.delta" => {
                self.text_delta("content", data)
            }
            "response.refusal.delta" => self.text_delta("refusal", data),
            "response.output_item.added" => match function_call_item_of(data) {
                Some(item) => self.open_call(item, output_index(data)),
                None => Vec::new(),
            },
            "response.function_call_arguments.delta" => self.arguments_delta(data),
            "response.function_call_arguments.done" => self.arguments_final(
                data.get("item_id").and_then(Value::as_str),
                output_index(data),
                data.get("arguments").and_then(Value::as_str),
                false,
            ),
            "response.output_item.done" => self.item_done(data),
            kind @ ("response.completed" | "response.incomplete") => self.terminal(kind, data),
            "response.failed" | "error" => {
                self.state = StreamState::Failed;
                self.emitted = true;
                vec![frame(&read_failure(data).envelope())]
            }
            _ => Vec::new(),
        }
    }

    /// Called once the upstream stream has ended: the truncation error when no terminal event
    /// came, the usage chunk when asked for, then `[DONE]`. Later calls return nothing.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        match self.state {
            StreamState::Closed => return out,
            StreamState::Open => out.push(frame(&truncated_envelope())),
            StreamState::Ended => {
                if let Some(usage) = self.usage.take().filter(|_| self.include_usage) {
                    let mut chunk = self.chunk_head();
                    chunk.insert("choices".into(), Value::Array(Vec::new()));
                    chunk.insert("usage".into(), usage);
                    out.push(frame(&Value::Object(chunk)));
                }
            }
            StreamState::Failed => {}
        }
        out.push(DONE_FRAME.to_string());
        self.state = StreamState::Closed;
        self.emitted = true;
        out
    }

    /// A terminal event (completed, incomplete, failed, error) has been seen.
    pub fn is_terminal(&self) -> bool {
        self.state != StreamState::Open
    }

    /// Some frame has been produced: from here on a failure can only be reported in-stream.
    pub fn started(&self) -> bool {
        self.emitted
    }

    fn text_delta(&mut self, key: &str, data: &Value) -> Vec<String> {
        match data
            .get("delta")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            Some(delta) => {
                let delta = Map::from_iter([(key.to_string(), Value::String(delta.to_string()))]);
                vec![self.chunk(delta, None)]
            }
            None => Vec::new(),
        }
    }

    /// A new function call: its index, id and name go out once, with the arguments known so far.
    fn open_call(&mut self, item: &Value, output_index: Option<u64>) -> Vec<String> {
        let index = self.calls.len();
        let item_id = item.get("id").and_then(Value::as_str).map(str::to_string);
        let call_id = item
            .get("call_id")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .or_else(|| item_id.clone())
            .unwrap_or_else(|| format!("call_{index}"));
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        let arguments = item
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let call = json!({
            "index": index,
            "id": call_id,
            "type": "function",
            "function": { "name": name, "arguments": arguments },
        });
        self.calls.push(ToolCallSlot {
            item_id,
            output_index,
            arguments,
            done: false,
        });
        let delta = Map::from_iter([("tool_calls".to_string(), Value::Array(vec![call]))]);
        vec![self.chunk(delta, None)]
    }

    fn arguments_delta(&mut self, data: &Value) -> Vec<String> {
        let Some(fragment) = data
            .get("delta")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            return Vec::new();
        };
        let item_id = data.get("item_id").and_then(Value::as_str);
        let Some(index) = self.find_call(item_id, output_index(data)) else {
            return Vec::new();
        };
        if let Some(slot) = self.calls.get_mut(index) {
            slot.arguments.push_str(fragment);
        }
        vec![self.arguments_chunk(index, fragment)]
    }

    /// The full arguments arrived (`.done` event or the finished item): sends whatever part of
    /// them the deltas did not, so a backend that skips deltas still yields complete calls.
    fn arguments_final(
        &mut self,
        item_id: Option<&str>,
        output_index: Option<u64>,
        full: Option<&str>,
        item_done: bool,
    ) -> Vec<String> {
        let Some(index) = self.find_call(item_id, output_index) else {
            return Vec::new();
        };
        let Some(slot) = self.calls.get_mut(index) else {
            return Vec::new();
        };
        slot.done |= item_done;
        let rest = full
            .and_then(|full| full.strip_prefix(slot.arguments.as_str()))
            .filter(|rest| !rest.is_empty())
            .map(str::to_string);
        match rest {
            Some(rest) => {
                slot.arguments.push_str(&rest);
                vec![self.arguments_chunk(index, &rest)]
            }
            None => Vec::new(),
        }
    }

    fn item_done(&mut self, data: &Value) -> Vec<String> {
        let Some(item) = function_call_item_of(data) else {
            return Vec::new();
        };
        let item_id = item.get("id").and_then(Value::as_str);
        let index = output_index(data);
        let mut out = Vec::new();
        if self.find_call(item_id, index).is_none() {
            // Never announced by `output_item.added`: announce it whole now.
            out = self.open_call(item, index);
        }
        let arguments = item.get("arguments").and_then(Value::as_str);
        out.extend(self.arguments_final(item_id, index, arguments, true));
        out
    }

    fn terminal(&mut self, kind: &str, data: &Value) -> Vec<String> {
        let response = data.get("response").unwrap_or(&Value::Null);
        self.usage = response.get("usage").and_then(chat_usage);
        let incomplete = incomplete_reason(kind == "response.incomplete", response);
        let calls_complete = self.calls.iter().all(|c| c.done);
        let reason = finish_reason(incomplete, !self.calls.is_empty(), calls_complete);
        self.state = StreamState::Ended;
        vec![self.chunk(Map::new(), Some(reason))]
    }

    fn find_call(&self, item_id: Option<&str>, output_index: Option<u64>) -> Option<usize> {
        item_id
            .and_then(|id| {
                self.calls
                    .iter()
                    .position(|c| c.item_id.as_deref() == Some(id))
            })
            .or_else(|| {
                let oi = output_index?;
                self.calls.iter().position(|c| c.output_index == Some(oi))
            })
    }

    fn arguments_chunk(&mut self, index: usize, fragment: &str) -> String {
        let call = json!({ "index": index, "function": { "arguments": fragment } });
        let delta = Map::from_iter([("tool_calls".to_string(), Value::Array(vec![call]))]);
        self.chunk(delta, None)
    }

    /// One chunk with one choice; the first chunk of the stream also carries the role.
    fn chunk(&mut self, delta: Map<String, Value>, finish_reason: Option<&str>) -> String {
        let mut full = Map::new();
        if !self.role_sent {
            self.role_sent = true;
            full.insert("role".into(), Value::String("assistant".into()));
        }
        full.extend(delta);
        let mut chunk = self.chunk_head();
        chunk.insert(
            "choices".into(),
            json!([{ "index": 0, "delta": full, "finish_reason": finish_reason }]),
        );
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        self.emitted = true;
        frame(&Value::Object(chunk))
    }

    fn chunk_head(&self) -> Map<String, Value> {
        let mut head = Map::new();
        head.insert("id".into(), Value::String(self.id.clone()));
        head.insert(
            "object".into(),
            Value::String("chat.completion.chunk".into()),
        );
        head.insert("created".into(), Value::from(self.created));
        head.insert("model".into(), Value::String(self.model.clone()));
        head
    }
}

fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn event_kind<'a>(event_type: &'a str, data: &'a Value) -> &'a str {
    if event_type.is_empty() {
        data.get("type").and_then(Value::as_str).unwrap_or_default()
    } else {
        event_type
    }
}

fn output_index(data: &Value) -> Option<u64> {
    data.get("output_index").and_then(Value::as_u64)
}

/// The `item` of an `output_item.*` event when it is a function call.
fn function_call_item_of(data: &Value) -> Option<&Value> {
    data.get("item")
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("function_call"))
}

/// `Some(reason)` when the response stopped early; the reason may be empty when not given.
fn incomplete_reason(incomplete_event: bool, response: &Value) -> Option<&str> {
    let incomplete =
        incomplete_event || response.get("status").and_then(Value::as_str) == Some("incomplete");
    incomplete.then(|| {
        response
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    })
}

/// §7.3: `tool_calls` when the model called tools, `length` / `content_filter` when it was cut
/// off, else `stop`. A cut-off response whose calls were not all finished reports the cut-off,
/// so a client never runs a call with truncated arguments.
fn finish_reason(incomplete: Option<&str>, has_calls: bool, calls_complete: bool) -> &'static str {
    let cut_off = match incomplete {
        None => None,
        Some("max_output_tokens") => Some("length"),
        Some("content_filter") => Some("content_filter"),
        Some(_) => None,
    };
    match cut_off {
        Some(reason) if !(has_calls && calls_complete) => reason,
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Responses usage (§2.3) in the Chat Completions shape; `None` when the upstream sent none.
fn chat_usage(usage: &Value) -> Option<Value> {
    let u = usage.as_object()?;
    let count = |v: Option<&Value>| v.and_then(Value::as_u64);
    let prompt = count(u.get("input_tokens")).unwrap_or(0);
    let completion = count(u.get("output_tokens")).unwrap_or(0);
    let total = count(u.get("total_tokens")).unwrap_or(prompt.saturating_add(completion));
    let cached = count(
        u.get("input_tokens_details")
            .and_then(|d| d.get("cached_tokens")),
    )
    .unwrap_or(0);
    let reasoning = count(
        u.get("output_tokens_details")
            .and_then(|d| d.get("reasoning_tokens")),
    )
    .unwrap_or(0);
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": { "cached_tokens": cached },
        "completion_tokens_details": { "reasoning_tokens": reasoning },
    }))
}

// === Failures ===

/// An upstream failure, classified for the client.
#[derive(Debug, Clone, PartialEq)]
struct UpstreamFailure {
    status: u16,
    message: String,
    kind: String,
    code: Option<String>,
    param: Option<String>,
    extra: Map<String, Value>,
}

impl UpstreamFailure {
    /// `{"error":{"message","type","code","param"?,…}}`.
    fn envelope(&self) -> Value {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(self.message.clone()));
        err.insert("type".into(), Value::String(self.kind.clone()));
        err.insert(
            "code".into(),
            self.code.clone().map_or(Value::Null, Value::String),
        );
        if let Some(param) = &self.param {
            err.insert("param".into(), Value::String(param.clone()));
        }
        err.extend(self.extra.clone());
        json!({ "error": err })
    }
}

/// Where the error object sits in what the upstream sent.
fn failure_object(v: &Value) -> Option<&Map<String, Value>> {
    // `response.failed`: the error lives on the response.
    if let Some(response) = v.get("response").filter(|r| r.is_object()) {
        return response.get("error").and_then(Value::as_object);
    }
    // A failed response object, an error envelope, or the nested form of the `error` event.
    if let Some(err) = v.get("error").and_then(Value::as_object) {
        return Some(err);
    }
    // The flat `error` event (§2.2): code, message and param at the top level.
    v.as_object()
}

fn read_failure(v: &Value) -> UpstreamFailure {
    let err = failure_object(v);
    let text = |key: &str| {
        err.and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let code = text("code");
    // In the flat `error` event `type` is the event name, not an error type.
    let given_type = text("type").filter(|t| *t != "error" && !t.starts_with("response."));
    let (status, default_type) = classify(code, given_type);
    let mut extra = Map::new();
    for key in ERROR_EXTRAS {
        if let Some(value) = err.and_then(|e| e.get(*key)).filter(|x| !x.is_null()) {
            extra.insert((*key).to_string(), value.clone());
        }
    }
    UpstreamFailure {
        status,
        message: text("message")
            .unwrap_or(DEFAULT_FAILURE_MESSAGE)
            .to_string(),
        kind: given_type.unwrap_or(default_type).to_string(),
        code: code.map(str::to_string),
        param: text("param").map(str::to_string),
        extra,
    }
}

/// HTTP status and default error type: rate and usage limits 429, the request's fault 400,
/// anything else is the upstream's fault, 502 (PROTOCOL.md §8).
fn classify(code: Option<&str>, kind: Option<&str>) -> (u16, &'static str) {
    let hits = |set: &[&str]| {
        code.is_some_and(|c| set.contains(&c)) || kind.is_some_and(|k| set.contains(&k))
    };
    if hits(LIMIT_CODES) {
        (429, "rate_limit_error")
    } else if hits(INVALID_REQUEST_CODES) {
        (400, "invalid_request_error")
    } else {
        (502, "server_error")
    }
}

fn truncated_envelope() -> Value {
    json!({ "error": {
        "message": TRUNCATED_MESSAGE,
        "type": "server_error",
        "code": TRUNCATED_CODE,
    }})
}

/// Status and OpenAI error envelope for a failure seen before anything was sent to the client.
///
/// Accepts a `response.failed` event, the failed response object itself, an `error` event (flat
/// or nested) or an error envelope. Rate and usage codes → 429, invalid-request codes → 400,
/// anything else → 502. The upstream's `message`, `type`, `code`, `param` and limit details
/// (`plan_type`, `resets_at`, `resets_in_seconds`) are kept.
pub fn error_from_failed(response_or_event: &Value) -> (u16, Value) {
    let failure = read_failure(response_or_event);
    (failure.status, failure.envelope())
}

/// Status and envelope when a non-streaming request's upstream stream ended with no terminal
/// event: 502 `upstream_stream_truncated`.
pub fn truncated_error() -> (u16, Value) {
    (502, truncated_envelope())
}

// === Non-streaming ===

/// How a collected upstream stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Collected {
    /// `response.completed` or `response.incomplete`: the response object, with `output`
    /// rebuilt from the streamed items when the upstream left it empty. Pass it to
    /// [`completion_from_response`].
    Response(Value),
    /// `response.failed` or `error`: the event as received. Pass it to [`error_from_failed`].
    Failed(Value),
    /// The stream ended with no terminal event; see [`truncated_error`].
    Truncated,
}

/// Gathers what a non-streaming chat request needs from the upstream stream.
///
/// With `store:false` the Codex backend sends the finished items in `response.output_item.done`
/// but often an empty `output` in `response.completed`; the collector keeps those items (and the
/// text deltas, as a last resort) and puts them back into the final response.
#[derive(Debug, Default)]
pub struct ResponseCollector {
    items: Vec<(u64, Value)>,
    text: String,
    outcome: Option<Collected>,
}

// === impl ResponseCollector ===

impl ResponseCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one upstream event (same arguments as [`ChunkStream::on_event`]). Events after a
    /// terminal one are ignored.
    pub fn on_event(&mut self, event_type: &str, data: &Value) {
        if self.outcome.is_some() {
            return;
        }
        match event_kind(event_type, data) {
            "response.output_item.done" => {
                if let Some(item) = data.get("item") {
                    let index = output_index(data).unwrap_or(self.items.len() as u64);
                    self.items.push((index, item.clone()));
                }
            }
            "response.output_text.delta" | "response.text.delta" => {
                if let Some(delta) = data.get("delta").and_then(Value::as_str) {
                    self.text.push_str(delta);
                }
            }
            kind @ ("response.completed" | "response.incomplete") => {
                let mut response = data
                    .get("response")
                    .cloned()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                if let Some(obj) = response.as_object_mut() {
                    if kind == "response.incomplete" && !obj.contains_key("status") {
                        obj.insert("status".into(), Value::String("incomplete".into()));
                    }
                    self.backfill(obj);
                }
                self.outcome = Some(Collected::Response(response));
            }
            "response.failed" | "error" => self.outcome = Some(Collected::Failed(data.clone())),
            _ => {}
        }
    }

    /// A terminal event has been seen; the rest of the upstream stream can be dropped.
    pub fn is_terminal(&self) -> bool {
        self.outcome.is_some()
    }

    /// The outcome; [`Collected::Truncated`] when no terminal event came.
    pub fn finish(self) -> Collected {
        self.outcome.unwrap_or(Collected::Truncated)
    }

    fn backfill(&mut self, response: &mut Map<String, Value>) {
        let empty = response
            .get("output")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if !empty {
            return;
        }
        let output = if !self.items.is_empty() {
            let mut items = std::mem::take(&mut self.items);
            items.sort_by_key(|(index, _)| *index);
            items.into_iter().map(|(_, item)| item).collect()
        } else if !self.text.is_empty() {
            vec![json!({
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{ "type": "output_text", "text": self.text, "annotations": [] }],
            })]
        } else {
            return;
        };
        response.insert("output".into(), Value::Array(output));
    }
}

/// A `chat.completion` from the final response object (`response.completed` /
/// `response.incomplete`, or [`Collected::Response`]).
///
/// `message.content` is the output text joined (null when there is none), `refusal` the refusal
/// text or null, `tool_calls` present only when the model called functions.
pub fn completion_from_response(id: &str, created: u64, model: &str, response: &Value) -> Value {
    let mut text: Option<String> = None;
    let mut refusal: Option<String> = None;
    let mut tool_calls = Vec::new();
    let mut calls_complete = true;
    let items = response
        .get("output")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let parts = item
                    .get("content")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            let t = part.get("text").and_then(Value::as_str).unwrap_or_default();
                            text.get_or_insert_with(String::new).push_str(t);
                        }
                        Some("refusal") => {
                            let r = part
                                .get("refusal")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            refusal.get_or_insert_with(String::new).push_str(r);
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let str_of = |key: &str| item.get(key).and_then(Value::as_str);
                let call_id = str_of("call_id")
                    .or_else(|| str_of("id"))
                    .unwrap_or_default();
                calls_complete &= str_of("status") != Some("incomplete");
                tool_calls.push(json!({
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": str_of("name").unwrap_or_default(),
                        "arguments": str_of("arguments").unwrap_or_default(),
                    },
                }));
            }
            _ => {}
        }
    }
    let reason = finish_reason(
        incomplete_reason(false, response),
        !tool_calls.is_empty(),
        calls_complete,
    );
    let mut message = Map::new();
    message.insert("role".into(), Value::String("assistant".into()));
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    message.insert("refusal".into(), refusal.map_or(Value::Null, Value::String));
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let mut completion = Map::new();
    completion.insert("id".into(), Value::String(id.to_string()));
    completion.insert("object".into(), Value::String("chat.completion".into()));
    completion.insert("created".into(), Value::from(created));
    completion.insert("model".into(), Value::String(model.to_string()));
    completion.insert(
        "choices".into(),
        json!([{ "index": 0, "message": message, "finish_reason": reason }]),
    );
    if let Some(usage) = response.get("usage").and_then(chat_usage) {
        completion.insert("usage".into(), usage);
    }
    Value::Object(completion)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    // --- request helpers ---

    fn translate(req: Value) -> ChatRequest {
        to_responses_request(&req).expect("request translates")
    }

    fn body(req: Value) -> Value {
        translate(req).body
    }

    fn rejected(req: Value) -> ChatError {
        to_responses_request(&req).expect_err("request is rejected")
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    fn with(extra: Value) -> Value {
        let mut req = json!({ "model": "gpt-5.5", "messages": [user("hi")] });
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    }

    // --- stream helpers ---

    /// An upstream event as the backend sends it: `type` and `sequence_number` first (§2.1).
    fn ev(kind: &str, seq: u64, rest: Value) -> (String, Value) {
        let mut data = Map::new();
        data.insert("type".into(), json!(kind));
        data.insert("sequence_number".into(), json!(seq));
        data.extend(rest.as_object().unwrap().clone());
        (kind.to_string(), Value::Object(data))
    }

    fn response_obj(status: &str, output: Value, usage: Value) -> Value {
        json!({
            "id": "resp_0a1b2c", "object": "response", "created_at": 1764100000,
            "status": status, "model": "gpt-5.5", "output": output, "usage": usage,
        })
    }

    fn usage() -> Value {
        json!({"input_tokens":5231,"input_tokens_details":{"cached_tokens":4864},
               "output_tokens":41,"output_tokens_details":{"reasoning_tokens":24},"total_tokens":5272})
    }

    fn preamble() -> Vec<(String, Value)> {
        let created = response_obj("in_progress", json!([]), Value::Null);
        vec![
            ev("response.created", 0, json!({ "response": created })),
            ev(
                "codex.rate_limits",
                1,
                json!({"plan_type":"plus","rate_limits":{"allowed":true,"limit_reached":false,
                   "primary":{"used_percent":37.0,"window_minutes":300,"reset_at":1764112345}}}),
            ),
            ev("response.in_progress", 2, json!({ "response": created })),
            ev(
                "response.output_item.added",
                3,
                json!({"output_index":0,"item":{"id":"rs_01","type":"reasoning","summary":[]}}),
            ),
            ev(
                "response.reasoning_summary_text.delta",
                4,
                json!({"item_id":"rs_01","output_index":0,"summary_index":0,"delta":"Thinking"}),
            ),
            ev(
                "response.output_item.done",
                5,
                json!({"output_index":0,"item":{"id":"rs_01","type":"reasoning","summary":[],
                   "encrypted_content":"gAAAAABmockmockmock"}}),
            ),
        ]
    }

    fn message_item(text: &str) -> Value {
        json!({"id":"msg_01","type":"message","role":"assistant","status":"completed",
               "content":[{"type":"output_text","text":text,"annotations":[]}],"phase":"final_answer"})
    }

    /// The composed short-answer stream of PROTOCOL.md §2.5 ("Hi there, friend!").
    fn text_events() -> Vec<(String, Value)> {
        let mut events = preamble();
        let text_ev = |seq: u64, delta: &str| {
            ev(
                "response.output_text.delta",
                seq,
                json!({"item_id":"msg_01","output_index":1,"content_index":0,"delta":delta,"logprobs":[]}),
            )
        };
        events.extend([
            ev(
                "response.output_item.added",
                6,
                json!({"output_index":1,"item":{"id":"msg_01","type":"message","role":"assistant",
                   "status":"in_progress","content":[]}}),
            ),
            ev(
                "response.content_part.added",
                7,
                json!({"item_id":"msg_01","output_index":1,"content_index":0,
                   "part":{"type":"output_text","text":"","annotations":[]}}),
            ),
            text_ev(8, "Hi"),
            text_ev(9, " there,"),
            text_ev(10, " friend!"),
            ev(
                "response.output_text.done",
                11,
                json!({"item_id":"msg_01","output_index":1,"content_index":0,
                   "text":"Hi there, friend!","logprobs":[]}),
            ),
            ev(
                "response.output_item.done",
                12,
                json!({"output_index":1,"item":message_item("Hi there, friend!")}),
            ),
            ev(
                "response.completed",
                13,
                json!({"response": response_obj("completed", json!([message_item("Hi there, friend!")]), usage())}),
            ),
        ]);
        events
    }

    fn fc_item(id: &str, call_id: &str, name: &str, args: &str, status: &str) -> Value {
        json!({"id":id,"type":"function_call","status":status,"arguments":args,"call_id":call_id,"name":name})
    }

    /// Two parallel calls whose argument deltas interleave and split mid-JSON.
    fn two_call_events() -> Vec<(String, Value)> {
        let args_delta = |seq: u64, item: &str, oi: u64, delta: &str| {
            ev(
                "response.function_call_arguments.delta",
                seq,
                json!({"item_id":item,"output_index":oi,"delta":delta}),
            )
        };
        let paris = r#"{"city":"Paris"}"#;
        let berlin = r#"{"city":"Berlin"}"#;
        let mut events = preamble();
        events.extend([
            ev(
                "response.output_item.added",
                6,
                json!({"output_index":1,"item":fc_item("fc_1","call_a","get_weather","","in_progress")}),
            ),
            args_delta(7, "fc_1", 1, "{\"ci"),
            ev(
                "response.output_item.added",
                8,
                json!({"output_index":2,"item":fc_item("fc_2","call_b","get_weather","","in_progress")}),
            ),
            args_delta(9, "fc_2", 2, "{\"ci"),
            args_delta(10, "fc_1", 1, "ty\":\"Par"),
            args_delta(11, "fc_2", 2, "ty\":\"Ber"),
            args_delta(12, "fc_1", 1, "is\"}"),
            args_delta(13, "fc_2", 2, "lin\"}"),
            ev(
                "response.function_call_arguments.done",
                14,
                json!({"item_id":"fc_1","output_index":1,"arguments":paris}),
            ),
            ev(
                "response.output_item.done",
                15,
                json!({"output_index":1,"item":fc_item("fc_1","call_a","get_weather",paris,"completed")}),
            ),
            ev(
                "response.function_call_arguments.done",
                16,
                json!({"item_id":"fc_2","output_index":2,"arguments":berlin}),
            ),
            ev(
                "response.output_item.done",
                17,
                json!({"output_index":2,"item":fc_item("fc_2","call_b","get_weather",berlin,"completed")}),
            ),
            ev(
                "response.completed",
                18,
                json!({"response": response_obj("completed", json!([]), usage())}),
            ),
        ]);
        events
    }

    fn stream(include_usage: bool) -> ChunkStream {
        ChunkStream::new(
            "chatcmpl-1".into(),
            1764100001,
            "gpt-5.5".into(),
            include_usage,
        )
    }

    /// Feeds the events then ends the stream; returns every frame.
    fn run(s: &mut ChunkStream, events: &[(String, Value)]) -> Vec<String> {
        let mut frames = Vec::new();
        for (kind, data) in events {
            frames.extend(s.on_event(kind, data));
        }
        frames.extend(s.finish());
        frames
    }

    /// Each frame's JSON; `None` for `[DONE]`. Asserts the framing.
    fn parse(frames: &[String]) -> Vec<Option<Value>> {
        frames
            .iter()
            .map(|f| {
                let payload = f
                    .strip_prefix("data: ")
                    .and_then(|p| p.strip_suffix("\n\n"))
                    .unwrap_or_else(|| panic!("bad frame {f:?}"));
                assert!(!payload.contains('\n'), "one line per frame: {f:?}");
                (payload != "[DONE]").then(|| serde_json::from_str(payload).unwrap())
            })
            .collect()
    }

    #[derive(Debug, Default)]
    struct Assembled {
        role: Option<String>,
        content: String,
        refusal: String,
        calls: Vec<(String, String, String)>,
        finish: Option<String>,
    }

    /// Rebuilds the message the way an OpenAI client does from the chunks.
    fn assemble(chunks: &[Option<Value>]) -> Assembled {
        let mut out = Assembled::default();
        for chunk in chunks.iter().flatten() {
            let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
                continue;
            };
            let delta = &choice["delta"];
            if let Some(role) = delta["role"].as_str() {
                assert!(out.role.is_none(), "role sent twice");
                out.role = Some(role.to_string());
            }
            out.content
                .push_str(delta["content"].as_str().unwrap_or_default());
            out.refusal
                .push_str(delta["refusal"].as_str().unwrap_or_default());
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap() as usize;
                if i == out.calls.len() {
                    out.calls.push((
                        call["id"].as_str().unwrap().to_string(),
                        call["function"]["name"].as_str().unwrap().to_string(),
                        String::new(),
                    ));
                }
                out.calls[i]
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap());
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                assert!(out.finish.is_none(), "finish_reason sent twice");
                out.finish = Some(reason.to_string());
            }
        }
        out
    }

    // === request: messages ===

    #[test]
    fn minimal_request_has_upstream_invariants() {
        let req = translate(json!({ "model": "gpt-5.5", "messages": [user("Say hi")] }));
        assert_eq!(
            req.body,
            json!({
                "model": "gpt-5.5",
                "instructions": "",
                "input": [{"type":"message","role":"user","content":[{"type":"input_text","text":"Say hi"}]}],
                "store": false, "stream": true, "include": [],
            })
        );
        assert!(!req.stream);
        assert!(!req.include_usage);
        assert_eq!(req.model, "gpt-5.5");
    }

    #[test]
    fn system_and_developer_become_instructions_in_order() {
        let b = body(json!({"model":"m","messages":[
            {"role":"system","content":"Be brief."},
            user("q1"),
            {"role":"developer","content":[{"type":"text","text":"Use French."},{"type":"text","text":"No emoji."}]},
            {"role":"system","content":""},
        ]}));
        assert_eq!(b["instructions"], "Be brief.\nUse French.\nNo emoji.");
        assert_eq!(b["input"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn system_image_part_is_rejected() {
        let e = rejected(json!({"model":"m","messages":[
            {"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},
        ]}));
        assert_eq!(e.param(), Some("messages[0].content[0].type"));
    }

    #[test]
    fn user_parts_map_to_input_text_and_image() {
        let b = body(json!({"model":"m","messages":[{"role":"user","content":[
            {"type":"text","text":"What is this?"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"high"}},
            {"type":"image_url","image_url":{"url":"https://x/y.png"}},
        ]}]}));
        assert_eq!(
            b["input"][0]["content"],
            json!([
                {"type":"input_text","text":"What is this?"},
                {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"high"},
                {"type":"input_image","image_url":"https://x/y.png","detail":"auto"},
            ])
        );
    }

    #[test]
    fn user_file_part_maps_to_input_file() {
        let b = body(json!({"model":"m","messages":[{"role":"user","content":[
            {"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}},
        ]}]}));
        assert_eq!(
            b["input"][0]["content"][0],
            json!({"type":"input_file","file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"})
        );
    }

    #[test]
    fn user_audio_part_is_unsupported() {
        let e = rejected(json!({"model":"m","messages":[{"role":"user","content":[
            {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}},
        ]}]}));
        assert_eq!(e.param(), Some("messages[0].content[0].type"));
        assert_eq!(e.code(), "unsupported_parameter");
    }

    #[test]
    fn image_without_url_names_the_field() {
        let e = rejected(json!({"model":"m","messages":[{"role":"user","content":[
            {"type":"image_url","image_url":{"detail":"low"}},
        ]}]}));
        assert_eq!(e.param(), Some("messages[0].content[0].image_url.url"));
    }

    #[test]
    fn user_without_content_is_rejected() {
        let e = rejected(json!({"model":"m","messages":[{"role":"user"}]}));
        assert_eq!(e.param(), Some("messages[0].content"));
    }

    #[test]
    fn assistant_text_becomes_output_text_message() {
        let b = body(json!({"model":"m","messages":[
            user("hi"), {"role":"assistant","content":"Hello!"}, user("again"),
        ]}));
        assert_eq!(
            b["input"][1],
            json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello!"}]})
        );
        assert_eq!(b["input"][2]["role"], "user");
    }

    #[test]
    fn assistant_text_then_tool_calls_then_outputs() {
        let b = body(json!({"model":"m","messages":[
            user("weather?"),
            {"role":"assistant","content":"Checking.","tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Berlin\"}"}},
            ]},
            {"role":"tool","tool_call_id":"call_a","content":"18C"},
            {"role":"tool","toolCallId":"call_b","content":[{"type":"text","text":"12C"},{"type":"text","text":"rain"}]},
        ]}));
        assert_eq!(
            b["input"],
            json!([
                {"type":"message","role":"user","content":[{"type":"input_text","text":"weather?"}]},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
                {"type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
                {"type":"function_call","call_id":"call_b","name":"get_weather","arguments":"{\"city\":\"Berlin\"}"},
                {"type":"function_call_output","call_id":"call_a","output":"18C"},
                {"type":"function_call_output","call_id":"call_b","output":"12C\nrain"},
            ])
        );
    }

    #[test]
    fn assistant_tool_calls_without_content_emit_no_message() {
        let b = body(json!({"model":"m","messages":[
            user("go"),
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"noop"}},
            ]},
        ]}));
        assert_eq!(
            b["input"][1],
            json!({"type":"function_call","call_id":"call_1","name":"noop","arguments":"{}"})
        );
        assert_eq!(b["input"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn assistant_refusal_is_kept() {
        let b = body(json!({"model":"m","messages":[
            user("x"), {"role":"assistant","content":null,"refusal":"I can't help with that."},
        ]}));
        assert_eq!(
            b["input"][1]["content"],
            json!([{"type":"refusal","refusal":"I can't help with that."}])
        );
    }

    #[test]
    fn tool_message_accepts_call_id_alias() {
        let b = body(json!({"model":"m","messages":[
            user("x"), {"role":"tool","call_id":"call_z","content":"ok"},
        ]}));
        assert_eq!(
            b["input"][1],
            json!({"type":"function_call_output","call_id":"call_z","output":"ok"})
        );
    }

    #[test]
    fn tool_message_without_id_is_rejected() {
        let e =
            rejected(json!({"model":"m","messages":[user("x"), {"role":"tool","content":"ok"}]}));
        assert_eq!(e.param(), Some("messages[1].tool_call_id"));
    }

    #[test]
    fn tool_call_without_id_is_rejected() {
        let e = rejected(json!({"model":"m","messages":[user("x"),
            {"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}));
        assert_eq!(e.param(), Some("messages[1].tool_calls[0].id"));
    }

    #[test]
    fn unknown_and_legacy_roles_are_rejected() {
        let e = rejected(json!({"model":"m","messages":[{"role":"robot","content":"x"}]}));
        assert_eq!(e.param(), Some("messages[0].role"));
        let e = rejected(
            json!({"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}),
        );
        assert_eq!(e.param(), Some("messages[0].role"));
        assert_eq!(e.code(), "unsupported_parameter");
    }

    // === request: top-level fields ===

    #[test]
    fn missing_or_empty_model_and_messages_are_rejected() {
        assert_eq!(
            rejected(json!({"messages":[user("x")]})).param(),
            Some("model")
        );
        assert_eq!(
            rejected(json!({"model":"  ","messages":[user("x")]})).param(),
            Some("model")
        );
        assert_eq!(rejected(json!({"model":"m"})).param(), Some("messages"));
        assert_eq!(
            rejected(json!({"model":"m","messages":[]})).param(),
            Some("messages")
        );
        assert_eq!(rejected(json!([1, 2])), ChatError::NotAnObject);
    }

    #[test]
    fn tools_are_flattened() {
        let b = body(with(json!({"tools":[
            {"type":"function","function":{"name":"get_weather","description":"Weather by city",
              "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}},
            {"type":"function","function":{"name":"ping"}},
        ]})));
        assert_eq!(
            b["tools"],
            json!([
                {"type":"function","name":"get_weather","description":"Weather by city",
                 "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true},
                {"type":"function","name":"ping","parameters":{"type":"object","properties":{}},"strict":false},
            ])
        );
    }

    #[test]
    fn non_function_tool_is_rejected_with_its_param() {
        let e = rejected(with(json!({"tools":[
            {"type":"function","function":{"name":"a"}},
            {"type":"web_search"},
        ]})));
        assert_eq!(e.param(), Some("tools[1].type"));
        assert_eq!(e.code(), "unsupported_parameter");
    }

    #[test]
    fn tool_without_name_is_rejected() {
        let e = rejected(with(
            json!({"tools":[{"type":"function","function":{"description":"x"}}]}),
        ));
        assert_eq!(e.param(), Some("tools[0].function.name"));
    }

    #[test]
    fn tool_choice_strings_pass_and_function_is_flattened() {
        for choice in ["auto", "none", "required"] {
            assert_eq!(
                body(with(json!({ "tool_choice": choice })))["tool_choice"],
                choice
            );
        }
        let b = body(with(
            json!({"tool_choice":{"type":"function","function":{"name":"get_weather"}}}),
        ));
        assert_eq!(
            b["tool_choice"],
            json!({"type":"function","name":"get_weather"})
        );
        let e = rejected(with(json!({"tool_choice":"sometimes"})));
        assert_eq!(e.param(), Some("tool_choice"));
        let e = rejected(with(
            json!({"tool_choice":{"type":"function","function":{}}}),
        ));
        assert_eq!(e.param(), Some("tool_choice.function.name"));
    }

    #[test]
    fn response_format_maps_to_text_format() {
        let b = body(with(
            json!({"response_format":{"type":"json_schema","json_schema":{
            "name":"answer","strict":true,
            "schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}}),
        ));
        assert_eq!(
            b["text"],
            json!({"format":{"type":"json_schema","name":"answer",
                "schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false},
                "strict":true}})
        );
        let b = body(with(json!({"response_format":{"type":"json_object"}})));
        assert_eq!(b["text"], json!({"format":{"type":"json_object"}}));
        let b = body(with(json!({"response_format":{"type":"text"}})));
        assert_eq!(b["text"], json!({"format":{"type":"text"}}));
    }

    #[test]
    fn bad_response_format_names_the_field() {
        let e = rejected(with(json!({"response_format":{"type":"yaml"}})));
        assert_eq!(e.param(), Some("response_format.type"));
        let e = rejected(with(
            json!({"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}),
        ));
        assert_eq!(e.param(), Some("response_format.json_schema.name"));
    }

    #[test]
    fn effort_parallel_verbosity_and_cache_key_pass() {
        let b = body(with(json!({
            "reasoning_effort":"high","parallel_tool_calls":false,
            "verbosity":"low","prompt_cache_key":"conv-1",
        })));
        assert_eq!(b["reasoning"], json!({"effort":"high"}));
        assert_eq!(b["parallel_tool_calls"], false);
        assert_eq!(b["text"], json!({"verbosity":"low"}));
        assert_eq!(b["prompt_cache_key"], "conv-1");
    }

    #[test]
    fn unsupported_sampling_and_limits_are_dropped() {
        let b = body(with(json!({
            "max_tokens":100,"max_completion_tokens":100,"store":true,"temperature":0.2,
            "top_p":0.9,"user":"u1","metadata":{"a":"b"},"seed":7,"frequency_penalty":0.1,
            "presence_penalty":0.1,"logit_bias":{"50256":-100},"stop":["\n"],"n":1,"logprobs":false,
        })));
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "model",
                "instructions",
                "input",
                "store",
                "stream",
                "include"
            ]
        );
        assert_eq!(b["store"], false);
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn n_above_one_is_rejected() {
        let e = rejected(with(json!({"n":2})));
        assert_eq!(e.param(), Some("n"));
        assert_eq!(e.code(), "unsupported_parameter");
        assert_eq!(rejected(with(json!({"n":0}))).param(), Some("n"));
    }

    #[test]
    fn logprobs_are_rejected() {
        assert_eq!(
            rejected(with(json!({"logprobs":true}))).param(),
            Some("logprobs")
        );
        assert_eq!(
            rejected(with(json!({"top_logprobs":3}))).param(),
            Some("top_logprobs")
        );
        translate(with(json!({"top_logprobs":0})));
    }

    #[test]
    fn legacy_functions_and_audio_are_rejected() {
        assert_eq!(
            rejected(with(json!({"functions":[{"name":"f"}]}))).param(),
            Some("functions")
        );
        assert_eq!(
            rejected(with(json!({"modalities":["text","audio"]}))).param(),
            Some("modalities")
        );
    }

    #[test]
    fn stream_flags() {
        let r = translate(with(
            json!({"stream":true,"stream_options":{"include_usage":true}}),
        ));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.body["stream"], true);
        let r = translate(with(
            json!({"stream":false,"stream_options":{"include_usage":true}}),
        ));
        assert!(!r.stream && !r.include_usage);
        assert_eq!(r.body["stream"], true, "the upstream always streams");
        assert_eq!(
            rejected(with(json!({"stream":"yes"}))).param(),
            Some("stream")
        );
    }

    #[test]
    fn chat_error_becomes_a_400_envelope_with_param() {
        let api = rejected(with(json!({"n":3}))).to_api_error();
        assert_eq!(api.status, 400);
        let v: Value = serde_json::from_slice(&api.to_json()).unwrap();
        assert_eq!(v["error"]["param"], "n");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "unsupported_parameter");
        assert!(v["error"]["message"].as_str().unwrap().contains("n=3"));
    }

    // === streaming ===

    #[test]
    fn text_stream() {
        let mut s = stream(false);
        let frames = run(&mut s, &text_events());
        let chunks = parse(&frames);
        assert_eq!(chunks.len(), 5, "{frames:?}");
        assert_eq!(chunks.last().unwrap(), &None, "ends with [DONE]");
        assert_eq!(frames.last().unwrap(), DONE_FRAME);
        let first = chunks[0].as_ref().unwrap();
        assert_eq!(
            first,
            &json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764100001,"model":"gpt-5.5",
                    "choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]})
        );
        assert_eq!(
            chunks[1].as_ref().unwrap()["choices"][0]["delta"],
            json!({"content":" there,"})
        );
        assert_eq!(
            chunks[3].as_ref().unwrap()["choices"][0],
            json!({"index":0,"delta":{},"finish_reason":"stop"})
        );
        for chunk in chunks.iter().flatten() {
            assert!(chunk.get("usage").is_none());
        }
        let msg = assemble(&chunks);
        assert_eq!(msg.role.as_deref(), Some("assistant"));
        assert_eq!(msg.content, "Hi there, friend!");
        assert!(s.is_terminal());
        assert!(s.finish().is_empty(), "finish is idempotent");
    }

    #[test]
    fn text_stream_with_usage() {
        let mut s = stream(true);
        let chunks = parse(&run(&mut s, &text_events()));
        assert_eq!(chunks.len(), 6);
        for chunk in &chunks[..4] {
            assert_eq!(chunk.as_ref().unwrap()["usage"], Value::Null);
        }
        assert_eq!(
            chunks[4].as_ref().unwrap(),
            &json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764100001,"model":"gpt-5.5",
                    "choices":[],
                    "usage":{"prompt_tokens":5231,"completion_tokens":41,"total_tokens":5272,
                             "prompt_tokens_details":{"cached_tokens":4864},
                             "completion_tokens_details":{"reasoning_tokens":24}}})
        );
        assert_eq!(chunks[5], None);
    }

    #[test]
    fn parallel_tool_calls_with_split_arguments() {
        let mut s = stream(false);
        let chunks = parse(&run(&mut s, &two_call_events()));
        let msg = assemble(&chunks);
        assert_eq!(msg.role.as_deref(), Some("assistant"));
        assert_eq!(msg.content, "");
        assert_eq!(
            msg.calls,
            vec![
                (
                    "call_a".to_string(),
                    "get_weather".to_string(),
                    r#"{"city":"Paris"}"#.to_string()
                ),
                (
                    "call_b".to_string(),
                    "get_weather".to_string(),
                    r#"{"city":"Berlin"}"#.to_string()
                ),
            ]
        );
        assert_eq!(msg.finish.as_deref(), Some("tool_calls"));
        // The announcement carries index, id, type and name once, with empty arguments.
        assert_eq!(
            chunks[0].as_ref().unwrap()["choices"][0]["delta"],
            json!({"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function",
                   "function":{"name":"get_weather","arguments":""}}]})
        );
        assert_eq!(
            chunks[1].as_ref().unwrap()["choices"][0]["delta"],
            json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]})
        );
        // The `.done` events repeat what the deltas sent: no extra frames.
        let arg_frames = chunks
            .iter()
            .flatten()
            .filter(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]
                    .get("id")
                    .is_none()
            })
            .filter(|c| c["choices"][0]["delta"].get("tool_calls").is_some())
            .count();
        assert_eq!(arg_frames, 6);
    }

    #[test]
    fn tool_call_arguments_only_in_done_are_still_sent() {
        let args = r#"{"command":["ls"]}"#;
        let events = [
            ev(
                "response.output_item.added",
                1,
                json!({"output_index":0,"item":fc_item("fc_9","call_9","shell","","in_progress")}),
            ),
            ev(
                "response.function_call_arguments.done",
                2,
                json!({"item_id":"fc_9","output_index":0,"arguments":args}),
            ),
            ev(
                "response.output_item.done",
                3,
                json!({"output_index":0,"item":fc_item("fc_9","call_9","shell",args,"completed")}),
            ),
            ev(
                "response.completed",
                4,
                json!({"response": response_obj("completed", json!([]), usage())}),
            ),
        ];
        let msg = assemble(&parse(&run(&mut stream(false), &events)));
        assert_eq!(
            msg.calls,
            vec![("call_9".into(), "shell".into(), args.to_string())]
        );
        assert_eq!(msg.finish.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn tool_call_seen_only_at_item_done_is_announced_whole() {
        let args = r#"{"q":1}"#;
        let events = [
            ev(
                "response.output_item.done",
                1,
                json!({"output_index":0,"item":fc_item("fc_1","call_1","lookup",args,"completed")}),
            ),
            ev(
                "response.completed",
                2,
                json!({"response": response_obj("completed", json!([]), usage())}),
            ),
        ];
        let chunks = parse(&run(&mut stream(false), &events));
        assert_eq!(chunks.len(), 3);
        let msg = assemble(&chunks);
        assert_eq!(
            msg.calls,
            vec![("call_1".into(), "lookup".into(), args.to_string())]
        );
    }

    #[test]
    fn text_then_tool_call_keeps_role_on_first_chunk_only() {
        let events = [
            ev(
                "response.output_text.delta",
                1,
                json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Let me check."}),
            ),
            ev(
                "response.output_item.added",
                2,
                json!({"output_index":1,"item":fc_item("fc_1","call_1","f","","in_progress")}),
            ),
            ev(
                "response.function_call_arguments.delta",
                3,
                json!({"item_id":"fc_1","output_index":1,"delta":"{}"}),
            ),
            ev(
                "response.output_item.done",
                4,
                json!({"output_index":1,"item":fc_item("fc_1","call_1","f","{}","completed")}),
            ),
            ev(
                "response.completed",
                5,
                json!({"response": response_obj("completed", json!([]), usage())}),
            ),
        ];
        let msg = assemble(&parse(&run(&mut stream(false), &events)));
        assert_eq!(msg.content, "Let me check.");
        assert_eq!(msg.calls.len(), 1);
        assert_eq!(msg.finish.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn refusal_delta_becomes_delta_refusal() {
        let events = [
            ev(
                "response.refusal.delta",
                1,
                json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":"I can't"}),
            ),
            ev(
                "response.refusal.delta",
                2,
                json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":" help."}),
            ),
            ev(
                "response.completed",
                3,
                json!({"response": response_obj("completed", json!([]), usage())}),
            ),
        ];
        let chunks = parse(&run(&mut stream(false), &events));
        assert_eq!(
            chunks[0].as_ref().unwrap()["choices"][0]["delta"],
            json!({"role":"assistant","refusal":"I can't"})
        );
        let msg = assemble(&chunks);
        assert_eq!(msg.refusal, "I can't help.");
        assert_eq!(msg.finish.as_deref(), Some("stop"));
    }

    fn incomplete_events(reason: &str) -> Vec<(String, Value)> {
        let mut events = text_events();
        events.pop();
        let mut response = response_obj("incomplete", json!([]), usage());
        response["incomplete_details"] = json!({ "reason": reason });
        events.push(ev(
            "response.incomplete",
            13,
            json!({ "response": response }),
        ));
        events
    }

    #[test]
    fn incomplete_max_output_tokens_is_length() {
        let mut s = stream(true);
        let chunks = parse(&run(&mut s, &incomplete_events("max_output_tokens")));
        assert_eq!(assemble(&chunks).finish.as_deref(), Some("length"));
        let usage_chunk = chunks[chunks.len() - 2].as_ref().unwrap();
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 41);
    }

    #[test]
    fn incomplete_content_filter() {
        let chunks = parse(&run(
            &mut stream(false),
            &incomplete_events("content_filter"),
        ));
        assert_eq!(assemble(&chunks).finish.as_deref(), Some("content_filter"));
    }

    #[test]
    fn incomplete_while_a_call_is_unfinished_is_length() {
        let mut events = two_call_events();
        // Cut after the third argument delta: no call is finished.
        events.truncate(preamble().len() + 5);
        let mut response = response_obj("incomplete", json!([]), usage());
        response["incomplete_details"] = json!({"reason":"max_output_tokens"});
        events.push(ev(
            "response.incomplete",
            99,
            json!({ "response": response }),
        ));
        let msg = assemble(&parse(&run(&mut stream(false), &events)));
        assert_eq!(msg.finish.as_deref(), Some("length"));
    }

    #[test]
    fn failed_mid_stream_sends_error_then_done() {
        let mut events = text_events();
        events.truncate(events.len() - 5);
        events.push(ev(
            "response.failed",
            20,
            json!({"response":{"id":"resp_0a1b2c","object":"response","status":"failed",
                   "error":{"code":"server_error","message":"Something went wrong."}}}),
        ));
        let mut s = stream(true);
        let frames = run(&mut s, &events);
        let chunks = parse(&frames);
        let n = chunks.len();
        assert_eq!(
            chunks[n - 2].as_ref().unwrap(),
            &json!({"error":{"message":"Something went wrong.","type":"server_error","code":"server_error"}})
        );
        assert_eq!(chunks[n - 1], None);
        assert_eq!(assemble(&chunks).finish, None);
        assert!(
            chunks
                .iter()
                .flatten()
                .all(|c| c.get("choices") != Some(&json!([]))),
            "no usage chunk after a failure"
        );
    }

    #[test]
    fn error_event_sends_error_then_done() {
        let mut s = stream(false);
        let events = [
            ev(
                "response.output_text.delta",
                1,
                json!({"item_id":"m","output_index":0,"content_index":0,"delta":"Hel"}),
            ),
            ev(
                "error",
                2,
                json!({"code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 11.054s.","param":null}),
            ),
        ];
        let chunks = parse(&run(&mut s, &events));
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[1].as_ref().unwrap(),
            &json!({"error":{"message":"Rate limit reached. Please try again in 11.054s.",
                             "type":"rate_limit_error","code":"rate_limit_exceeded"}})
        );
        assert_eq!(chunks[2], None);
    }

    #[test]
    fn stream_without_terminal_event_is_truncated() {
        let mut events = text_events();
        events.pop();
        let mut s = stream(true);
        let chunks = parse(&run(&mut s, &events));
        let n = chunks.len();
        assert_eq!(
            chunks[n - 2].as_ref().unwrap(),
            &json!({"error":{"message":"Responses stream ended before a terminal event",
                             "type":"server_error","code":"upstream_stream_truncated"}})
        );
        assert_eq!(chunks[n - 1], None);
        assert_eq!(assemble(&chunks).content, "Hi there, friend!");
    }

    #[test]
    fn empty_stream_is_truncated() {
        let mut s = stream(false);
        assert!(!s.started());
        let chunks = parse(&s.finish());
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].as_ref().unwrap()["error"]["code"], TRUNCATED_CODE);
    }

    #[test]
    fn events_after_terminal_are_ignored() {
        let mut s = stream(false);
        let mut frames = Vec::new();
        for (k, d) in text_events() {
            frames.extend(s.on_event(&k, &d));
        }
        let late = s.on_event(
            "response.output_text.delta",
            &json!({"item_id":"m","output_index":0,"delta":"late"}),
        );
        assert!(late.is_empty());
        assert!(s.is_terminal());
    }

    #[test]
    fn ignored_events_produce_nothing() {
        let mut s = stream(true);
        for (k, d) in preamble() {
            assert!(s.on_event(&k, &d).is_empty(), "{k}");
        }
        assert!(!s.started());
    }

    #[test]
    fn event_type_falls_back_to_data_type() {
        let mut s = stream(false);
        let (_, data) = ev(
            "response.output_text.delta",
            1,
            json!({"item_id":"m","output_index":0,"content_index":0,"delta":"x"}),
        );
        let chunks = parse(&s.on_event("", &data));
        assert_eq!(
            chunks[0].as_ref().unwrap()["choices"][0]["delta"]["content"],
            "x"
        );
    }

    #[test]
    fn completion_with_nothing_still_carries_role_and_stop() {
        let events = [ev(
            "response.completed",
            1,
            json!({"response": response_obj("completed", json!([]), usage())}),
        )];
        let chunks = parse(&run(&mut stream(false), &events));
        assert_eq!(
            chunks[0].as_ref().unwrap()["choices"][0],
            json!({"index":0,"delta":{"role":"assistant"},"finish_reason":"stop"})
        );
    }

    // === non-streaming ===

    #[test]
    fn completion_with_text() {
        let response = response_obj(
            "completed",
            json!([{"id":"rs_01","type":"reasoning","summary":[]}, message_item("Hi there, friend!")]),
            usage(),
        );
        assert_eq!(
            completion_from_response("chatcmpl-9", 1764100001, "gpt-5.5", &response),
            json!({
                "id":"chatcmpl-9","object":"chat.completion","created":1764100001,"model":"gpt-5.5",
                "choices":[{"index":0,"message":{"role":"assistant","content":"Hi there, friend!","refusal":null},
                            "finish_reason":"stop"}],
                "usage":{"prompt_tokens":5231,"completion_tokens":41,"total_tokens":5272,
                         "prompt_tokens_details":{"cached_tokens":4864},
                         "completion_tokens_details":{"reasoning_tokens":24}},
            })
        );
    }

    #[test]
    fn completion_with_tool_calls() {
        let response = response_obj(
            "completed",
            json!([
                fc_item(
                    "fc_1",
                    "call_a",
                    "get_weather",
                    r#"{"city":"Paris"}"#,
                    "completed"
                ),
                fc_item(
                    "fc_2",
                    "call_b",
                    "get_weather",
                    r#"{"city":"Berlin"}"#,
                    "completed"
                ),
            ]),
            usage(),
        );
        let c = completion_from_response("chatcmpl-9", 1, "gpt-5.5", &response);
        let choice = &c["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Berlin\"}"}},
            ])
        );
    }

    #[test]
    fn completion_incomplete_and_refusal() {
        let mut response = response_obj(
            "incomplete",
            json!([{"id":"msg_1","type":"message","role":"assistant","status":"incomplete",
                    "content":[{"type":"output_text","text":"Par","annotations":[]}]}]),
            usage(),
        );
        response["incomplete_details"] = json!({"reason":"max_output_tokens"});
        let c = completion_from_response("c", 1, "m", &response);
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert_eq!(c["choices"][0]["message"]["content"], "Par");

        let response = response_obj(
            "completed",
            json!([{"id":"msg_1","type":"message","role":"assistant","status":"completed",
                    "content":[{"type":"refusal","refusal":"No."}]}]),
            Value::Null,
        );
        let c = completion_from_response("c", 1, "m", &response);
        assert_eq!(c["choices"][0]["message"]["refusal"], "No.");
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert!(c.get("usage").is_none());
    }

    #[test]
    fn collector_backfills_empty_output_from_items() {
        let mut col = ResponseCollector::new();
        for (k, d) in two_call_events() {
            col.on_event(&k, &d);
        }
        assert!(col.is_terminal());
        let Collected::Response(response) = col.finish() else {
            panic!("expected a response");
        };
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 3, "reasoning + two calls, by output_index");
        assert_eq!(output[1]["call_id"], "call_a");
        let c = completion_from_response("c", 1, "gpt-5.5", &response);
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"],
            r#"{"city":"Berlin"}"#
        );
    }

    #[test]
    fn collector_keeps_a_populated_output_and_falls_back_to_text() {
        let mut col = ResponseCollector::new();
        for (k, d) in text_events() {
            col.on_event(&k, &d);
        }
        let Collected::Response(response) = col.finish() else {
            panic!("expected a response");
        };
        assert_eq!(response["output"].as_array().unwrap().len(), 1);

        // Only deltas, no items, and an empty terminal output: the text is rebuilt.
        let mut col = ResponseCollector::new();
        let mut events = text_events();
        events.retain(|(k, _)| k != "response.output_item.done");
        let last = events.len() - 1;
        events[last].1["response"]["output"] = json!([]);
        for (k, d) in &events {
            col.on_event(k, d);
        }
        let Collected::Response(response) = col.finish() else {
            panic!("expected a response");
        };
        let c = completion_from_response("c", 1, "m", &response);
        assert_eq!(c["choices"][0]["message"]["content"], "Hi there, friend!");
    }

    #[test]
    fn collector_failed_and_truncated() {
        let mut col = ResponseCollector::new();
        let (k, d) = ev(
            "response.failed",
            3,
            json!({"response":{"status":"failed","error":{"code":"context_length_exceeded",
                   "message":"Your input exceeds the context window of this model."}}}),
        );
        col.on_event(&k, &d);
        let Collected::Failed(event) = col.finish() else {
            panic!("expected a failure");
        };
        let (status, body) = error_from_failed(&event);
        assert_eq!(status, 400);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "context_length_exceeded");

        let mut col = ResponseCollector::new();
        for (k, d) in preamble() {
            col.on_event(&k, &d);
        }
        assert!(!col.is_terminal());
        assert_eq!(col.finish(), Collected::Truncated);
        let (status, body) = truncated_error();
        assert_eq!(status, 502);
        assert_eq!(body["error"]["code"], TRUNCATED_CODE);
    }

    #[test]
    fn error_from_failed_statuses() {
        let (status, body) = error_from_failed(&json!({"type":"response.failed","response":{
            "status":"failed","error":{"code":"rate_limit_exceeded","message":"Try again in 11s."}}}));
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"error":{"message":"Try again in 11s.","type":"rate_limit_error","code":"rate_limit_exceeded"}})
        );

        let (status, body) = error_from_failed(&json!({"error":{"type":"usage_limit_reached",
            "message":"The usage limit has been reached","plan_type":"plus","resets_at":1764112345}}));
        assert_eq!(status, 429);
        assert_eq!(body["error"]["type"], "usage_limit_reached");
        assert_eq!(body["error"]["plan_type"], "plus");
        assert_eq!(body["error"]["resets_at"], 1764112345);

        let (status, body) = error_from_failed(&json!({"type":"error","code":"invalid_value",
            "message":"Bad tool","param":"tools[0]"}));
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "tools[0]");
        assert_eq!(body["error"]["type"], "invalid_request_error");

        // A failed response object with an unknown code, and one with no error at all.
        let (status, body) = error_from_failed(&json!({"status":"failed",
            "error":{"code":"server_is_overloaded","message":"Overloaded"}}));
        assert_eq!(status, 502);
        assert_eq!(body["error"]["type"], "server_error");
        let (status, body) = error_from_failed(
            &json!({"type":"response.failed","response":{"status":"failed","error":null}}),
        );
        assert_eq!(status, 502);
        assert_eq!(body["error"]["message"], DEFAULT_FAILURE_MESSAGE);
        assert_eq!(body["error"]["code"], Value::Null);
    }
}
