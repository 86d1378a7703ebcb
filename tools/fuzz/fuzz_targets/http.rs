//! The HTTP port's request parsers (`corekv_shard::server::fuzz_http_requests`): request
//! heads (httparse plus the node's limits), body framing (Content-Length,
//! chunked, both at once refused), chunked bodies with extensions and
//! trailers, request targets (origin and absolute form), routes and query
//! strings, for as many pipelined requests as the input holds.
//!
//! Input: the bytes a client sends on one connection. Besides "no panic":
//! every head and body the parsers accept lies within the input, and a
//! chunked body is no larger than its chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    corekv_shard::server::fuzz_http_requests(data);
});
