//! The dashboard (docs/http.md, "Dashboard"): one HTML page whose style
//! and script are built into the binary (`include_str!`), so nothing is
//! fetched from elsewhere. The page holds no data: its script polls the
//! node's operator routes (`/api/v1/admin/cluster/status` and `.../ring`)
//! and draws the ring, the nodes' health, their throughput and latency
//! over time, and their storage.
//!
//! The page's Content-Security-Policy allows exactly the built-in script
//! and style (by their SHA-256) and requests to this node: an injected tag
//! would not run, and nothing leaves for another host.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{query, HttpRequest, Response};

const HTML: &str = include_str!("dashboard.html");
const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");

/// Where the style and the script go in [`HTML`].
const STYLE_SLOT: &str = "<style></style>";
const SCRIPT_SLOT: &str = "<script></script>";

/// The poll interval the page accepts, ms (its default: 1000).
const INTERVAL_MS: (u64, u64) = (100, 60_000);

/// The history the page keeps, seconds (its default: 300).
const WINDOW_S: (u64, u64) = (10, 3_600);

/// CSP source for an inline block with content `text`.
fn hash_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The page, its style and script in place.
fn page() -> String {
    HTML.replacen(STYLE_SLOT, &format!("<style>{CSS}</style>"), 1).replacen(
        SCRIPT_SLOT,
        &format!("<script>{JS}</script>"),
        1,
    )
}

/// GET /dashboard. `interval_ms` and `window_s` are read by the page's
/// script; they are checked here so that a typo is an answer, not a page
/// that silently uses its defaults.
pub(crate) fn serve(req: &HttpRequest) -> Response {
    let q = match query(&req.query, &["interval_ms", "window_s"]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    for (name, value) in q {
        let (lo, hi) = if name == "interval_ms" { INTERVAL_MS } else { WINDOW_S };
        let n = std::str::from_utf8(&value).ok().and_then(|v| v.parse::<u64>().ok());
        if !n.is_some_and(|n| (lo..=hi).contains(&n)) {
            return Response::error(400, format!("{name}: expected an integer in {lo}..={hi}"));
        }
    }
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_source(JS),
        hash_source(CSS)
    );
    Response::bytes(200, "text/html; charset=utf-8", page().into_bytes())
        .with("Content-Security-Policy", csp)
        .with("X-Content-Type-Options", "nosniff")
        .with("Cache-Control", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_whole_and_self_contained() {
        let p = page();
        // The one URL in it is a name, not a place: SVG's XML namespace.
        let stripped = p.replace("'http://www.w3.org/2000/svg'", "");
        assert!(p.contains(&format!("<style>{CSS}</style>")) && p.contains(&format!("<script>{JS}</script>")));
        assert!(!p.contains(STYLE_SLOT) && !p.contains(SCRIPT_SLOT));
        // Nothing is loaded from another host, nor from this one: every
        // asset is in the page.
        for bad in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!stripped.contains(bad), "the page refers to {bad}");
        }
        // The script reads only the routes the CSP and docs name.
        assert!(JS.contains("/api/v1/admin/cluster/status") && JS.contains("/api/v1/admin/cluster/ring"));
    }
}
