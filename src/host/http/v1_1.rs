//! `astrid:http@1.1.0`: options, response metadata, uploads and trailers;
//! redirects default to `error`.

use super::error::HttpError;
use super::options::{GuestOptions, Options, Redirect};
use super::view::HttpView;
use crate::host::audit::Audited;
use crate::host::io::{
    push_input_stream, push_output_stream, push_pollable, InputStream, OutputStream, Pollable,
};
use wasmtime::component::Resource;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:http11; world imports { import astrid:http/host@1.1.0; }",
        path: ["wit/astrid-io@1.0.0", "wit/astrid-http@1.1.0"],
        world: "imports",
        with: {
            "astrid:io/poll": crate::host::io::bindings::astrid::io::poll,
            "astrid:io/streams": crate::host::io::bindings::astrid::io::streams,
            "astrid:io/error": crate::host::io::bindings::astrid::io::error,
            "astrid:http/host.http-stream": super::HttpStream11,
            "astrid:http/host.http-upload": super::HttpUpload11,
        },
    });
}

use bindings::astrid::http::host::{
    self, ErrorCode, HostHttpStream, HostHttpUpload, HttpMethod, HttpRequestData, HttpResponseData,
    KeyValuePair, RedirectPolicy, RequestOptions, ResponseMeta,
};

fn error_code(e: HttpError) -> ErrorCode {
    match e {
        HttpError::Denied(_) => ErrorCode::CapabilityDenied,
        HttpError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        HttpError::DnsError => ErrorCode::DnsError,
        HttpError::AirlockRejected => ErrorCode::AirlockRejected,
        HttpError::TlsError => ErrorCode::TlsError,
        HttpError::Timeout => ErrorCode::Timeout,
        HttpError::ConnectionError => ErrorCode::ConnectionError,
        HttpError::BodyTooLarge => ErrorCode::BodyTooLarge,
        HttpError::Closed => ErrorCode::Closed,
        HttpError::Quota => ErrorCode::Quota,
        HttpError::RedirectBlocked => ErrorCode::RedirectBlocked,
        HttpError::TooManyRedirects => ErrorCode::TooManyRedirects,
        HttpError::IntegrityMismatch => ErrorCode::IntegrityMismatch,
        HttpError::SchemeDenied => ErrorCode::SchemeDenied,
        HttpError::DecompressionBomb => ErrorCode::DecompressionBomb,
        HttpError::Protocol(text) => ErrorCode::Protocol(text),
    }
}

fn guest_options(options: RequestOptions) -> GuestOptions {
    let timeouts = options
        .timeouts
        .unwrap_or(bindings::astrid::http::host::TimeoutConfig {
            connect_ms: None,
            first_byte_ms: None,
            between_bytes_ms: None,
            total_ms: None,
        });
    GuestOptions {
        connect_ms: timeouts.connect_ms,
        first_byte_ms: timeouts.first_byte_ms,
        between_bytes_ms: timeouts.between_bytes_ms,
        total_ms: timeouts.total_ms,
        redirect: options.redirect.map(|policy| match policy {
            RedirectPolicy::Follow => Redirect::Follow,
            RedirectPolicy::Error => Redirect::Error,
            RedirectPolicy::Manual => Redirect::Manual,
        }),
        max_redirects: options.max_redirects,
        max_response_bytes: options.max_response_bytes,
        max_decompressed_bytes: options.max_decompressed_bytes,
        auto_decompress: options.auto_decompress,
        https_only: options.https_only,
        integrity: options.integrity,
    }
}

http_stream_common!(HttpStream11, "http.http-stream", trailers: yes);

/// The guest's `http-upload`.
pub struct HttpUpload11(std::sync::Arc<super::resources::Upload>);

