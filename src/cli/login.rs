//! `codex-lb accounts login`: sign in to ChatGPT and add the account to the pool. Runs the sign-in
//! here when no gateway holds the data dir, else asks the running gateway to (its admin API), so
//! the account lands in the gateway without a restart.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{call, Backend};
use crate::accounts::{registry, Tokens};
use crate::config::{LoginArgs, UpstreamUrl};
use crate::login::issuer::Issuer;
use crate::login::{FlowView, LoginError, LoginFlows, Mode, Status, StoreAccount};

pub struct LoginOptions {
    pub device: bool,
    pub manual: bool,
    pub no_browser: bool,
    pub login: LoginArgs,
    pub ca_file: Option<PathBuf>,
}

pub fn run(backend: Backend, opts: LoginOptions) -> Result<(), String> {
    let view = match backend {
        Backend::Direct(store) => run_here(store, &opts)?,
        Backend::Gateway(base) => run_through_gateway(&base, &opts)?,
    };
    report(&view)
}

fn report(view: &FlowView) -> Result<(), String> {
    match &view.status {
        Status::Complete { account, created } => {
            println!(
                "{} {} ({}, plan {})",
                if *created {
                    "signed in and added"
                } else {
                    "signed in again; updated"
                },
                account["id"].as_str().unwrap_or("?"),
                account["email"].as_str().unwrap_or("no email"),
                account["plan"].as_str().unwrap_or("unknown"),
            );
            Ok(())
        }
        Status::Failed { error } => Err(format!("sign-in failed: {error}")),
        Status::Expired => Err("the sign-in expired before it was finished; run it again".into()),
        Status::Cancelled => Err("the sign-in was cancelled".into()),
        Status::Pending | Status::Exchanging => {
            Err("the sign-in did not finish in time; run it again".into())
        }
    }
}

/// Runs the whole sign-in in this process and writes the account to the store directly.
fn run_here(store: crate::store::Store, opts: &LoginOptions) -> Result<FlowView, String> {
    let url = UpstreamUrl::parse(&opts.login.auth_base_url).map_err(|e| e.to_string())?;
    let tls = if url.tls {
        Some(
            crate::upstream::tls::client_config(opts.ca_file.as_deref())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let egress = match &opts.login.upstream_proxy {
        Some(p) => Some(std::sync::Arc::new(
            crate::upstream::egress::Egress::resolve(p)?,
        )),
        None => None,
    };
    let issuer = Issuer {
        url,
        base: opts.login.auth_base_url.trim_end_matches('/').to_string(),
        tls,
        egress,
    };
    let save: StoreAccount = Box::new(move |tokens: &Tokens| {
        let body = crate::accounts::auth_file::to_auth_json(
            tokens,
            None,
            Some(crate::accounts::now_unix()),
        );
        let (record, _, created) =
            registry::import(&store, body.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Ok((serde_json::to_value(record).unwrap_or_default(), created))
    });
    let flows = Arc::new(LoginFlows::new(
        issuer,
        opts.login.oauth_callback_port,
        opts.login.login_timeout,
        save,
    ));
    let limit = opts.login.login_timeout + Duration::from_secs(5);
    if opts.device {
        let view = flows.start_device().map_err(|e| e.to_string())?;
        show_device(&view);
        return flows
            .wait(&view.id, Duration::from_secs(3600), |_| {})
            .ok_or_else(|| "the sign-in vanished".to_string());
    }
    let view = match flows.start_browser(!opts.manual) {
        Ok(v) => v,
        Err(e @ LoginError::PortBusy { .. }) => {
            eprintln!("{e}\nfalling back to pasting the callback URL by hand");
            flows.start_browser(false).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    show_browser(&view, opts.no_browser);
    if !view.listening {
        let pasted = read_callback_url()?;
        return flows
            .complete_url(&view.id, &pasted)
            .map_err(|e| e.to_string());
    }
    flows
        .wait(&view.id, limit, |_| {})
        .ok_or_else(|| "the sign-in vanished".to_string())
}

/// Asks the running gateway to run the sign-in (it listens for the callback, or takes the pasted
/// URL), and follows it until it ends.
fn run_through_gateway(base: &str, opts: &LoginOptions) -> Result<FlowView, String> {
    let mode = if opts.device { "device" } else { "browser" };
    let start = json!({ "mode": mode, "listen": !opts.manual }).to_string();
    let v = match call(
        "POST",
        &format!("{base}/api/accounts/login"),
        Some(start.as_bytes()),
    ) {
        Ok(v) => v,
        Err(e) if !opts.device && !opts.manual && e.contains("busy") => {
            eprintln!("{e}\nfalling back to pasting the callback URL by hand");
            let start = json!({ "mode": "browser", "listen": false }).to_string();
            call(
                "POST",
                &format!("{base}/api/accounts/login"),
                Some(start.as_bytes()),
            )?
        }
        Err(e) => return Err(e),
    };
    let view: FlowView = parse_view(v)?;
    let status_url = format!("{base}/api/accounts/login/{}", view.id);
    match view.mode {
        Mode::Device => show_device(&view),
        Mode::Browser => show_browser(&view, opts.no_browser),
    }
    if view.mode == Mode::Browser && !view.listening {
        let pasted = read_callback_url()?;
        let body = json!({ "callback_url": pasted }).to_string();
        return parse_view(call(
            "POST",
            &format!("{status_url}/complete"),
            Some(body.as_bytes()),
        )?);
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let v = parse_view(call("GET", &status_url, None)?)?;
        if v.status.is_final() {
            return Ok(v);
        }
    }
}

fn parse_view(v: Value) -> Result<FlowView, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("unexpected sign-in reply ({e}): {v}"))
}

fn show_browser(view: &FlowView, no_browser: bool) {
    let url = view.authorize_url.as_deref().unwrap_or_default();
    println!("Sign in to ChatGPT in a browser:\n\n  {url}\n");
    if !no_browser && open_browser(url) {
        println!("(a browser window was opened)");
    }
    if view.listening {
        println!(
            "Waiting for the browser to come back to {} ...",
            view.redirect_uri.as_deref().unwrap_or("the callback")
        );
    }
}

fn show_device(view: &FlowView) {
    let mins = view.expires_at.saturating_sub(crate::accounts::now_unix()) / 60;
    println!(
        "On any device, open\n\n  {}\n\nand enter the code  {}  (valid for about {mins} min).\nWaiting for approval ...",
        view.verification_url.as_deref().unwrap_or_default(),
        view.user_code.as_deref().unwrap_or_default(),
    );
}

fn read_callback_url() -> Result<String, String> {
    print!(
        "After signing in, the browser ends on a page that may not load (localhost:…/auth/callback?code=…).\nPaste that page's full URL here: "
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the URL: {e}"))?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err("no URL given".into());
    }
    Ok(line)
}

/// Best effort: a desktop session has one of these; a server has none, and that is fine.
fn open_browser(url: &str) -> bool {
    if !std::io::stdout().is_terminal() {
        return false;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}
