//! The client SDK in a few lines: connect, put, get, incr, list.
//!
//! ```sh
//! cargo run -p corekv-net --features client --example client -- 127.0.0.1:7380
//! ```
//!
//! The argument is one or more seed addresses (a node's shared client port).

use std::process::ExitCode;

use corekv_net::client::{Client, ClientOptions, PutOptions, Ttl};

async fn run(seeds: &[String]) -> Result<(), corekv_net::client::ClientError> {
    let client = Client::connect(seeds, ClientOptions::default()).await?;
    let routing = client.routing();
    println!("ring epoch {} with {} node(s):", routing.epoch(), routing.nodes().len());
    for n in routing.nodes() {
        println!(
            "  {} cores={} shard_port={} vnodes={}",
            n.address,
            n.cores,
            n.shard_port,
            n.tokens.len()
        );
    }
    client.ping().await?;
    println!("ping: ok");

    client.put("example:greeting", "hello, corekv").await?;
    let got = client.get("example:greeting").await?;
    println!(
        "get example:greeting -> {:?}",
        got.as_ref().map(|v| String::from_utf8_lossy(&v.value).into_owned())
    );
    println!("  routed to {}", client.routing().endpoint(b"example:greeting"));

    let set = client
        .put_with(
            "example:once",
            "first",
            PutOptions {
                ttl_ms: 60_000,
                condition: corekv_net::client::Condition::IfAbsent,
            },
        )
        .await?;
    println!(
        "put NX example:once -> {}",
        if set { "written" } else { "already there" }
    );
    match client.ttl("example:once").await? {
        Ttl::Millis(ms) => println!("ttl example:once -> {ms} ms"),
        other => println!("ttl example:once -> {other:?}"),
    }

    let n = client.incr("example:counter", 1).await?;
    println!("incr example:counter -> {n}");

    client
        .mput(
            &[
                ("example:list:a", "1"),
                ("example:list:b", "2"),
                ("example:list:c", "3"),
            ],
            0,
        )
        .await?;
    let values = client
        .mget(&["example:list:a", "example:list:missing", "example:list:c"])
        .await?;
    println!(
        "mget -> {:?}",
        values
            .iter()
            .map(|v| v.as_ref().map(|v| String::from_utf8_lossy(&v.value).into_owned()))
            .collect::<Vec<_>>()
    );

    let entries = client.list_all("example:list:", 100).await?;
    println!("list example:list: -> {} entries", entries.len());
    for (k, v) in entries {
        println!("  {} = {}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
    }
    Ok(())
}

fn main() -> ExitCode {
    let seeds: Vec<String> = std::env::args().skip(1).collect();
    let seeds = if seeds.is_empty() {
        vec!["127.0.0.1:7380".to_owned()]
    } else {
        seeds
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&seeds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
