//! Scans across cores: each core's engine holds its vnodes' keys in (token,
//! key) order, so one page of the node's scan asks every involved core for its
//! next `limit` entries after the same position and merges them.
//!
//! A core can stop early (its `max_examined` bound, e.g. over many
//! tombstones) with a cursor short of `limit` entries. Entries of other cores
//! beyond that cursor cannot be returned yet, or that core's entries between
//! its cursor and them would be skipped; so the page ends at the smallest such
//! cursor (the horizon).

use std::rc::Rc;

use corekv_engine::Cursor;

use crate::runtime::Shard;
use crate::store::{Cmd, Failure, FailureKind, Reply, ScanEntry};
use crate::topology::Token;

/// One merged page and where to resume (`None`: the range is exhausted).
pub struct MergedPage {
    /// Entries in (token, key) order.
    pub entries: Vec<ScanEntry>,
    /// Resume strictly after this position.
    pub next: Option<Cursor>,
}

fn pos(c: &Cursor) -> (Token, &[u8]) {
    (c.token, c.key.as_slice())
}

/// A page of tokens `[start, end]` (inclusive) over `cores`.
pub async fn page(
    shard: &Rc<Shard>,
    cores: &[usize],
    start: Token,
    end: Token,
    after: Option<Cursor>,
    prefix: &[u8],
    limit: usize,
) -> Result<MergedPage, Failure> {
    let limit = limit.max(1);
    let calls = cores.iter().map(|&c| {
        shard.exec(
            c,
            Cmd::Scan {
                start,
                end,
                after: after.clone(),
                prefix: prefix.to_vec(),
                limit,
            },
        )
    });
    let replies = futures::future::join_all(calls).await;
    let mut entries = Vec::new();
    let mut horizon: Option<Cursor> = None;
    for r in replies {
        match r {
            Reply::Page(p) => {
                entries.extend(p.entries);
                if let Some(c) = p.cursor {
                    if horizon.as_ref().is_none_or(|h| pos(&c) < pos(h)) {
                        horizon = Some(c);
                    }
                }
            }
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected scan reply {other:?}"),
                ));
            }
        }
    }
    entries.sort_unstable_by(|a, b| (a.token, &a.key).cmp(&(b.token, &b.key)));
    if let Some(h) = &horizon {
        entries.retain(|e| (e.token, e.key.as_slice()) <= pos(h));
    }
    if entries.len() > limit {
        entries.truncate(limit);
        let next = entries.last().map(|e| Cursor {
            token: e.token,
            key: e.key.clone(),
        });
        return Ok(MergedPage { entries, next });
    }
    Ok(MergedPage { entries, next: horizon })
}

/// Every core of the node.
pub fn all_cores(shard: &Shard) -> Vec<usize> {
    (0..shard.cores).collect()
}
