//! The code both versions' bindings expand: request and header conversions
//! and the `http-stream` methods.

/// What both versions' bindings share: the request and header
/// conversions and the `http-stream` methods, expanded once per version so
/// neither copies the other.
macro_rules! http_stream_common {
    ($stream:ident, $prefix:literal $(, trailers: $trailers:tt)?) => {
        fn method_name(method: &HttpMethod) -> String {
            match method {
                HttpMethod::Get => "GET".into(),
                HttpMethod::Head => "HEAD".into(),
                HttpMethod::Post => "POST".into(),
                HttpMethod::Put => "PUT".into(),
                HttpMethod::Delete => "DELETE".into(),
                HttpMethod::Connect => "CONNECT".into(),
                HttpMethod::Options => "OPTIONS".into(),
                HttpMethod::Trace => "TRACE".into(),
                HttpMethod::Patch => "PATCH".into(),
                HttpMethod::Other(name) => name.clone(),
            }
        }

        fn to_request(request: HttpRequestData) -> crate::host::http::options::Request {
            crate::host::http::options::Request {
                method: method_name(&request.method),
                url: request.url,
                headers: request.headers.into_iter().map(|kv| (kv.key, kv.value)).collect(),
                body: request.body,
            }
        }

        fn pairs(list: Vec<(String, String)>) -> Vec<KeyValuePair> {
            list.into_iter().map(|(key, value)| KeyValuePair { key, value }).collect()
        }

        /// The guest's `http-stream`.
        pub struct $stream(pub(crate) std::sync::Arc<crate::host::http::resources::Stream>);

        fn stream_of(state: &HttpView<'_>, this: &Resource<$stream>) -> Option<std::sync::Arc<crate::host::http::resources::Stream>> {
            state.table.get(this).ok().map(|s| s.0.clone())
        }

        impl HostHttpStream for HttpView<'_> {
            fn status(&mut self, this: Resource<$stream>) -> u16 {
                let stream = stream_of(self, &this);
                let result: Result<u16, std::convert::Infallible> =
                    self.audited(concat!($prefix, ".status"), None, 0, |_| Ok(stream.map_or(0, |s| s.status())));
                result.unwrap_or_else(|never| match never {})
            }

            fn headers(&mut self, this: Resource<$stream>) -> Vec<KeyValuePair> {
                let stream = stream_of(self, &this);
                let result: Result<_, std::convert::Infallible> =
                    self.audited(concat!($prefix, ".headers"), None, 0, |_| Ok(stream.map_or_else(Vec::new, |s| s.headers())));
                pairs(result.unwrap_or_else(|never| match never {}))
            }

            fn read_chunk(&mut self, this: Resource<$stream>) -> Result<Vec<u8>, ErrorCode> {
                let stream = stream_of(self, &this);
                self.stream_read_chunk(concat!($prefix, ".read-chunk"), stream).map_err(error_code)
            }

            fn close(&mut self, this: Resource<$stream>) -> Result<(), ErrorCode> {
                let stream = stream_of(self, &this);
                self.audited(concat!($prefix, ".close"), None, 0, |_| {
                    stream.ok_or(crate::host::http::error::HttpError::Closed)?.close();
                    Ok(())
                })
                .map_err(error_code)
            }

            fn subscribe_readable(&mut self, this: Resource<$stream>) -> Resource<Pollable> {
                let source = match stream_of(self, &this) {
                    Some(stream) => stream.readable(),
                    None => std::sync::Arc::new(crate::host::io::AlwaysReady),
                };
                self.audit_infallible(concat!($prefix, ".subscribe-readable"));
                push_pollable(self.table, source)
            }

            fn body_stream(&mut self, this: Resource<$stream>) -> Resource<InputStream> {
                let source = match stream_of(self, &this) {
                    Some(stream) => stream.take_body_source(),
                    None => std::sync::Arc::new(crate::host::io::ClosedStream),
                };
                self.audit_infallible(concat!($prefix, ".body-stream"));
                push_input_stream(self.table, source)
            }

            $(
            fn trailers(&mut self, this: Resource<$stream>) -> Result<Option<Vec<KeyValuePair>>, ErrorCode> {
                let _ = stringify!($trailers);
                let stream = stream_of(self, &this);
                self.audited(concat!($prefix, ".trailers"), None, 0, |state| {
                    if state.call.token.is_cancelled() {
                        return Err(crate::host::http::error::HttpError::Closed);
                    }
                    Ok(stream.ok_or(crate::host::http::error::HttpError::Closed)?.trailers().map(pairs))
                })
                .map_err(error_code)
            }
            )?

            fn drop(&mut self, this: Resource<$stream>) -> wasmtime::Result<()> {
                self.table.delete(this)?.0.close();
                Ok(())
            }
        }
    };
}
