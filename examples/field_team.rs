//! The field-team demo: three peers, each with its own sled store in a temporary
//! directory, talking real libp2p (TCP, noise, yamux) on 127.0.0.1.
//!
//! - The office **hub** creates a site record; both devices sync it.
//! - Offline, the **tablet** writes a note on the site and opens a job; the
//!   **laptop** logs two visits (a counter), edits the site's instructions (text)
//!   and opens another job.
//! - The tablet syncs with the hub, then the laptop does: the laptop receives the
//!   tablet's changes without ever meeting it. The tablet syncs once more.
//!
//! It prints what each peer ends with and exits 0 only if all three hold the
//! same records (values and automerge heads).
//!
//! `cargo run --release --example field_team`

use std::error::Error;

use fieldsync::node::{Node, NodeConfig};
use fieldsync::schema::{Collection, FieldType, Schema};
use fieldsync::{Config, Replica, Scan, Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new()
        .with(
            Collection::builder("site")
                .required("name", FieldType::String)
                .field("note", FieldType::String)
                .default("visits", FieldType::Counter, Value::Counter(0))
                .field("instructions", FieldType::Text)
                .build()?,
        )?
        .with(
            Collection::builder("job")
                .required("site", FieldType::Reference("site".into()))
                .required("title", FieldType::String)
                .default("status", FieldType::String, "open")
                .build()?,
        )
}

type Snapshot = Vec<(String, String, fieldsync::Fields, Vec<String>)>;

/// Every record of a replica, with its sorted heads.
fn snapshot(r: &Replica) -> Result<Snapshot, fieldsync::Error> {
    let mut out = Vec::new();
    for c in ["site", "job"] {
        for rec in r.scan(&Scan::new(c).with_deleted())? {
            let mut heads: Vec<String> = rec.meta.heads.iter().map(|h| h.to_string()).collect();
            heads.sort();
            out.push((c.to_owned(), rec.id, rec.fields, heads));
        }
    }
    Ok(out)
}

struct Peer {
    name: &'static str,
    replica: Replica,
    node: Node,
}

async fn peer(name: &'static str, dir: &std::path::Path) -> Result<Peer, Box<dyn Error>> {
    let store = dir.join(name);
    let replica = Replica::open(&store, Config::default().with_schema(schema()?))?;
    // Defaults: a free TCP (and QUIC) port on 127.0.0.1, manual mode; the
    // node's identity is the store's.
    let node = Node::start(replica.clone(), NodeConfig::default()).await?;
    Ok(Peer {
        name,
        replica,
        node,
    })
}

/// `from` connects to `to` and syncs until both hold the same records.
async fn sync(from: &Peer, to: &Peer) -> Result<(), Box<dyn Error>> {
    let addr = to.node.listen_addrs().await?.remove(0);
    let id = from.node.dial(addr).await?;
    let r =
        tokio::time::timeout(std::time::Duration::from_secs(30), from.node.sync_now(id)).await??;
    println!(
        "  {} ⇄ {}: {} records sent, {} received, {} + {} bytes",
        from.name, to.name, r.records_sent, r.records_received, r.bytes_sent, r.bytes_received
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let hub = peer("hub", dir.path()).await?;
    let tablet = peer("tablet", dir.path()).await?;
    let laptop = peer("laptop", dir.path()).await?;
    for p in [&hub, &tablet, &laptop] {
        println!("{:>6}: peer {}", p.name, p.node.peer_id());
    }

    println!("1. the hub creates the site; both devices sync it");
    hub.replica.insert(
        "site",
        "s1",
        fields([
            ("name", Value::from("Pump station 7")),
            ("instructions", Value::Text("Gate code 4411.".into())),
        ]),
    )?;
    sync(&tablet, &hub).await?;
    sync(&laptop, &hub).await?;

    println!("2. offline edits on both devices");
    tablet
        .replica
        .update("site", "s1", fields([("note", Value::from("valve leaks"))]))?;
    tablet.replica.insert(
        "job",
        "t1",
        fields([
            ("site", Value::Ref("s1".into())),
            ("title", Value::from("Replace valve")),
        ]),
    )?;
    laptop.replica.update_with("site", "s1", |e| {
        e.increment("visits", 2)?;
        e.splice_text("instructions", 0, 0, "Call ahead. ")
    })?;
    laptop.replica.insert(
        "job",
        "l1",
        fields([
            ("site", Value::Ref("s1".into())),
            ("title", Value::from("Paint fence")),
        ]),
    )?;

    println!("3. each device syncs through the hub (the laptop never meets the tablet)");
    sync(&tablet, &hub).await?;
    sync(&laptop, &hub).await?;
    sync(&tablet, &hub).await?;

    println!("4. what each peer holds");
    let mut snapshots = Vec::new();
    for p in [&hub, &tablet, &laptop] {
        let s1 = p.replica.get("site", "s1")?.ok_or("the site is missing")?;
        let jobs = p.replica.list("job")?;
        let show = |k: &str| s1.fields.get(k).map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:>6}: site note \"{}\", visits {}, instructions \"{}\"; jobs {}",
            p.name,
            show("note"),
            show("visits"),
            show("instructions"),
            jobs.iter()
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        snapshots.push(snapshot(&p.replica)?);
    }
    let laptop_site = laptop.replica.get("site", "s1")?.ok_or("missing")?;
    let converged = snapshots.windows(2).all(|w| w[0] == w[1])
        && laptop_site.fields.get("note") == Some(&Value::from("valve leaks"))
        && laptop_site.fields.get("visits") == Some(&Value::Counter(2))
        && laptop.replica.get("job", "t1")?.is_some();
    if converged {
        println!(
            "OK: all three peers hold the same {} records",
            snapshots[0].len()
        );
        Ok(())
    } else {
        eprintln!("FAILED: the peers differ");
        std::process::exit(1);
    }
}
