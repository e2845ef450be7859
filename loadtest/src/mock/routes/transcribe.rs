//! `POST /backend-api/transcribe`: Codex's voice input (PROTOCOL.md §1.2, §7 item 18). The body is
//! `multipart/form-data` with a `file` part (and an optional `prompt`); the answer is
//! `{"text": …}`. The mock checks the account like any backend call and the form's shape, records
//! the request, and "transcribes" by saying how many audio bytes it got, so a test can tell the
//! file arrived whole.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::state::Shared;

pub const TRANSCRIBE_PATH: &str = "/backend-api/transcribe";

/// The bytes of the part named `name` in a multipart body with `boundary`.
fn part<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a [u8]> {
    let delim = format!("--{boundary}");
    let want = format!("name=\"{name}\"");
    let mut rest = body;
    while let Some(at) = memchr::memmem::find(rest, delim.as_bytes()) {
        rest = &rest[at + delim.len()..];
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n")?;
        let head = &rest[..head_end];
        let content = &rest[head_end + 4..];
        let end = memchr::memmem::find(content, format!("\r\n{delim}").as_bytes())?;
        if memchr::memmem::find(head, want.as_bytes()).is_some() {
            return Some(&content[..end]);
        }
    }
    None
}

pub async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let super::Unary {
        ctx, parts, body, ..
    } = match super::unary(shared, req).await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let raw = body;
    let boundary = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| ct.starts_with("multipart/form-data"))
        .and_then(|ct| ct.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_string());
    let Some(file) = boundary.as_deref().and_then(|b| part(&raw, b, "file")) else {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(
                "Expected multipart/form-data with a 'file' part.",
                Some("file"),
                None,
            ),
        );
    };
    ctx.json(
        shared,
        StatusCode::OK,
        &json!({"text": format!("mock transcription of {} bytes", file.len())}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_named_part() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--XyZ--\r\n";
        assert_eq!(part(body, "XyZ", "file"), Some(&b"RIFF"[..]));
        assert_eq!(part(body, "XyZ", "prompt"), Some(&b"hi"[..]));
        assert_eq!(part(body, "XyZ", "nope"), None);
    }
}
