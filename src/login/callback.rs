//! The loopback listener that takes a browser sign-in's `/auth/callback`. It exists only while its
//! sign-in is pending: the port is closed as soon as the sign-in completes, fails, expires or is
//! cancelled, because a lingering listener on 1455 would swallow the Codex CLI's own sign-in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::{LoginError, LoginFlows, Status};

/// How often the accept loop looks at its flow's status.
const TICK: Duration = Duration::from_millis(50);
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn bind(port: u16) -> std::io::Result<TcpListener> {
    // Browsers resolve `localhost` to 127.0.0.1 first; the issuer only allows localhost URIs.
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves callbacks for flow `id` until it is no longer pending, then drops the listener.
pub fn serve(flows: &LoginFlows, id: &str, listener: TcpListener) {
    loop {
        match flows.status(id) {
            Some(v) if !v.status.is_final() => {}
            _ => return,
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if handle(flows, id, stream) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                tracing::warn!(error = %e, "sign-in callback listener failed");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Answers one connection; true when the sign-in has ended.
fn handle(flows: &LoginFlows, id: &str, mut stream: TcpStream) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Some(target) = read_target(&mut stream) else {
        respond(
            &mut stream,
            400,
            "Bad request",
            "This is codex-lb's sign-in callback.",
        );
        return false;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/auth/callback" {
        respond(
            &mut stream,
            404,
            "Not found",
            "This is codex-lb's sign-in callback.",
        );
        return false;
    }
    match flows.complete_query(id, query) {
        Ok(v) => match v.status {
            Status::Complete { account, .. } => {
                let who = account["email"].as_str().unwrap_or("the account");
                respond(
                    &mut stream,
                    200,
                    "Signed in",
                    &format!("{who} was added to codex-lb. You can close this tab."),
                );
                true
            }
            Status::Failed { error } => {
                respond(&mut stream, 502, "Sign-in failed", &error);
                true
            }
            _ => true,
        },
        // A link from another (older) sign-in: refuse it, keep waiting for the right one.
        Err(e @ (LoginError::StateMismatch | LoginError::BadCallback(_))) => {
            respond(
                &mut stream,
                400,
                "Sign-in link not recognised",
                &e.to_string(),
            );
            false
        }
        Err(e) => {
            respond(&mut stream, e.status(), "Sign-in failed", &e.to_string());
            true
        }
    }
}

/// The request target of a GET, read with the same parser as the gateway's own requests.
fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return (req.method == Some("GET")).then(|| req.path.map(str::to_string))?;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => {}
            _ => return None,
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, title: &str, message: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>codex-lb: {t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1>\
         <p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {len}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        reason = if status == 200 { "OK" } else { "Error" },
        len = body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
