//! What shapes one HTTP call: the host's limits, the guest's options
//! (which may only lower them), redirects and integrity.

use super::body::PumpRules;
use super::error::HttpError;
use std::time::{Duration, Instant};

/// Concurrent `http-stream` / `http-upload` resources per capsule.
pub const MAX_STREAMS: usize = 4;
/// Buffered response bodies (and any decoded body kept whole).
pub const MAX_BUFFERED_BODY: u64 = 10 << 20;
/// Most redirects `follow` takes.
pub const MAX_REDIRECTS: u32 = 10;
pub(crate) const BUFFERED_TOTAL: Duration = Duration::from_secs(30);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(120);
/// Request bodies follow the payload ceiling (host ABI §1).
pub(crate) const MAX_REQUEST_BODY: usize = 10 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    Follow,
    Error,
    Manual,
}

/// A request as both versions describe it.
pub(crate) struct Request {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The guest's 1.1 options, before defaults and clamps.
#[derive(Default)]
pub(crate) struct GuestOptions {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub between_bytes_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub redirect: Option<Redirect>,
    pub max_redirects: Option<u32>,
    pub max_response_bytes: Option<u64>,
    pub max_decompressed_bytes: Option<u64>,
    pub auto_decompress: Option<bool>,
    pub https_only: Option<bool>,
    pub integrity: Option<String>,
}

/// Settings of one call after defaults and clamps (guest values may only
/// lower host maxima).
pub(crate) struct Options {
    pub(crate) legacy: bool,
    pub(crate) redirect: Redirect,
    pub(crate) max_redirects: u32,
    pub(crate) connect: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) between_bytes: Duration,
    pub(crate) total: Option<Duration>,
    pub(crate) max_response: Option<u64>,
    pub(crate) max_decompressed: Option<u64>,
    pub(crate) auto_decompress: bool,
    pub(crate) https_only: bool,
    pub(crate) integrity: Option<[u8; 32]>,
}

pub(crate) fn lower(host: Duration, guest: Option<u64>) -> Duration {
    guest.map_or(host, |ms| host.min(Duration::from_millis(ms)))
}

impl Options {
    /// 1.0: redirects followed (10 at most), bodies decoded.
    pub(crate) fn legacy(buffered: bool) -> Options {
        Options {
            legacy: true,
            redirect: Redirect::Follow,
            max_redirects: MAX_REDIRECTS,
            connect: CONNECT_TIMEOUT,
            first_byte: FIRST_BYTE_TIMEOUT,
            between_bytes: BETWEEN_BYTES_TIMEOUT,
            total: buffered.then_some(BUFFERED_TOTAL),
            max_response: buffered.then_some(MAX_BUFFERED_BODY),
            max_decompressed: None,
            auto_decompress: true,
            https_only: false,
            integrity: None,
        }
    }

    /// 1.1 defaults under the guest's options.
    pub(crate) fn current(guest: GuestOptions, buffered: bool) -> Result<Options, HttpError> {
        let integrity = match &guest.integrity {
            None => None,
            Some(text) => Some(
                parse_integrity(text).ok_or(HttpError::InvalidRequest("malformed integrity"))?,
            ),
        };
        let total = if buffered {
            Some(lower(BUFFERED_TOTAL, guest.total_ms))
        } else {
            guest.total_ms.map(Duration::from_millis)
        };
        let max_response = match (buffered, guest.max_response_bytes) {
            (true, cap) => Some(cap.unwrap_or(MAX_BUFFERED_BODY).min(MAX_BUFFERED_BODY)),
            (false, cap) => cap,
        };
        Ok(Options {
            legacy: false,
            redirect: guest.redirect.unwrap_or(Redirect::Error),
            max_redirects: guest
                .max_redirects
                .unwrap_or(MAX_REDIRECTS)
                .min(MAX_REDIRECTS),
            connect: lower(CONNECT_TIMEOUT, guest.connect_ms),
            first_byte: lower(FIRST_BYTE_TIMEOUT, guest.first_byte_ms),
            between_bytes: lower(BETWEEN_BYTES_TIMEOUT, guest.between_bytes_ms),
            total,
            max_response,
            max_decompressed: guest.max_decompressed_bytes.or(max_response),
            auto_decompress: guest.auto_decompress.unwrap_or(true),
            https_only: guest.https_only.unwrap_or(false),
            integrity,
        })
    }

    /// What the body pump enforces for a response with `encoding`.
    pub(crate) fn pump_rules(
        &self,
        encoding: Option<&str>,
        buffered: bool,
        deadline: Option<Instant>,
    ) -> PumpRules {
        let decoder = encoding
            .filter(|_| self.auto_decompress)
            .and_then(super::decode::Decoder::for_encoding);
        let max_decoded = if self.legacy {
            // 1.0: the decoded size counts against the body cap.
            self.max_response.map(|cap| (cap, HttpError::BodyTooLarge))
        } else {
            let cap = match (self.max_decompressed, buffered) {
                (Some(cap), true) => Some(cap.min(MAX_BUFFERED_BODY)),
                (cap, _) => cap,
            };
            let error = if decoder.is_some() {
                HttpError::DecompressionBomb
            } else {
                HttpError::BodyTooLarge
            };
            cap.map(|cap| (cap, error))
        };
        PumpRules {
            decoder,
            max_wire: self.max_response,
            max_decoded,
            integrity: self.integrity,
            between_bytes: self.between_bytes,
            deadline,
        }
    }
}

/// `sha256-<base64>` (standard alphabet, padding optional).
pub(crate) fn parse_integrity(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let encoded = text.strip_prefix("sha256-")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_strings() {
        let digest = [7u8; 32];
        use base64::Engine;
        let text = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(parse_integrity(&text), Some(digest));
        assert_eq!(parse_integrity(text.trim_end_matches('=')), Some(digest));
        for bad in ["sha256-", "sha512-abc", "sha256-!!!", "sha256-AAAA"] {
            assert_eq!(parse_integrity(bad), None, "{bad}");
        }
    }

    #[test]
    fn guest_options_only_lower_host_maxima() {
        let opts = Options::current(
            GuestOptions {
                total_ms: Some(3_600_000),
                connect_ms: Some(5),
                max_redirects: Some(99),
                max_response_bytes: Some(u64::MAX),
                ..GuestOptions::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(opts.total, Some(BUFFERED_TOTAL));
        assert_eq!(opts.connect, Duration::from_millis(5));
        assert_eq!(opts.max_redirects, MAX_REDIRECTS);
        assert_eq!(opts.max_response, Some(MAX_BUFFERED_BODY));
        assert_eq!(opts.redirect, Redirect::Error, "1.1 defaults to error");
        assert_eq!(Options::legacy(true).redirect, Redirect::Follow);
    }
}
