#!/bin/sh
# Writes the seeds of fuzz_download (fuzz/corpus/download): HTTP responses
# separated by "\n--next--\n", as the target's loopback server sends them
# to store_pull, one per connection. The bodies are a 144-byte GGUF file
# (architecture llama, one F32 tensor of 4 elements), in two versions that
# differ only in the tensor's values (v1: 1.0, v2: 2.0), so that a file
# spliced from both is a valid GGUF of neither version. fuzz/seeds.sh runs
# this; it needs nothing built.
#
#   fuzz/seeds-download.sh
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=$src/fuzz/corpus/download
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# little-endian numbers under 256, and GGUF strings (the bytes are octal
# escapes in printf's format)
# shellcheck disable=SC2059
u32() { printf "\\$(printf %03o "$1")\\000\\000\\000"; }
u64() { u32 "$1" && printf '\000\000\000\000'; }
str() { u64 ${#1} && printf %s "$1"; }
# gguf HI: the file whose four floats have the high bytes HI (octal escapes)
gguf() {
    printf GGUF && u32 3 && u64 1 && u64 1
    str general.architecture && u32 8 && str llama          # one string value
    str w && u32 1 && u64 4 && u32 0 && u64 0               # w: 1 dimension of 4, F32, offset 0
    head -c 26 /dev/zero                                    # 102 bytes of header, aligned to 32
    # shellcheck disable=SC2059
    for _ in 1 2 3 4; do printf "\\000\\000$1"; done
}
gguf '\200\077' >"$tmp/v1"
gguf '\000\100' >"$tmp/v2"
[ "$(wc -c <"$tmp/v1")" -eq 144 ] || { echo "seeds-download: the GGUF is not 144 bytes" >&2; exit 1; }

crlf() { printf '%s\r\n' "$@"; }
next() { printf '\n--next--\n'; }
lm='Last-Modified: Mon, 30 Nov 2026 10:00:00 GMT'
v1='ETag: "v1"'

# status, then header lines; the blank line ends the head
resp() { crlf "HTTP/1.1 $1"; shift; crlf "$@" 'Connection: close' ''; }

{ resp '200 OK' 'Content-Length: 144' "$v1" "$lm"; cat "$tmp/v1"; } >"$out/plain-200"
{ resp '200 OK' 'Content-Length: 5'; printf hello; } >"$out/not-gguf"
# cut after 60 bytes, then the rest of the same version
{ resp '200 OK' 'Content-Length: 144' "$v1" "$lm"; head -c 60 "$tmp/v1"; next
  resp '206 Partial Content' 'Content-Range: bytes 60-143/144' 'Content-Length: 84' "$v1" "$lm"
  tail -c 84 "$tmp/v1"; } >"$out/cut-then-206"
{ resp '200 OK' 'Content-Length: 144' "$lm"; head -c 60 "$tmp/v1"; next
  resp '206 Partial Content' 'Content-Range: bytes 60-143/144' 'Content-Length: 84' "$lm"
  tail -c 84 "$tmp/v1"; } >"$out/cut-then-206-last-modified"
# a 206 of another part than asked, then the whole file
{ resp '200 OK' 'Content-Length: 144' "$v1"; head -c 60 "$tmp/v1"; next
  resp '206 Partial Content' 'Content-Range: bytes 30-143/144' 'Content-Length: 114' "$v1"
  tail -c 114 "$tmp/v1"; next
  resp '200 OK' 'Content-Length: 144' "$v1"; cat "$tmp/v1"; } >"$out/cut-then-wrong-range"
# the file changed on the origin between the two requests
{ resp '200 OK' 'Content-Length: 144' "$v1"; head -c 60 "$tmp/v1"; next
  resp '206 Partial Content' 'Content-Range: bytes 60-143/144' 'Content-Length: 84' 'ETag: "v2"'
  tail -c 84 "$tmp/v2"; next
  resp '200 OK' 'Content-Length: 144' 'ETag: "v2"'; cat "$tmp/v2"; } >"$out/cut-then-changed-206"
# the range ignored (or If-Range not matched): the whole file again, which
# libcurl refuses (a 200 without Content-Range to a Range request); the
# next request starts over
{ resp '200 OK' 'Content-Length: 144' "$v1"; head -c 60 "$tmp/v1"; next
  resp '200 OK' 'Content-Length: 144' 'ETag: "v2"'; cat "$tmp/v2"; next
  resp '200 OK' 'Content-Length: 144' 'ETag: "v2"'; cat "$tmp/v2"; } >"$out/cut-then-200"
{ resp '200 OK' 'Content-Length: 144' "$v1"; head -c 60 "$tmp/v1"; next
  resp '416 Range Not Satisfiable' 'Content-Range: bytes */144' 'Content-Length: 0'; next
  resp '200 OK' 'Content-Length: 144' "$v1"; cat "$tmp/v1"; } >"$out/cut-then-416"
# no strong validator: no resume, the next request starts over
{ resp '200 OK' 'Content-Length: 144' 'ETag: W/"v1"'; head -c 60 "$tmp/v1"; next
  resp '200 OK' 'Content-Length: 144' 'ETag: W/"v1"'; cat "$tmp/v1"; } >"$out/cut-weak-etag"
{ resp '200 OK' 'Content-Length: 144'; head -c 100 "$tmp/v1"; next
  resp '200 OK' 'Content-Length: 144'; head -c 100 "$tmp/v1"; next
  resp '200 OK' 'Content-Length: 144'; head -c 100 "$tmp/v1"; } >"$out/always-cut"
{ resp '500 Internal Server Error' 'Content-Length: 0'; next
  resp '200 OK' 'Content-Length: 144' "$v1"; cat "$tmp/v1"; } >"$out/500-then-200"
# redirects: a path on the same server, another host (the target's proxy
# brings it to the same server)
{ resp '302 Found' 'Location: /blobs/model.gguf' 'Content-Length: 0'; next
  resp '200 OK' 'Content-Length: 144' "$v1"; cat "$tmp/v1"; } >"$out/redirect"
{ resp '301 Moved Permanently' 'Location: http://mirror.example/m/model.gguf' 'Content-Length: 0'; next
  resp '200 OK' 'Content-Length: 144' "$v1"; cat "$tmp/v1"; } >"$out/redirect-other-host"
# chunked: 100 bytes, 44 bytes, the last chunk
{ resp '200 OK' 'Transfer-Encoding: chunked' "$v1"; crlf 64; head -c 100 "$tmp/v1"; crlf '' 2c
  tail -c 44 "$tmp/v1"; crlf '' 0 ''; } >"$out/chunked"
# a chunked body cut short, resumed
{ resp '200 OK' 'Transfer-Encoding: chunked' "$v1"; crlf 64; head -c 100 "$tmp/v1"; next
  resp '206 Partial Content' 'Content-Range: bytes 100-143/144' 'Content-Length: 44' "$v1"
  tail -c 44 "$tmp/v1"; } >"$out/chunked-cut-then-206"
ls -l "$out"
