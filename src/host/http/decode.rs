//! Content decoding (gzip, deflate, br) in bounded steps: each step fills
//! at most the output slice it is given, so a decompression bomb is caught
//! by the caller's size check after a few kilobytes, never after it has
//! expanded in memory.

use super::error::HttpError;
use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Decompress, FlushDecompress, Status};

pub(crate) enum Decoder {
    Gzip(Box<Gzip>),
    /// `deflate`: zlib-wrapped as the RFC says, or raw as some servers send.
    Deflate {
        inflate: Option<Decompress>,
        done: bool,
    },
    Brotli(Box<Brotli>),
}

/// Where a gzip member stands.
pub(crate) enum Gzip {
    Header(Vec<u8>),
    Body(Decompress, flate2::Crc),
    Trailer(Vec<u8>, flate2::Crc),
    Done,
}

pub(crate) struct Brotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    done: bool,
}

fn corrupt() -> HttpError {
    HttpError::Protocol("corrupt compressed body".into())
}

impl Decoder {
    /// A decoder for a `content-encoding` value astrid understands.
    pub(crate) fn for_encoding(encoding: &str) -> Option<Decoder> {
        match encoding.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Decoder::Gzip(Box::new(Gzip::Header(Vec::new())))),
            "deflate" => Some(Decoder::Deflate {
                inflate: None,
                done: false,
            }),
            "br" => Some(Decoder::Brotli(Box::new(Brotli {
                state: BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                done: false,
            }))),
            _ => None,
        }
    }

    pub(crate) fn finished(&self) -> bool {
        match self {
            Decoder::Gzip(g) => matches!(**g, Gzip::Done),
            Decoder::Deflate { done, .. } => *done,
            Decoder::Brotli(b) => b.done,
        }
    }

    /// Decodes from `input` into `out`: (input bytes used, output bytes
    /// made). A step that can neither use input nor make output is corrupt.
    pub(crate) fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), HttpError> {
        if self.finished() {
            // Bytes after the end of the encoded data are ignored.
            return Ok((input.len(), 0));
        }
        let (used, made) = match self {
            Decoder::Gzip(g) => g.step(input, out)?,
            Decoder::Deflate { inflate, done } => {
                if input.is_empty() && inflate.is_none() {
                    return Ok((0, 0));
                }
                // zlib's first byte names method 8 in its low nibble.
                let z = inflate.get_or_insert_with(|| Decompress::new(input[0] & 0x0f == 8));
                let (used, made, end) = inflate_step(z, input, out)?;
                *done = end;
                (used, made)
            }
            Decoder::Brotli(b) => b.step(input, out)?,
        };
        if used == 0 && made == 0 && !input.is_empty() && !self.finished() {
            return Err(corrupt());
        }
        Ok((used, made))
    }
}

/// One inflate call: (used, made, stream ended).
fn inflate_step(
    z: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<(usize, usize, bool), HttpError> {
    let (in_before, out_before) = (z.total_in(), z.total_out());
    let status = z
        .decompress(input, out, FlushDecompress::None)
        .map_err(|_| corrupt())?;
    let used = (z.total_in() - in_before) as usize;
    let made = (z.total_out() - out_before) as usize;
    Ok((used, made, status == Status::StreamEnd))
}

/// Bytes of a complete gzip header at the start of `h`, once complete.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, HttpError> {
    if h.len() < 10 {
        return Ok(None);
    }
    if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
        return Err(corrupt());
    }
    let flags = h[3];
    let mut at = 10;
    if flags & 0x04 != 0 {
        if h.len() < at + 2 {
            return Ok(None);
        }
        at += 2 + usize::from(u16::from_le_bytes([h[at], h[at + 1]]));
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            match h
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    Ok((h.len() >= at).then_some(at))
}

impl Gzip {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), HttpError> {
        match self {
            Gzip::Header(header) => {
                let before = header.len();
                header.extend_from_slice(input);
                if header.len() > 64 << 10 {
                    return Err(corrupt());
                }
                match gzip_header_len(header)? {
                    None => Ok((input.len(), 0)),
                    Some(len) => {
                        *self = Gzip::Body(Decompress::new(false), flate2::Crc::new());
                        Ok((len - before, 0))
                    }
                }
            }
            Gzip::Body(z, crc) => {
                let (used, made, end) = inflate_step(z, input, out)?;
                crc.update(&out[..made]);
                if end {
                    let crc = std::mem::replace(crc, flate2::Crc::new());
                    *self = Gzip::Trailer(Vec::with_capacity(8), crc);
                }
                Ok((used, made))
            }
            Gzip::Trailer(trailer, crc) => {
                let n = (8 - trailer.len()).min(input.len());
                trailer.extend_from_slice(&input[..n]);
                if trailer.len() == 8 {
                    let word = |i: usize| {
                        u32::from_le_bytes([
                            trailer[i],
                            trailer[i + 1],
                            trailer[i + 2],
                            trailer[i + 3],
                        ])
                    };
                    if word(0) != crc.sum() || word(4) != crc.amount() {
                        return Err(corrupt());
                    }
                    *self = Gzip::Done;
                }
                Ok((n, 0))
            }
            Gzip::Done => Ok((input.len(), 0)),
        }
    }
}

impl Brotli {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), HttpError> {
        if self.done {
            return Ok((input.len(), 0));
        }
        let (mut avail_in, mut in_off) = (input.len(), 0usize);
        let (mut avail_out, mut out_off, mut total) = (out.len(), 0usize, 0usize);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            out,
            &mut total,
            &mut self.state,
        );
        match result {
            BrotliResult::ResultFailure => Err(corrupt()),
            BrotliResult::ResultSuccess => {
                self.done = true;
                Ok((input.len(), out_off))
            }
            BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => Ok((in_off, out_off)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode_all(encoding: &str, data: &[u8]) -> Result<Vec<u8>, HttpError> {
        let mut decoder = Decoder::for_encoding(encoding).unwrap();
        let mut out = Vec::new();
        // Feed in awkward pieces to cross every boundary.
        for piece in data.chunks(7) {
            let mut input = piece;
            loop {
                let mut buf = [0u8; 100];
                let (used, made) = decoder.step(input, &mut buf)?;
                out.extend_from_slice(&buf[..made]);
                input = &input[used..];
                if input.is_empty() && made < buf.len() {
                    break;
                }
            }
        }
        assert!(decoder.finished(), "{encoding} did not finish");
        Ok(out)
    }

    #[test]
    fn every_encoding_round_trips() {
        let text: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        assert_eq!(decode_all("gzip", &gz.finish().unwrap()).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(decode_all("deflate", &z.finish().unwrap()).unwrap(), text);
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        assert_eq!(decode_all("deflate", &raw.finish().unwrap()).unwrap(), text);
        // Ten X and ten Y, brotli-encoded (a reference vector of the format).
        let br = [
            0x1b, 0x13, 0x00, 0x00, 0xa4, 0xb0, 0xb2, 0xea, 0x81, 0x47, 0x02, 0x8a,
        ];
        assert_eq!(decode_all("br", &br).unwrap(), b"XXXXXXXXXXYYYYYYYYYY");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello hello hello").unwrap();
        let mut bytes = gz.finish().unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0xff; // the CRC
        assert!(decode_all("gzip", &bytes).is_err());
        assert!(Decoder::for_encoding("zstd").is_none());
    }
}
