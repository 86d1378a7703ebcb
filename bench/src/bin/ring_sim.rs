//! `ring-sim`: issue 4's scale checks by simulation, no network, no disk.
//!
//! 1. Balance: a ring of `--nodes` x `--vnodes` built by successive joins
//!    through the token allocator (first node evenly spaced, or hashed), against
//!    hashed tokens: max/mean and min/mean of primary ownership.
//! 2. Movement: one more node joins; the fraction of the token space (exact)
//!    and of `--keys` random keys (sampled) whose primary owner changes,
//!    against the ideal K/N.
//! 3. Failure detection: `--gossip-nodes` gossipers (the real state machines)
//!    in the seeded simulated network of `corekv_shard::membership::sim`, with
//!    `--loss` message loss: the cluster forms from 3 seeds, runs `--warmup`
//!    rounds, then one non-seed node crashes; we count gossip rounds until
//!    every running node has convicted it, over `--runs` seeds, against
//!    2 x log2(N).
//!
//! Everything is seeded: the same arguments print the same figures (only the
//! wall-clock column varies). Output is markdown.
//!
//! ```text
//! cargo run --release -p corekv-bench --bin ring-sim
//! cargo run --release -p corekv-bench --bin ring-sim -- --no-ring --gossip-nodes 100 --variants default,exp-f1-round,normal-f1
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use corekv_shard::membership::sim::{Sim, SimConfig};
use corekv_shard::membership::{Distribution, GossipConfig, Output, PhiConfig};
use corekv_shard::{allocate_tokens, evenly_spaced_tokens, token_of, Node, Ring, Token};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Issue 4's scale checks by simulation (see the crate docs).
#[derive(Parser, Debug)]
#[command(name = "ring-sim")]
struct Args {
    /// Nodes in the balance and movement checks.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Vnodes per node.
    #[arg(long, default_value_t = 256)]
    vnodes: u32,
    /// Random keys sampled for the movement check.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Cluster sizes for the failure-detection simulation (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    gossip_nodes: Vec<usize>,
    /// Seeds (runs) per cluster size.
    #[arg(long, default_value_t = 5)]
    runs: u64,
    /// Rounds between the cluster forming and the crash (the detectors learn
    /// the heartbeat rhythm meanwhile).
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Detector/gossip variants: `default` (`GossipConfig::default()`:
    /// exponential phi, fan-out 3, heartbeat on answers), or
    /// `{exp|normal}-f{fanout}[-round]` (`-round`: heartbeat once per round
    /// only, as Cassandra), e.g. `exp-f1-round,normal-f2`.
    #[arg(long, value_delimiter = ',', default_value = "default")]
    variants: Vec<String>,
    /// Skip the ring (balance and movement) part.
    #[arg(long)]
    no_ring: bool,
}

fn node(i: usize) -> Node {
    Node::new(
        format!("node-{i:05}"),
        format!("10.{}.{}.{}:7380", i >> 16, (i >> 8) & 0xff, i & 0xff),
    )
}

fn spread(ring: &Ring) -> (f64, f64) {
    let owned = ring.ownership();
    let mean = 1.0 / owned.len() as f64;
    let max = owned.iter().copied().fold(0.0, f64::max);
    let min = owned.iter().copied().fold(1.0, f64::min);
    (max / mean, min / mean)
}

/// A ring of `n` nodes built by successive joins through the allocator.
fn grow(n: usize, vnodes: u32, first: Option<Vec<Token>>) -> Result<Ring, corekv_shard::Error> {
    let mut seed = node(0);
    seed.tokens = first;
    let mut ring = Ring::new(vec![seed], vnodes)?;
    for i in 1..n {
        let new = node(i);
        let tokens = allocate_tokens(&ring, &new.id, vnodes)?;
        ring = ring.with_node(new.with_tokens(tokens))?;
    }
    Ok(ring)
}

/// Movement when `after` = `before` + one node: (exact fraction of the token
/// space whose primary owner changed, fraction of `keys` sampled keys, whether
/// every moved key went to the new node).
fn movement(before: &Ring, after: &Ring, new: &Node, keys: usize) -> (f64, f64, bool) {
    let mut moved = 0u128;
    let mut only_new = true;
    // `after` holds every token of `before`, so each of its ranges lies in one
    // range of `before`.
    let mut prev = after.vnodes().last().map_or(0, |v| v.token);
    for v in after.vnodes() {
        let (was, is) = (&before.node_of(before.owner_vnode(v.token)).id, &after.node_of(v).id);
        if was != is {
            moved += u128::from(v.token.wrapping_sub(prev));
            only_new &= *is == new.id;
        }
        prev = v.token;
    }
    let mut rng = SmallRng::seed_from_u64(1001);
    let mut moved_keys = 0usize;
    for _ in 0..keys {
        let t = token_of(&rng.gen::<[u8; 16]>());
        if before.node_of(before.owner_vnode(t)).id != after.node_of(after.owner_vnode(t)).id {
            moved_keys += 1;
        }
    }
    (
        moved as f64 / (1u128 << 64) as f64,
        moved_keys as f64 / keys.max(1) as f64,
        only_new,
    )
}

fn ring_part(args: &Args) -> Result<bool, corekv_shard::Error> {
    let (n, v) = (args.nodes, args.vnodes);
    println!("## Token balance: {n} nodes x {v} vnodes (primary ownership)\n");
    println!("| tokens | max/mean | min/mean | target max/mean | met | build time |");
    println!("|---|---|---|---|---|---|");
    let mut ok = true;
    let t = Instant::now();
    let hashed = Ring::new((0..n).map(node).collect(), v)?;
    let (max, min) = spread(&hashed);
    println!(
        "| hashed, xxh3(id, i) (before this change) | {max:.4} | {min:.4} | 1.10 | {} | {:.1} s |",
        if max <= 1.10 { "yes" } else { "no" },
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let even = grow(n, v, Some(evenly_spaced_tokens(v)))?;
    let (max, min) = spread(&even);
    ok &= max <= 1.10;
    println!(
        "| allocated by successive joins, first node evenly spaced | {max:.4} | {min:.4} | 1.10 | {} | {:.1} s |",
        if max <= 1.10 { "yes" } else { "no" },
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let random = grow(n, v, None)?;
    let (max, min) = spread(&random);
    ok &= max <= 1.10;
    println!(
        "| allocated by successive joins, first node hashed (random) | {max:.4} | {min:.4} | 1.10 | {} | {:.1} s |",
        if max <= 1.10 { "yes" } else { "no" },
        t.elapsed().as_secs_f64()
    );

    println!("\n## Movement: node {} joins {n} nodes\n", n + 1);
    println!(
        "Moved = primary owner changed. Ideal K/N = 1/{} of the keys. Exact = measured over the token space; \
         sampled = {} random keys.\n",
        n + 1,
        args.keys
    );
    println!("| ring | moved (exact) | x K/N | moved ({} keys) | x K/N | all to the new node | max/mean after | met (<= 1.10 x K/N) |", args.keys);
    println!("|---|---|---|---|---|---|---|---|");
    let ideal = 1.0 / (n + 1) as f64;
    let new = node(n);
    let cases = [
        ("hashed", hashed.with_node(new.clone())?, &hashed),
        (
            "allocated (even first)",
            even.with_node(new.clone().with_tokens(allocate_tokens(&even, &new.id, v)?))?,
            &even,
        ),
        (
            "allocated (random first)",
            random.with_node(new.clone().with_tokens(allocate_tokens(&random, &new.id, v)?))?,
            &random,
        ),
    ];
    for (name, after, before) in &cases {
        let (exact, sampled, only_new) = movement(before, after, &new, args.keys);
        let met = exact <= 1.10 * ideal && sampled <= 1.10 * ideal && only_new;
        if *name != "hashed" {
            ok &= met;
        }
        println!(
            "| {name} | {exact:.6} | {:.4} | {sampled:.6} | {:.4} | {} | {:.4} | {} |",
            exact / ideal,
            sampled / ideal,
            if only_new { "yes" } else { "no" },
            spread(after).0,
            if met { "yes" } else { "no" }
        );
    }
    println!();
    Ok(ok)
}

/// One detection run's figures, in gossip rounds after the crash.
#[derive(Debug, Clone, Default)]
struct Run {
    formed: f64,
    first: f64,
    mean: f64,
    all: f64,
    spread: f64,
    undetected: usize,
    false_downs: usize,
    msgs_per_node_round: f64,
    /// Observers' mean heartbeat inter-arrival for the victim at the crash, ms.
    arrival_mean: f64,
    arrival_max: f64,
}

fn detection_run(n: usize, seed: u64, gossip: &GossipConfig, args: &Args) -> Run {
    let interval = gossip.interval_ms as f64;
    let mut sim = Sim::new(SimConfig {
        nodes: n,
        seeds: 3,
        loss: args.loss,
        latency_ms: (1, 5),
        gossip: gossip.clone(),
        seed,
    });
    let mut run = Run::default();
    let mut false_downs = 0usize;
    let count_false = |false_downs: &mut usize, events: &[Output], victim: Option<&corekv_shard::NodeId>| {
        *false_downs += events
            .iter()
            .filter(|e| matches!(e, Output::NodeDown(id) if Some(id) != victim))
            .count();
    };
    // Formation: from seeds to everyone knowing and trusting everyone.
    let mut formed = 0;
    for r in 1..=120u64 {
        sim.run_until(r * gossip.interval_ms, |_, s| {
            count_false(&mut false_downs, &s.events, None)
        });
        if sim.converged() {
            formed = r;
            break;
        }
    }
    run.formed = formed as f64;
    sim.run_until((formed + args.warmup) * gossip.interval_ms, |_, s| {
        count_false(&mut false_downs, &s.events, None)
    });
    let mut pick = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let victim = pick.gen_range(3..n);
    let dead = Sim::id(victim);
    let t0 = sim.now();
    let (sent0, _) = sim.messages();
    let means: Vec<f64> = (0..n)
        .filter(|&i| i != victim)
        .filter_map(|i| sim.node(i).arrivals(&dead).map(|w| w.mean()))
        .collect();
    run.arrival_mean = means.iter().sum::<f64>() / means.len().max(1) as f64;
    run.arrival_max = means.iter().copied().fold(0.0, f64::max);
    sim.kill(victim);
    // Per node: when it convicted the victim, and when its knowledge of the
    // victim's heartbeat last grew (the tail of the final heartbeat's spread).
    let mut down_at: Vec<Option<u64>> = vec![None; n];
    let mut heard = vec![t0; n];
    let mut known: Vec<u64> = (0..n)
        .map(|i| sim.node(i).state().get(&dead).map_or(0, |s| s.heartbeat))
        .collect();
    let mut left = n - 1;
    let cap = t0 + 200 * gossip.interval_ms;
    while left > 0 {
        let Some(step) = sim.step() else { break };
        if step.time_ms > cap {
            break;
        }
        let i = step.node;
        let hb = sim.node(i).state().get(&dead).map_or(0, |s| s.heartbeat);
        if hb > known[i] {
            known[i] = hb;
            heard[i] = step.time_ms;
        }
        for e in &step.events {
            // A node convicts once: only an echo answer brings it back up,
            // and the dead answer none.
            match e {
                Output::NodeDown(id) if *id == dead && down_at[i].is_none() => {
                    down_at[i] = Some(step.time_ms);
                    left -= 1;
                }
                Output::NodeDown(id) if *id != dead => false_downs += 1,
                _ => {}
            }
        }
    }
    let elapsed = sim.now().saturating_sub(t0).max(1);
    let (sent1, _) = sim.messages();
    let times: Vec<f64> = down_at
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .filter_map(|(_, t)| t.map(|t| (t - t0) as f64 / interval))
        .collect();
    run.undetected = n - 1 - times.len();
    run.first = times.iter().copied().fold(f64::INFINITY, f64::min);
    run.all = if run.undetected > 0 {
        f64::INFINITY
    } else {
        times.iter().copied().fold(0.0, f64::max)
    };
    run.mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    run.spread = heard
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, &t)| (t - t0) as f64 / interval)
        .fold(0.0, f64::max);
    run.false_downs = false_downs;
    run.msgs_per_node_round = (sent1 - sent0) as f64 / ((n - 1) as f64 * elapsed as f64 / interval);
    run
}

fn parse_variant(name: &str) -> Option<GossipConfig> {
    if name == "default" {
        return Some(GossipConfig::default());
    }
    // A `-round` suffix: heartbeat once per round only (Cassandra's rule).
    let (name, beat_on_answer) = match name.strip_suffix("-round") {
        Some(base) => (base, false),
        None => (name, true),
    };
    let (dist, fanout) = name.split_once("-f")?;
    let distribution = match dist {
        "exp" => Distribution::Exponential,
        "normal" => Distribution::Normal,
        _ => return None,
    };
    Some(GossipConfig {
        fanout: fanout.parse().ok().filter(|f| *f >= 1)?,
        beat_on_answer,
        phi: PhiConfig {
            distribution,
            ..PhiConfig::default()
        },
        ..GossipConfig::default()
    })
}

fn gossip_part(args: &Args) -> bool {
    println!(
        "## Failure detection: rounds from a crash until every running node has convicted it\n\n\
         Simulated network: {:.0}% loss per message, 1-5 ms latency, 3 seeds, gossip interval 1 s, phi threshold 8, \
         indirect probes 3. The cluster forms from the seeds, runs {} more rounds, then one random non-seed node \
         crashes. Rounds are gossip intervals after the crash; the mean is over {} seeds (the range in brackets). \
         \"all\" is the figure the target applies to (inf: some node never convicted it after the crash, e.g. \
         because it had wrongly convicted it before); \"heartbeat spread\" is when the last running node learned \
         the dead node's final heartbeat; \"false\" counts convictions of running nodes over the whole run, and \
         any fails the target.\n",
        args.loss * 100.0,
        args.warmup,
        args.runs
    );
    println!(
        "| variant | N | formed in | first | mean over nodes | all (target 2 log2 N) | heartbeat spread | inter-arrival mean / max (ms) | false | msgs/node/round | met | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for name in &args.variants {
        let Some(gossip) = parse_variant(name) else {
            eprintln!("unknown variant {name:?} (want default, exp-fN[-round] or normal-fN[-round])");
            return false;
        };
        for &n in &args.gossip_nodes {
            if n < 5 {
                eprintln!("--gossip-nodes: at least 5 (3 seeds plus a victim plus a witness)");
                return false;
            }
            let t = Instant::now();
            let runs: Vec<Run> = (1..=args.runs)
                .map(|seed| detection_run(n, seed, &gossip, args))
                .collect();
            let avg = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
            let lo = |f: fn(&Run) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = |f: fn(&Run) -> f64| runs.iter().map(f).fold(0.0, f64::max);
            let target = 2.0 * (n as f64).log2();
            let all = avg(|r| r.all);
            // Fast but flapping is no detector: a false conviction fails the target.
            let false_downs: usize = runs.iter().map(|r| r.false_downs).sum();
            let met = all <= target && false_downs == 0;
            if name == "default" {
                ok &= met;
            }
            println!(
                "| {name} | {n} | {:.1} | {:.1} | {:.1} | **{all:.1}** [{:.1}-{:.1}] vs {target:.1} | {:.1} | {:.0} / {:.0} | {} | {:.2} | {} | {:.0} s |",
                avg(|r| r.formed),
                avg(|r| r.first),
                avg(|r| r.mean),
                lo(|r| r.all),
                hi(|r| r.all),
                avg(|r| r.spread),
                avg(|r| r.arrival_mean),
                hi(|r| r.arrival_max),
                false_downs,
                avg(|r| r.msgs_per_node_round),
                if met { "yes" } else { "no" },
                t.elapsed().as_secs_f64()
            );
            if runs.iter().any(|r| r.undetected > 0) {
                println!("\n(some runs left nodes that never convicted within 200 rounds)\n");
            }
        }
    }
    println!();
    ok
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut ok = true;
    if !args.no_ring {
        match ring_part(&args) {
            Ok(met) => ok &= met,
            Err(e) => {
                eprintln!("ring-sim: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if !args.gossip_nodes.is_empty() {
        ok &= gossip_part(&args);
    }
    println!("targets met (default variant): {}", if ok { "all" } else { "not all" });
    ExitCode::SUCCESS
}