impl HttpView<'_> {
    fn request_opts(
        &mut self,
        request: HttpRequestData,
        options: GuestOptions,
    ) -> Result<HttpResponseData, ErrorCode> {
        let opts = Options::current(options, true).map_err(error_code)?;
        let response = self
            .http_buffered("http.http-request", to_request(request), opts)
            .map_err(error_code)?;
        Ok(HttpResponseData {
            status: response.status,
            headers: pairs(response.headers),
            body: response.body,
            meta: ResponseMeta {
                final_url: response.meta.final_url,
                redirect_count: response.meta.redirect_count,
                elapsed_ms: response.meta.elapsed_ms,
                wire_bytes: response.meta.wire_bytes,
            },
        })
    }

    fn stream_opts(
        &mut self,
        request: HttpRequestData,
        options: GuestOptions,
    ) -> Result<Resource<HttpStream11>, ErrorCode> {
        let opts = Options::current(options, false).map_err(error_code)?;
        let stream = self
            .http_stream("http.http-stream-start", to_request(request), opts)
            .map_err(error_code)?;
        self.table
            .push(HttpStream11(stream))
            .map_err(|_| ErrorCode::Quota)
    }
}

impl host::Host for HttpView<'_> {
    fn http_request(&mut self, request: HttpRequestData) -> Result<HttpResponseData, ErrorCode> {
        self.request_opts(request, GuestOptions::default())
    }

    fn http_request_opts(
        &mut self,
        request: HttpRequestData,
        options: RequestOptions,
    ) -> Result<HttpResponseData, ErrorCode> {
        self.request_opts(request, guest_options(options))
    }

    fn http_stream_start(
        &mut self,
        request: HttpRequestData,
    ) -> Result<Resource<HttpStream11>, ErrorCode> {
        self.stream_opts(request, GuestOptions::default())
    }

    fn http_stream_start_opts(
        &mut self,
        request: HttpRequestData,
        options: RequestOptions,
    ) -> Result<Resource<HttpStream11>, ErrorCode> {
        self.stream_opts(request, guest_options(options))
    }

    fn http_upload_start(
        &mut self,
        request: HttpRequestData,
        options: RequestOptions,
    ) -> Result<Resource<HttpUpload11>, ErrorCode> {
        let opts = Options::current(guest_options(options), false).map_err(error_code)?;
        let upload = self
            .http_upload("http.http-upload-start", to_request(request), opts)
            .map_err(error_code)?;
        self.table
            .push(HttpUpload11(upload))
            .map_err(|_| ErrorCode::Quota)
    }
}

impl HostHttpUpload for HttpView<'_> {
    fn body_sink(&mut self, this: Resource<HttpUpload11>) -> Resource<OutputStream> {
        let sink = match self.table.get(&this) {
            Ok(upload) => upload.0.take_sink(),
            Err(_) => std::sync::Arc::new(crate::host::io::ClosedStream),
        };
        self.audit_infallible("http.http-upload.body-sink");
        push_output_stream(self.table, sink)
    }

    fn subscribe_writable(&mut self, this: Resource<HttpUpload11>) -> Resource<Pollable> {
        let source = match self.table.get(&this) {
            Ok(upload) => upload.0.writable(),
            Err(_) => std::sync::Arc::new(crate::host::io::AlwaysReady),
        };
        self.audit_infallible("http.http-upload.subscribe-writable");
        push_pollable(self.table, source)
    }

    fn finish(
        &mut self,
        this: Resource<HttpUpload11>,
    ) -> Result<Resource<HttpStream11>, ErrorCode> {
        let upload = self
            .table
            .get(&this)
            .map(|u| u.0.clone())
            .map_err(|_| ErrorCode::Closed)?;
        let stream = self.upload_finish(&upload).map_err(error_code)?;
        self.table
            .push(HttpStream11(stream))
            .map_err(|_| ErrorCode::Quota)
    }

    fn drop(&mut self, this: Resource<HttpUpload11>) -> wasmtime::Result<()> {
        let upload = self.table.delete(this)?;
        crate::host::view::CallScoped::close(&*upload.0);
        Ok(())
    }
}
