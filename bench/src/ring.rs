//! Waiting for a cluster to form, as the load generators see it.

use std::time::{Duration, Instant};

use corekv_net::client::{Client, ClientOptions};

/// Waits until the node at `seed` lists at least `want` members in its ring;
/// returns the last ring line (`N member(s) at epoch E: addr ...`). Each poll
/// is a fresh `Client::connect` to that one node, so the answer is that node's
/// ring (`refresh_ring` would ask the ring's members in turn). Fails after
/// `within` with the last answer.
pub async fn wait_ring(seed: &str, want: usize, within: Duration) -> Result<String, String> {
    let options = ClientOptions {
        timeout: Duration::from_secs(1),
        retries: 0,
        refresh_interval: None,
        ..ClientOptions::default()
    };
    let start = Instant::now();
    loop {
        let last = match Client::connect(&[seed], options).await {
            Ok(c) => {
                let r = c.routing();
                let members: Vec<&str> = r.nodes().iter().map(|n| n.address.as_str()).collect();
                let line = format!(
                    "{} member(s) at epoch {}: {}",
                    members.len(),
                    r.epoch(),
                    members.join(" ")
                );
                if members.len() >= want {
                    return Ok(line);
                }
                line
            }
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= within {
            return Err(format!(
                "the ring at {seed} did not reach {want} members within {:.0} s; last answer: {last}",
                within.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
