//! Wire errors.
