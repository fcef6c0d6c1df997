#!/usr/bin/env python3
"""Regenerates the hand-made seed corpora in fuzz/corpus/ (run from anywhere).

Manifests are copied from examples/capsules/*/Capsule.toml; everything else
is written here so each seed's intent is readable in one place.
"""
import gzip
import os
import pathlib
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


# ---- manifest ----
for toml in sorted(ROOT.glob("examples/capsules/*/Capsule.toml")):
    put("manifest", f"example-{toml.parent.name}.toml", toml.read_bytes())
put("manifest", "spec-weather.toml", """[package]
name = "weather"
version = "0.3.1"
astrid-version = ">=1.0"

[[component]]
id = "weather"
file = "weather.wasm"
hash = "blake3:0000000000000000000000000000000000000000000000000000000000000000"

[capabilities]
net = ["api.weather.example", "*", "[::1]", "b\u00fccher.example"]
net_connect = ["cache.internal.example:6379", "*.svc.example:*", "[::1]:80"]
net_bind = ["unix:*", "0.0.0.0:*"]
fs_read = ["cwd://cities", "*", "home://users/*/inbox"]
fs_write = ["tmp://"]
kv = true
host_process = ["ls"]

[publish]
"weather.v1.report.*" = "opaque"
"weather.v1.x" = { wit = "opaque", version = "1" }

[subscribe]
"tool.v1.execute.forecast" = { wit = "opaque", handler = "forecast", priority = 50 }
"weather.v1.refresh" = "opaque"
"a.*.c" = { handler = "first" }

[env.API_TOKEN]
type = "secret"
request = "Token for the forecast API"

[env.UNITS]
default = "metric"

[env.MODE]
type = "select"
enum_values = ["a", "b"]
default = "b"

[env.CITIES]
type = "array"
default = ["Oslo", "Lima"]
""")
put("manifest", "bad-line.toml", '[package]\nname = "a"\nversion = "1.0.0"\nfoo = 1\n[[component]]\nfile = "a.wasm"\n')
put("manifest", "bytes-form.toml", '[package]\nname = "a"\nversion = "1.0.0-rc.1+b"\n')

# ---- topic: pattern \n topic ----
for i, (p, t) in enumerate([
    ("a.b", "a.b"), ("a.*", "a.b.c"), ("a.*.c", "a.x.c"), ("*", "x"),
    ("*.b", "a.b.c"), ("tool.v1.execute.*", "tool.v1.execute.forecast"),
    ("a.b*", "a.bc"), ("a..b", "a..b"), (".*", ".x"), ("a.*", "a."),
    ("1.2.3.4.5.6.7.8", "1.2.3.4.5.6.7.8"), ("a.\u00e9t\u00e9.*", "a.\u00e9t\u00e9.x"),
    ("a b", "a\tb"), ("*." * 7 + "*", "a." * 8 + "a"),
]):
    put("topic", f"seed{i:02}", f"{p}\n{t}")

# ---- vfs_path: path \n grant \n tree lines ----
for i, text in enumerate([
    "cwd://a/b\ncwd://a",
    "workspace://x//./y/\ncwd://x/*",
    "/tmp/x/y\ntmp://",
    "/tmp\n*",
    "home://notes\nhome://",
    "a/%2e%2e/b\ncwd://a",
    "100%25/x\ncwd://100%25",
    "C:/Windows\ncwd://C:",
    "cwd://link/f\ncwd://\ndir/\ndir/f\nlink -> dir",
    "cwd://up/x\ncwd://\nup -> ../outside",
    "cwd://loop\ncwd://\nloop -> loop",
    "cwd://a/b/c\ncwd://\na/\na/b -> /z\nz/\nz/c -> ../a/b",
    "cwd://abs/q\ncwd://\nabs -> /d/./e/\nd/e/q",
    "cwd://f/x\ncwd://\nf",
    "cwd://chain\ncwd://\nchain -> c1\nc1 -> c2\nc2 -> c3\nc3 -> dir\ndir/",
    "cwd://m/new/deeper\ncwd://m\nm -> d\nd/",
    "x" * 4096 + "\ncwd://",
]):
    put("vfs_path", f"seed{i:02}", text)

# ---- host_url: target \n entry ----
for i, text in enumerate([
    "http://127.0.0.1/\n127.0.0.1",
    "http://2130706433/\n*",
    "http://0x7f.1/\n10.0.0.1",
    "http://0177.0.0.1/\nexample.com",
    "http://127.1/\n*.example.com:*",
    "http://[::1]/\n[::1]",
    "http://[::ffff:127.0.0.1]/\n[::ffff:7f00:1]:80",
    "http://[64:ff9b::a9fe:a9fe]/\n*:*",
    "http://[2002:c0a8:101::1]/\n*",
    "http://[2001:0:808:808::80ff:fffe]/\n*",
    "http://169.254.169.254/latest/meta-data\n169.254.169.254:80",
    "http://[fd00:ec2::254]/\n[fd00:ec2::254]:*",
    "https://API.Example.com./x\nexample.com",
    "https://example.com.evil.net/\nexample.com",
    "https://b\u00fccher.example/\nb\u00fccher.example",
    "http://xn--bcher-kva.example/\n*.example:443",
    "cache.example\ncache.example:6379",
    "CACHE.example.\ncache.example:6379",
    "::1\n[::1]:80",
    "0:0:0:0:0:0:0:1\n[::1]:*",
    "10.0.0.1\n10.0.0.1:*",
    "a.svc.example\n*.svc.example:*",
    "localhost\nunix:*",
    "http://user:pw@[::1]:8080/p?q#f\nlocalhost",
    "http://0.0.0.0/\n0.0.0.0:*",
    "http://100.64.0.1/\n*",
    "http://[fe80::1%25eth0]/\n*",
]):
    put("host_url", f"seed{i:02}", text)

