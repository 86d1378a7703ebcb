//! Glob matching for `SCAN MATCH` and `KEYS`, a port of Redis'
//! `stringmatchlen` (util.c) so patterns behave exactly as clients expect:
//! `*`, `?`, `[abc]`, `[^abc]`, `[a-z]` (reversed ranges allowed), `\x`
//! escapes, byte-wise and case-sensitive.

/// Recursion bound, as in Redis: protects against abusive patterns like `*a*a*a...`.
const MAX_NESTING: u32 = 1000;

/// Whether `key` matches the glob `pattern` (Redis semantics).
///
/// A lone `*` matches everything, the empty key included: KEYS and SCAN
/// short-cut that pattern before calling `stringmatchlen`, which on its own
/// does not match `*` against an empty string.
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    if pattern == b"*" {
        return true;
    }
    let mut skip_longer = false;
    matches(pattern, key, &mut skip_longer, 0)
}

fn matches(p: &[u8], s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let (mut pi, mut si) = (0usize, 0usize);
    while pi < p.len() && si < s.len() {
        match p[pi] {
            b'*' => {
                while p.get(pi + 1) == Some(&b'*') {
                    pi += 1;
                }
                if pi + 1 == p.len() {
                    return true;
                }
                while si < s.len() {
                    if matches(&p[pi + 1..], &s[si..], skip_longer, nesting + 1) {
                        return true;
                    }
                    // The rest of the pattern matched nowhere in a suffix, so
                    // giving an earlier `*` more bytes cannot help: stop (this is
                    // what keeps `*a*a*a...b` from going exponential).
                    if *skip_longer {
                        return false;
                    }
                    si += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => si += 1,
            b'[' => {
                let c = s[si];
                pi += 1;
                let negate = p.get(pi) == Some(&b'^');
                if negate {
                    pi += 1;
                }
                let mut hit = false;
                loop {
                    let left = p.len().saturating_sub(pi);
                    if p.get(pi) == Some(&b'\\') && left >= 2 {
                        pi += 1;
                        hit |= p[pi] == c;
                    } else if p.get(pi) == Some(&b']') {
                        break;
                    } else if left == 0 {
                        // Unterminated class: Redis backs up one so the outer
                        // step lands exactly on the end of the pattern.
                        pi -= 1;
                        break;
                    } else if left >= 3 && p[pi + 1] == b'-' {
                        let (a, b) = (p[pi], p[pi + 2]);
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        hit |= (lo..=hi).contains(&c);
                        pi += 2;
                    } else {
                        hit |= p[pi] == c;
                    }
                    pi += 1;
                }
                if negate {
                    hit = !hit;
                }
                if !hit {
                    return false;
                }
                si += 1;
            }
            b'\\' => {
                if p.len() - pi >= 2 {
                    pi += 1;
                }
                if p[pi] != s[si] {
                    return false;
                }
                si += 1;
            }
            other => {
                if other != s[si] {
                    return false;
                }
                si += 1;
            }
        }
        pi += 1;
        if si == s.len() {
            while p.get(pi) == Some(&b'*') {
                pi += 1;
            }
            break;
        }
    }
    pi == p.len() && si == s.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
        assert!(m("*", ""));
        assert!(
            !m("**", ""),
            "stringmatchlen quirk: only the lone-* shortcut matches an empty key"
        );
        assert!(!m("?*", ""));
        assert!(m("*", "anything"));
        assert!(m("hello", "hello"));
        assert!(!m("hello", "Hello"), "case-sensitive");
        assert!(m("h?llo", "hello"));
        assert!(m("h?llo", "hallo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "users:1"));
        assert!(m("*:1", "user:1"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("?", "x"));
        assert!(!m("?", ""));
        assert!(!m("?", "xy"));
        assert!(m("a*", "a"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn classes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[z-a]", "m"), "reversed range");
        assert!(m("[^a-c]", "d"));
        assert!(!m("[^a-c]", "b"));
        assert!(m("[\\]]", "]"), "escaped bracket in class");
        assert!(m("[a\\-z]", "-"));
        assert!(!m("[a\\-z]", "b"));
        assert!(m("[-a]", "-"));
        // Unterminated class: the class runs to the end of the pattern.
        assert!(m("[abc", "b"));
        assert!(!m("[abc", "d"));
        assert!(!m("[", "a"));
        assert!(m("[^", "a"), "empty negated class matches any byte");
        assert!(!m("[]", "a"));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("\\?", "?"));
        assert!(!m("\\?", "a"));
        assert!(m("a\\[b", "a[b"));
        assert!(m("a\\\\b", "a\\b"));
        assert!(m("a\\", "a\\"), "trailing backslash is literal");
        assert!(m("\\a", "a"));
    }

    #[test]
    fn abusive_pattern_is_fast() {
        // From Redis' own test: without skip-longer-matches this is exponential.
        let p = "a*".repeat(40) + "b";
        let s = "a".repeat(100);
        assert!(!glob_match(p.as_bytes(), s.as_bytes()));
        let p2 = "*a".repeat(50) + "*";
        assert!(glob_match(p2.as_bytes(), "a".repeat(60).as_bytes()));
    }

    #[test]
    fn binary_bytes() {
        assert!(glob_match(b"k\x00*", b"k\x00\xff"));
        assert!(glob_match(b"[\x00-\xff]", b"\x80"));
    }
}
