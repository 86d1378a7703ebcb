//! The binary protocol's frames and messages.
