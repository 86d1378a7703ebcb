//! Key -> token.
//!
//! The token is xxh3_64 of the key's hash part. The hash part follows the Redis
//! Cluster hash-tag rules exactly, so clients that already group keys with
//! `{tag}` get the same co-location here: keys sharing a tag share a token, hence
//! a vnode, a replica set and a core, and a prefix listing inside one tag is a
//! local range scan.

/// A position on the ring (the whole `u64` space, wrapping).
pub type Token = u64;

/// The part of `key` that is hashed.
///
/// The whole key, unless it contains a `{` followed later by a `}` with at least
/// one byte between them; then the bytes between the first `{` and the first `}`
/// after it. `foo{}{bar}` hashes whole (the first tag is empty) and
/// `foo{{bar}}` hashes `{bar`, as in Redis Cluster.
pub fn hash_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        // An empty tag does not count: Redis hashes the whole key then, and
        // does not look for a later tag.
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The token of `key`: xxh3_64 of its [`hash_part`].
pub fn token_of(key: &[u8]) -> Token {
    xxhash_rust::xxh3::xxh3_64(hash_part(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_tag_cases() {
        assert_eq!(token_of(b"{user1000}.following"), token_of(b"{user1000}.followers"));
        assert_eq!(hash_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}"), b"{bar");
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_part(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_part(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_part(b"}{x}"), b"x");
        assert_eq!(hash_part(b""), b"");
        assert_eq!(token_of(b"foo{}{bar}"), xxhash_rust::xxh3::xxh3_64(b"foo{}{bar}"));
        assert_ne!(token_of(b"user1000.following"), token_of(b"user1000.followers"));
    }

    proptest! {
        /// Any two keys with the same non-empty tag in first position share a token.
        #[test]
        fn same_tag_same_token(tag in "[a-z0-9]{1,12}", a in ".{0,20}", b in ".{0,20}") {
            let ka = format!("{{{tag}}}{a}");
            let kb = format!("{b_prefix}{{{tag}}}{a}{b}", b_prefix = "x".repeat(b.len() % 3));
            prop_assert_eq!(token_of(ka.as_bytes()), token_of(kb.as_bytes()));
        }

        /// A key without `{` hashes whole.
        #[test]
        fn no_brace_hashes_whole(
            key in proptest::collection::vec(any::<u8>().prop_filter("no {", |b| *b != b'{'), 0..64)
        ) {
            prop_assert_eq!(hash_part(&key), &key[..]);
        }

        /// The hash part is always a sub-slice of the key and never contains `}`
        /// when it is a tag.
        #[test]
        fn hash_part_is_within_key(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let part = hash_part(&key);
            prop_assert!(part.len() <= key.len());
            if part.len() < key.len() {
                prop_assert!(!part.is_empty());
                prop_assert!(!part.contains(&b'}'), "tag contains a closing brace");
            }
        }
    }
}
