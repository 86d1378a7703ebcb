//! The configuration parser: `Config::apply_toml` (the `--config` file),
//! `Config::apply_override` (`--set section.key=value` and the per-key
//! flags), `Config::apply_env` (`COREKV_<SECTION>_<KEY>`) and
//! `Config::validate`.
//!
//! Input: any bytes. As UTF-8 text (lossily converted, so mutations that
//! break UTF-8 still reach the parser) they are a TOML file; each line is
//! also an override and, split at the first `=`, an environment entry.
//! Besides "no panic": a configuration that parses and validates prints
//! (`Display`) as TOML that reads back to the same configuration, and an
//! accepted file applied again changes nothing.
#![no_main]

use std::path::Path;

use corekv_shard::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");

    let mut c = Config::default();
    if c.apply_toml(&text, path).is_ok() {
        // Idempotent: the same file over its own result is the same result.
        let mut again = c.clone();
        assert!(
            again.apply_toml(&text, path).is_ok(),
            "an accepted file fails the second time"
        );
        assert_eq!(again, c, "applying a file twice differs from once");
        if c.validate().is_ok() {
            let shown = c.to_string();
            let mut back = Config::default();
            if let Err(e) = back.apply_toml(&shown, Path::new("display.toml")) {
                panic!("the displayed configuration does not read back: {e}\n{shown}");
            }
            assert_eq!(back, c, "the displayed configuration reads back differently:\n{shown}");
        }
    }

    let mut c = Config::default();
    for line in text.lines() {
        let _ = c.apply_override(line);
    }
    let _ = c.validate();

    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut c = Config::default();
    let _ = c.apply_env(env);
    let _ = c.validate();

    // The whole loader, as `corekv serve` runs it (no file, no environment).
    let overrides: Vec<&str> = text.lines().collect();
    let _ = Config::load(None, std::iter::empty(), &overrides);
});
