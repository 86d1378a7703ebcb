#!/usr/bin/env bash
# Runs schemathesis (PyPI, major version 4) against a live node's HTTP port:
#   tests/scripts/schemathesis.sh SPEC URL
# Fails on any 5xx answer and on answers that contradict the document
# (status code, content type, headers, response schema). The Rust test
# tests/tests/http.rs (schemathesis_finds_no_server_errors) runs it; .ci/run
# installs schemathesis. SCHEMATHESIS_EXAMPLES (default 25) bounds the test
# cases per operation; SCHEMATHESIS_SEED reproduces a run.
#
# X-Corekv-Timeout-Ms is pinned to 0 (the node's default deadline): a
# client-chosen deadline shorter than a durable write is answered 504 by
# design, which is a timeout the client asked for, not a server error. The
# Rust tests exercise that header.
set -euo pipefail
spec="$1"
url="$2"
# Through the interpreter, so a user-site install off PATH works too.
if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -q 'version 4\.'; then
  echo "schemathesis 4 is missing: python3 -m pip install 'schemathesis>=4,<5' (.ci/run installs it)" >&2
  exit 2
fi
seed=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then
  seed=(--seed "$SCHEMATHESIS_SEED")
fi
exec python3 -m schemathesis.cli run "$spec" --url "$url" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
  --workers 2 \
  --request-timeout 30 \
  -H 'X-Corekv-Timeout-Ms: 0' \
  --no-color \
  "${seed[@]}"
