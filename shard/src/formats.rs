//! The format versions this build reads and writes, and the data
//! directory's own stamp (docs/format-versions.md).
//!
//! Every format carries a version, and a node given one it does not know
//! refuses it with a message naming the file (or the peer) and the version
//! it reads, rather than guessing:
//!
//! | format | where the version is | checked |
//! |---|---|---|
//! | wire frame | header byte 2 (`corekv_net::frame::PROTOCOL_VERSION`) | every frame; an ERROR frame answers, then the connection closes |
//! | WAL record (write batch) | high byte of `count` (`corekv_engine::format::BATCH_FORMAT_VERSION`) | replay at start |
//! | SSTable | footer and properties (`corekv_engine::sstable::FORMAT_VERSION`) | table open at start |
//! | manifest edit | first byte (`corekv_engine::manifest::EDIT_VERSION`) | at start |
//! | versioned record | first byte (`versioning::Record::FORMAT_VERSION`) | every decode; at start through [`DATA_DIR_FORMAT`] |
//! | hint | first byte | at start (every hint is read) |
//! | Paxos acceptor state | first byte | every decode; at start through [`DATA_DIR_FORMAT`] |
//! | gossip message | first byte (`membership::wire::FORMAT_VERSION`) | every message; answered with an ERROR frame |
//! | saved membership (`cluster-state`) | magic `CKVMEMB1`, last byte | at start |
//! | data directory | [`STAMP_FILE`] | at start |
//! | snapshot, backup manifest | `format = 1` (`backup::SNAPSHOT_FORMAT`, `BACKUP_FORMAT`) | when read |
//!
//! Records and Paxos states are read key by key, long after start; a build
//! that changes either bumps [`DATA_DIR_FORMAT`], so an older build refuses
//! the whole directory at start instead of failing on the first such key.

use std::path::Path;

use crate::error::{Error, Result};

/// The data directory format this build writes and reads.
pub const DATA_DIR_FORMAT: u32 = 1;

/// The stamp file in `node.data_dir`.
pub const STAMP_FILE: &str = "FORMAT";

const STAMP_PREFIX: &str = "corekv data directory format ";

/// Checks `dir`'s stamp, or writes it (a new directory, or one an older
/// build made before stamps existed: both are version 1). A stamp of
/// another version, or one that does not parse, stops the node.
pub fn check_data_dir(dir: &Path) -> Result<()> {
    let path = dir.join(STAMP_FILE);
    let io = |what: &str, e: std::io::Error| Error::Runtime {
        what: format!("{what} {}", path.display()),
        reason: e.to_string(),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let found = text
                .trim()
                .strip_prefix(STAMP_PREFIX)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| Error::Runtime {
                    what: format!("reading {}", path.display()),
                    reason: format!("not a corekv format stamp (expected `{STAMP_PREFIX}N`)"),
                })?;
            if found != DATA_DIR_FORMAT {
                return Err(Error::UnsupportedFormat {
                    what: format!("the data directory {} (stamp {})", dir.display(), path.display()),
                    found,
                    known: DATA_DIR_FORMAT.to_string(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Blocking, on the main thread before any executor starts.
            std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
            let tmp = dir.join(format!("{STAMP_FILE}.tmp"));
            std::fs::write(&tmp, format!("{STAMP_PREFIX}{DATA_DIR_FORMAT}\n")).map_err(|e| io("writing", e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("renaming", e))?;
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", e))?;
            Ok(())
        }
        Err(e) => Err(io("reading", e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_written_once_and_a_future_one_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("corekv-stamp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        check_data_dir(&dir).unwrap();
        let path = dir.join(STAMP_FILE);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "corekv data directory format 1\n"
        );
        check_data_dir(&dir).unwrap();
        std::fs::write(&path, "corekv data directory format 2\n").unwrap();
        let e = check_data_dir(&dir).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the data directory {} (stamp {}) has format version 2; this build reads version 1",
                dir.display(),
                path.display()
            )
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(check_data_dir(&dir)
            .unwrap_err()
            .to_string()
            .contains("not a corekv format stamp"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
