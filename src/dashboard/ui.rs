//! The web UI's files: embedded in the binary, served at `/` and `/assets/<name>`, with any other
//! unclaimed `GET` answered by `index.html` so a reload on a deep link still opens the UI.
//!
//! `CODEX_LB_DASHBOARD_DIR` points at a directory to serve instead, read on every request, so the
//! UI can be edited without rebuilding (files the binary embeds only: a new file needs a build). The files carry no secrets; who may use the data behind
//! them is decided by the admin API (`auth`).

use std::rc::Rc;

use bytes::Bytes;

use crate::http::response::full_response;
use crate::proxy::client::ClientConn;
use crate::proxy::send;
use crate::worker::Worker;

/// Where the UI may fetch from: its own origin only (no CDN, no inline script or style).
const CSP: &[u8] = b"default-src 'self'; img-src 'self' data:; style-src 'self'; \
script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The UI's files, embedded at build time.
static ASSETS: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/src/dashboard/assets");

struct Asset {
    name: &'static str,
    body: &'static [u8],
}

impl Asset {
    fn content_type(&self) -> &'static str {
        match self.name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            _ => "application/octet-stream",
        }
    }
}

/// Whether a `GET` of `path` is the UI's: not a path the proxy, the admin API or health own.
pub fn is_ui_path(path: &str) -> bool {
    const NOT_UI: [&str; 6] = [
        "/api",
        "/v1",
        "/backend-api",
        "/health",
        "/metrics",
        "/auth",
    ];
    !NOT_UI.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    })
}

/// The asset a path names; unknown paths get `index.html` (client-side routes).
fn lookup(path: &str) -> Option<Asset> {
    let name = match path.strip_prefix("/assets/") {
        Some(name) => name,
        None if path == "/favicon.svg" || path == "/favicon.ico" => "favicon.svg",
        None => "index.html",
    };
    // Only top-level files: a name with a separator never matches.
    if name.contains('/') {
        return None;
    }
    let file = ASSETS.get_file(name)?;
    Some(Asset {
        name: file.path().to_str()?,
        body: file.contents(),
    })
}

pub async fn serve(w: &Rc<Worker>, client: &mut ClientConn, path: &str, keep_alive: bool) -> bool {
    if let Err(err) = super::dashboard_reachable(w, client.origin) {
        return crate::proxy::reply_error(w, client, &err, false).await;
    }
    let Some(asset) = lookup(path) else {
        let err = crate::http::error_body::ApiError::not_found(path);
        return crate::proxy::reply_error(w, client, &err, keep_alive).await;
    };
    let body: std::borrow::Cow<'static, [u8]> = match std::env::var_os("CODEX_LB_DASHBOARD_DIR") {
        // Development only: the file is small and read off the request path of a dev setup.
        Some(dir) => match std::fs::read(std::path::Path::new(&dir).join(asset.name)) {
            Ok(b) => b.into(),
            Err(_) => asset.body.into(),
        },
        None => asset.body.into(),
    };
    // Revalidated every time, so a new binary's page never runs with an old module beside it;
    // the files are small and served from memory.
    let cache: &[u8] = b"no-cache";
    let bytes = full_response(
        200,
        asset.content_type(),
        &[
            ("cache-control", cache),
            ("content-security-policy", CSP),
            ("x-content-type-options", b"nosniff"),
            ("x-frame-options", b"DENY"),
            ("referrer-policy", b"no-referrer"),
        ],
        &body,
        keep_alive,
    );
    send(w, client, Bytes::from(bytes), keep_alive).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_paths_leave_api_and_proxy_alone() {
        for p in ["/", "/index.html", "/assets/app.js", "/keys", "/overview/x"] {
            assert!(is_ui_path(p), "{p}");
        }
        for p in [
            "/api",
            "/api/keys",
            "/v1/models",
            "/backend-api/codex/x",
            "/health",
            "/metrics",
        ] {
            assert!(!is_ui_path(p), "{p}");
        }
        // A prefix only counts as a whole segment.
        assert!(is_ui_path("/apis"));
    }

    #[test]
    fn lookup_falls_back_to_index() {
        assert_eq!(lookup("/").map(|a| a.name), Some("index.html"));
        assert_eq!(lookup("/settings").map(|a| a.name), Some("index.html"));
        assert_eq!(lookup("/assets/app.css").map(|a| a.name), Some("app.css"));
        assert!(lookup("/assets/nope.js").is_none());
        assert!(lookup("/assets/../Cargo.toml").is_none());
    }
}
