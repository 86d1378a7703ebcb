//! The receiving side of RESTORE (docs/backup.md): records read from a
//! backup, written into the cluster through the replication path.
//!
//! Each record goes to the key's replicas in *this* cluster's ring (the
//! backup's ring does not matter: that is how a backup of 3 nodes lands on
//! 5) as a coordinated write of the stored record: the coordinator's own
//! replica merges it first when this node is one, then a [`WriteOp`] sends
//! it to the others as MUTATE, which merges it into whatever they hold, the
//! way repair and hint replay do. The record keeps its version metadata
//! (dots or HLC timestamp), so siblings, tombstones and expiry times survive
//! and a restore run twice leaves the same state (a merge with itself
//! changes nothing). A replica that misses it gets a hint, like any write.

use std::rc::Rc;

use futures::channel::oneshot;

use super::{believed_down, drive_write, Cluster};
use crate::coordinator::{Consistency, Mutation, ReplicaPlan, WriteOp, WriteRequest};
use crate::runtime::Shard;
use crate::store::{Cmd, Failure, FailureKind, Key, Reply};
use crate::versioning::Record;

/// Most records in one RESTORE request (they are written concurrently).
pub const MAX_RESTORE_BATCH: usize = 4096;

/// Writes every `(token, key, record)` of a RESTORE at `consistency`;
/// returns how many. The batch is checked whole before anything is written:
/// a record that does not decode, belongs to the other conflict mode, has a
/// key over the limit or a token that is not its key's is refused with the
/// reason, and nothing of the batch is written.
pub async fn restore_records(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    consistency: Consistency,
    entries: Vec<(u64, Vec<u8>, Vec<u8>)>,
    timeout_ms: u64,
) -> Result<u64, Failure> {
    if entries.len() > MAX_RESTORE_BATCH {
        return Err(Failure::new(
            FailureKind::TooLarge,
            format!(
                "{} records in one RESTORE, more than {MAX_RESTORE_BATCH}",
                entries.len()
            ),
        ));
    }
    let max_key = usize::try_from(shard.config.limits.max_key_bytes).unwrap_or(usize::MAX);
    let mut records = Vec::with_capacity(entries.len());
    for (token, key, bytes) in entries {
        let show = || String::from_utf8_lossy(&key).into_owned();
        if key.is_empty() || key.len() > max_key {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!("key of {} bytes: keys are 1..={max_key} bytes here", key.len()),
            ));
        }
        if crate::topology::token_of(&key) != token {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!("key {:?} came with token {token:#x}, which is not its token", show()),
            ));
        }
        let record = Record::decode(&bytes).map_err(|e| {
            Failure::new(
                FailureKind::Invalid,
                format!("the record of key {:?} does not decode: {e}", show()),
            )
        })?;
        let causal = matches!(record, Record::Causal(_));
        if causal != cluster.causal {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "the backup holds {} records but this cluster runs cluster.conflict_mode = {}",
                    if causal { "causal" } else { "lww" },
                    if cluster.causal { "causal" } else { "lww" }
                ),
            ));
        }
        records.push((Key { token, bytes: key }, record));
    }
    let n = records.len() as u64;
    let writes = records
        .into_iter()
        .map(|(key, record)| restore_one(shard, cluster, key, record, consistency, timeout_ms));
    for r in futures::future::join_all(writes).await {
        r?;
    }
    Ok(n)
}

async fn restore_one(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    record: Record,
    consistency: Consistency,
    timeout_ms: u64,
) -> Result<(), Failure> {
    let view = cluster.view();
    let plan = ReplicaPlan::new(
        &view.ring,
        view.next.as_deref(),
        key.token,
        cluster.rf,
        believed_down(&view),
    );
    if plan.replicas.iter().any(|r| r.node == cluster.me) {
        // This replica first, as a coordinator's own write: the write op
        // counts it as acknowledged without sending it.
        let core = cluster.local_core(key.token);
        let cmd = Cmd::ReplicaMerge {
            key: key.clone(),
            record: record.to_bytes(),
        };
        match shard.exec(core, cmd).await {
            Reply::Ok => {}
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                ))
            }
        }
    }
    let (deadline, _) = cluster.deadline(timeout_ms);
    let (op, outputs) = WriteOp::start(WriteRequest {
        id: cluster.fresh_id(),
        mutation: Mutation {
            key: key.bytes,
            token: key.token,
            record,
        },
        consistency,
        local_dc: cluster.dc.clone(),
        plan,
        sloppy: false,
        deadline,
    });
    let (reply_tx, reply_rx) = oneshot::channel();
    let driver = drive_write(shard.clone(), cluster.clone(), op, outputs, None, reply_tx);
    glommio::spawn_local_into(driver, shard.fg)
        .map_err(|e| Failure::new(FailureKind::Internal, format!("cannot spawn a restore write: {e}")))?
        .detach();
    match reply_rx.await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            FailureKind::Internal,
            "the restore write's driver ended without an answer",
        )),
    }
}
