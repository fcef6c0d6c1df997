//! `astrid:http@1.0.0`: redirects followed, bodies decoded, and the 1.1-only
//! failures spelled with the 1.0 cases.

use super::error::HttpError;
use super::options::Options;
use super::view::HttpView;
use crate::host::audit::Audited;
use crate::host::io::{push_input_stream, push_pollable};
use crate::host::io::{InputStream, Pollable};
use wasmtime::component::Resource;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:http10; world imports { import astrid:http/host@1.0.0; }",
        path: ["wit/astrid-io@1.0.0", "wit/astrid-http@1.0.0"],
        world: "imports",
        with: {
            "astrid:io/poll": crate::host::io::bindings::astrid::io::poll,
            "astrid:io/streams": crate::host::io::bindings::astrid::io::streams,
            "astrid:io/error": crate::host::io::bindings::astrid::io::error,
            "astrid:http/host.http-stream": super::HttpStream10,
        },
    });
}

use bindings::astrid::http::host::{
    self, ErrorCode, HostHttpStream, HttpMethod, HttpRequestData, HttpResponseData, KeyValuePair,
};

fn error_code(e: HttpError) -> ErrorCode {
    match e {
        HttpError::Denied(_) => ErrorCode::CapabilityDenied,
        HttpError::InvalidRequest(_) | HttpError::SchemeDenied => ErrorCode::InvalidRequest,
        HttpError::DnsError => ErrorCode::DnsError,
        HttpError::AirlockRejected => ErrorCode::AirlockRejected,
        HttpError::TlsError => ErrorCode::TlsError,
        HttpError::Timeout => ErrorCode::Timeout,
        HttpError::ConnectionError => ErrorCode::ConnectionError,
        HttpError::BodyTooLarge | HttpError::DecompressionBomb => ErrorCode::BodyTooLarge,
        HttpError::Closed => ErrorCode::Closed,
        HttpError::Quota => ErrorCode::Quota,
        HttpError::TooManyRedirects => ErrorCode::Protocol("too many redirects".into()),
        HttpError::RedirectBlocked => ErrorCode::Protocol("redirect cannot be followed".into()),
        HttpError::IntegrityMismatch => ErrorCode::Unknown("integrity mismatch".into()),
        HttpError::Protocol(text) => ErrorCode::Protocol(text),
    }
}

http_stream_common!(HttpStream10, "http.http-stream");

impl host::Host for HttpView<'_> {
    fn http_request(&mut self, request: HttpRequestData) -> Result<HttpResponseData, ErrorCode> {
        let response = self
            .http_buffered(
                "http.http-request",
                to_request(request),
                Options::legacy(true),
            )
            .map_err(error_code)?;
        Ok(HttpResponseData {
            status: response.status,
            headers: pairs(response.headers),
            body: response.body,
        })
    }

    fn http_stream_start(
        &mut self,
        request: HttpRequestData,
    ) -> Result<Resource<HttpStream10>, ErrorCode> {
        let stream = self
            .http_stream(
                "http.http-stream-start",
                to_request(request),
                Options::legacy(false),
            )
            .map_err(error_code)?;
        self.table
            .push(HttpStream10(stream))
            .map_err(|_| ErrorCode::Quota)
    }
}
