//! Per-keyspace settings that decide how versions are kept.

use std::fmt;

use serde::Deserialize;

/// How a keyspace resolves concurrent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Dotted version vectors: concurrent writes are kept as siblings and a
    /// read returns them all with a causal context; no acknowledged write is
    /// lost without a later write that saw it.
    #[default]
    Causal,
    /// Hybrid-logical-clock timestamps, newest wins. Of two concurrent writes
    /// one is lost, and which one depends on how well the clocks are synced.
    Lww,
}

impl fmt::Display for ConflictMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictMode::Causal => "causal",
            ConflictMode::Lww => "lww",
        })
    }
}

/// One keyspace's settings (read from the cluster configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceConfig {
    /// The keyspace's name.
    pub name: String,
    /// Replicas per key (N).
    #[serde(default = "KeyspaceConfig::default_replication_factor")]
    pub replication_factor: u8,
    /// How concurrent writes are resolved.
    #[serde(default)]
    pub conflict_mode: ConflictMode,
}

impl KeyspaceConfig {
    /// The default replication factor.
    pub const DEFAULT_REPLICATION_FACTOR: u8 = 3;

    /// A keyspace named `name` with the defaults: 3 replicas, causal.
    pub fn new(name: impl Into<String>) -> Self {
        KeyspaceConfig {
            name: name.into(),
            replication_factor: Self::DEFAULT_REPLICATION_FACTOR,
            conflict_mode: ConflictMode::default(),
        }
    }

    fn default_replication_factor() -> u8 {
        Self::DEFAULT_REPLICATION_FACTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let k: KeyspaceConfig = toml::from_str(r#"name = "users""#).unwrap();
        assert_eq!(k, KeyspaceConfig::new("users"));
        assert_eq!(k.replication_factor, 3);
        assert_eq!(k.conflict_mode, ConflictMode::Causal);
    }

    #[test]
    fn modes_are_lowercase() {
        let k: KeyspaceConfig =
            toml::from_str("name = \"metrics\"\nreplication_factor = 2\nconflict_mode = \"lww\"").unwrap();
        assert_eq!(k.conflict_mode, ConflictMode::Lww);
        assert_eq!(k.replication_factor, 2);
        assert!(toml::from_str::<KeyspaceConfig>("name = \"x\"\nconflict_mode = \"Causal\"").is_err());
        assert!(toml::from_str::<KeyspaceConfig>("name = \"x\"\nconflict_mode = \"vector\"").is_err());
    }

    #[test]
    fn unknown_fields_are_errors() {
        // A misspelt setting silently ignored is one the operator believes applies.
        assert!(toml::from_str::<KeyspaceConfig>("name = \"x\"\nconflict = \"lww\"").is_err());
    }
}