# ---- http_decode ----
text = b"".join(i.to_bytes(4, "little") for i in range(3000))
gz = gzip.compress(text, mtime=0)
zl = zlib.compress(text)
raw = zlib.compressobj(9, zlib.DEFLATED, -15)
raw = raw.compress(text) + raw.flush()
# Ten X and ten Y, brotli-encoded (a reference vector of the format).
br = bytes([0x1b, 0x13, 0x00, 0x00, 0xa4, 0xb0, 0xb2, 0xea, 0x81, 0x47, 0x02, 0x8a])
gz_named = bytearray(gzip.compress(b"hello hello hello", mtime=0))
gz_named[3] |= 0x08  # FNAME
gz_named = bytes(gz_named[:10]) + b"name.txt\0" + bytes(gz_named[10:])
bomb = gzip.compress(b"\0" * (2 << 20), 9, mtime=0)  # past every 1.1 cap the seeds set
big_bomb = gzip.compress(b"\0" * (12 << 20), 9, mtime=0)  # past 1.0's 10 MiB

# Decoder mode: [even, encoding, piece-1, out-size index] + data.
for name, enc, data in [("gzip", 0, gz), ("zlib", 1, zl), ("raw", 1, raw), ("br", 2, br),
                        ("xgzip", 3, gz_named), ("bomb", 0, bomb)]:
    put("http_decode", f"decoder-{name}", bytes([0, enc, 6, 1]) + data)
    put("http_decode", f"decoder-{name}-tiny", bytes([2, enc, 0, 0]) + data)


def chunked(body, size):
    out = b""
    for at in range(0, len(body), size):
        piece = body[at:at + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\nx-trailer: yes\r\n\r\n"


def response(headers, body):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return head + body


# Response mode: [odd, flags, cap index, write size-1] + response.
responses = {
    "plain-length": response([b"content-length: 5"], b"hello"),
    "plain-close": response([b"connection: close"], b"until the end"),
    "chunked": response([b"transfer-encoding: chunked"], chunked(b"hello chunked world", 4)),
    "chunked-gzip": response([b"Transfer-Encoding: chunked", b"Content-Encoding: gzip"], chunked(gz, 100)),
    "length-deflate": response([b"content-length: %d" % len(zl), b"content-encoding: deflate"], zl),
    "raw-deflate": response([b"content-length: %d" % len(raw), b"content-encoding: deflate"], raw),
    "br": response([b"content-length: %d" % len(br), b"content-encoding: br"], br),
    "gzip-bomb": response([b"content-length: %d" % len(bomb), b"content-encoding: gzip"], bomb),
    "bad-chunk": response([b"transfer-encoding: chunked"], b"zz\r\nhello\r\n0\r\n\r\n"),
    "short": response([b"content-length: 50"], b"short"),
    "head-only": b"HTTP/1.1 204 No Content\r\n\r\n",
    "http10": b"HTTP/1.0 200 OK\r\ncontent-encoding: x-gzip\r\n\r\n" + gz,
}
for name, data in responses.items():
    put("http_decode", f"response-{name}", bytes([1, 0, 2, 255]) + data)
    put("http_decode", f"response-{name}-capped", bytes([3, 4 | 8, 3, 6]) + data)
put("http_decode", "response-gzip-bomb-legacy", bytes([1, 1, 0, 255]) + response(
    [b"content-length: %d" % len(big_bomb), b"content-encoding: gzip"], big_bomb))
put("http_decode", "response-gzip-bomb-1mib", bytes([3, 8, 5, 255]) + responses["gzip-bomb"])

# ---- c_api: op bytes (see fuzz_targets/c_api.rs) ----
for i, ops in enumerate([
    [1, 4, 4, 0], [1, 0, 5, 0],            # calls on the shared capsules
    [0, 1, 1, 0, 1, 4, 4, 0, 4, 0, 1, 0, 4, 0],  # load probe, call, unload, call again
    [6, 0, 0, 1, 1, 0, 0, 7, 0, 1, 16, 4, 0],    # a second runtime, load, free it, call
    [8, 50], [8, 3], [3, 0], [3, 5], [9, 0], [5, 0], [7, 2], [7, 3],
    [2, 7, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 2, 4, 0],
]):
    put("c_api", f"seed{i:02}", bytes(ops))
