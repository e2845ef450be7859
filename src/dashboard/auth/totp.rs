//! The dashboard's second factor: RFC 6238 codes (SHA-1, 6 digits, 30 s, one step of skew, the
//! settings every authenticator app supports) through `totp-rs`, and the enrolment QR code as SVG
//! through `qrcode`. A code's step is remembered so it cannot be replayed.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use qrcode::render::svg;
use qrcode::QrCode;
use totp_rs::{Algorithm, Builder, Secret, Totp};

const ISSUER: &str = "codex-lb";
const ACCOUNT: &str = "dashboard-admin";

/// A fresh 160-bit secret (RFC 4226's recommended length).
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    OsRng.fill_bytes(&mut s);
    s
}

fn totp(secret: &[u8]) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_account_name(ACCOUNT)
        .with_issuer(Some(ISSUER))
        .build()
        .ok()
}

/// The step a code matches at `now`, if it matches; replay checks are the caller's.
pub fn check(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret)?.check(&code, now)
}

/// What an authenticator app needs: the base32 secret, the `otpauth://` URI and its QR code.
#[derive(Debug)]
pub struct Enrolment {
    pub secret_base32: String,
    pub uri: String,
    pub qr_svg: String,
}

pub fn enrolment(secret: &[u8]) -> Option<Enrolment> {
    let t = totp(secret)?;
    let uri = t.to_url().ok()?;
    let qr = QrCode::new(uri.as_bytes()).ok()?;
    let qr_svg = qr
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Some(Enrolment {
        secret_base32: Secret::from(secret.to_vec()).to_base32(),
        uri,
        qr_svg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: the ASCII secret "12345678901234567890" at T = 59 gives 94287082;
        // six digits keep the last six.
        let secret = b"12345678901234567890";
        assert_eq!(check(secret, "287082", 59), Some(1));
        assert_eq!(check(secret, "287 082", 59), Some(1));
        assert_eq!(check(secret, "287083", 59), None);
        assert_eq!(check(secret, "28708", 59), None);
        assert_eq!(check(secret, "abcdef", 59), None);
        // One step of skew either way, not two.
        assert_eq!(check(secret, "287082", 59 + 30), Some(1));
        assert_eq!(check(secret, "287082", 59 + 61), None);
    }

    #[test]
    fn enrolment_has_uri_and_svg() {
        let e = enrolment(&new_secret()).expect("enrolment");
        assert!(e.uri.starts_with("otpauth://totp/"), "{}", e.uri);
        assert!(
            e.uri.contains(&format!("secret={}", e.secret_base32)),
            "{}",
            e.uri
        );
        assert!(e.qr_svg.contains("<svg"), "{}", &e.qr_svg[..100]);
        assert_eq!(e.secret_base32.len(), 32);
    }
}
