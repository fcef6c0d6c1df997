//! Header handling shared by requests and responses.

/// Header pairs with lowercase names (values decoded lossily).
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Headers the host sets itself, ignoring the guest's values.
pub(crate) const HOST_HEADERS: [http::HeaderName; 4] = [
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
];

/// Credentials a hop to another origin loses.
pub(crate) const CREDENTIAL_HEADERS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];
