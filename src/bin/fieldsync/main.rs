//! `fieldsync`: the command-line tool for a fieldsync store.
//!
//! Human output by default, `--json` on every command; errors go to stderr with a
//! non-zero exit status. See `fieldsync --help`.

mod output;
mod parse;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fieldsync::schema::Schema;
use fieldsync::{Config, Fields, Replica, Scan};

/// Replicate records between peers, offline first.
#[derive(Parser)]
#[command(name = "fieldsync", version, about)]
struct Cli {
    /// The store directory.
    #[arg(long, global = true, env = "FIELDSYNC_STORE")]
    store: Option<PathBuf>,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (or add collections to one) from an optional schema file.
    Init {
        /// A TOML schema file (format in docs/schema.md).
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Show the store's collections and fields.
    Schema,
    /// Write a record: insert it if new, otherwise update the fields given.
    Put {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// Field values as `field=value` (lists: `a,b,c` or a JSON array).
        #[arg(value_name = "FIELD=VALUE")]
        values: Vec<String>,
    },
    /// Read a record.
    Get {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// List a collection's records.
    List {
        /// The collection.
        collection: String,
        /// Only records whose field equals the value (repeatable).
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        filters: Vec<String>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Include deleted records.
        #[arg(long)]
        deleted: bool,
    },
    /// Delete a record (a tombstone that replicates).
    Delete {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// Write a record as automerge bytes.
    Export {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// The output file (default: standard output, unless it is a terminal).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import automerge bytes as a record (merged if it exists).
    Import {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// The file holding the automerge bytes.
        file: PathBuf,
    },
    /// Show this store's peer id (its identity is made on first use).
    Id,
    /// Listen for peers and answer their syncs until interrupted. Prints
    /// `listening on ADDR` (with `/p2p/PEER_ID`) for each address.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: String,
        /// A peer to connect to at start (repeatable).
        #[arg(long)]
        peer: Vec<String>,
        /// Live mode: sync with each peer as it connects and offer every change
        /// at once. Without it (manual mode) this node only answers peers.
        #[arg(long)]
        live: bool,
    },
    /// Connect to a peer, sync until both hold the same records, print what
    /// moved, and exit.
    Sync {
        /// The peer's address (as printed by `serve`).
        #[arg(long)]
        peer: String,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Manage the group's members (once there is one, only members may sync).
    Members {
        #[command(subcommand)]
        action: Members,
    },
    /// Run benchmarks and print their figures as JSON.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Members {
    /// Add a member (or change its role).
    Add {
        /// Its peer id (as printed by `fieldsync id`).
        peer: String,
        /// `authority` or `device`.
        #[arg(long, default_value = "device")]
        role: String,
    },
    /// List the members and their roles.
    List,
    /// Remove a member.
    Remove {
        /// Its peer id.
        peer: String,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Write throughput against raw automerge + sled, in a temporary directory.
    Local {
        /// Records written by the batched workloads.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Records per durable transaction.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Records written one durable call at a time.
        #[arg(long, default_value_t = 300)]
        single: usize,
        /// Rounds (the report gives medians).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Open time and memory of a large store (filled first if empty).
    Open {
        /// How many records the store holds.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// The store directory (kept between runs; default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Sync against automerge's per-document sync over every document: equal
    /// stores, a few changed records in a small and a large store, an initial sync.
    Sync {
        /// Records in the two equal stores.
        #[arg(long, default_value_t = 100_000)]
        unchanged: usize,
        /// Records changed on one side.
        #[arg(long, default_value_t = 100)]
        changed: usize,
        /// The smaller store for the changed-records case.
        #[arg(long, default_value_t = 10_000)]
        small: usize,
        /// The larger store for the changed-records case.
        #[arg(long, default_value_t = 1_000_000)]
        large: usize,
        /// Records in the initial sync.
        #[arg(long, default_value_t = 100_000)]
        initial: usize,
    },
    /// Open a store and report (run by `bench open` in a fresh process).
    #[command(hide = true)]
    OpenProbe {
        /// The store directory.
        dir: PathBuf,
    },
}

/// A CLI failure: the message printed on stderr.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            if json {
                eprintln!("{}", serde_json::json!({ "error": msg }));
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

fn store_dir(cli: &Cli) -> Result<&Path, Failure> {
    cli.store
        .as_deref()
        .ok_or_else(|| Failure("no store given: pass --store DIR (or set FIELDSYNC_STORE)".into()))
}

/// Open an existing store (every command but `init` refuses to create one).
fn open_existing(cli: &Cli) -> Result<Replica, Failure> {
    let dir = store_dir(cli)?;
    if !dir.join("db").exists() {
        return Err(Failure(format!(
            "no fieldsync store at {} (create one with `fieldsync --store {} init`)",
            dir.display(),
            dir.display()
        )));
    }
    Ok(Replica::open(dir, Config::default())?)
}

fn run(cli: Cli) -> CliResult {
    let json = cli.json;
    match &cli.command {
        Command::Init { schema } => {
            let dir = store_dir(&cli)?;
            let mut config = Config::default();
            if let Some(path) = schema {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
                config = config.with_schema(Schema::from_toml(&text)?);
            }
            let r = Replica::open(dir, config)?;
            output::init(json, dir, &r);
        }
        Command::Schema => output::schema(json, &open_existing(&cli)?.schema()),
        Command::Put {
            collection,
            id,
            values,
        } => {
            let r = open_existing(&cli)?;
            let schema = r.schema();
            let c = schema.collection(collection)?;
            let fields: Fields = values
                .iter()
                .map(|kv| parse::assignment(c, kv))
                .collect::<Result<_, _>>()?;
            let exists = r.get(collection, id)?.is_some();
            let w = if exists {
                r.update(collection, id, fields)?
            } else {
                r.insert(collection, id, fields)?
            };
            output::written(json, if exists { "updated" } else { "inserted" }, &w);
        }
        Command::Get { collection, id } => {
            let r = open_existing(&cli)?;
            match r.get(collection, id)? {
                Some(rec) => output::record(json, &rec),
                None => {
                    return Err(Failure(format!(
                        "no record `{id}` in collection `{collection}`"
                    )));
                }
            }
        }
        Command::List {
            collection,
            filters,
            limit,
            deleted,
        } => {
            let r = open_existing(&cli)?;
            let schema = r.schema();
            let c = schema.collection(collection)?;
            let mut scan = Scan::new(collection);
            for kv in filters {
                let (field, value) = parse::assignment(c, kv)?;
                scan = scan.with_eq(&field, value);
            }
            if let Some(n) = limit {
                scan = scan.with_limit(*n);
            }
            if *deleted {
                scan = scan.with_deleted();
            }
            output::records(json, &r.scan(&scan)?);
        }
        Command::Delete { collection, id } => {
            let w = open_existing(&cli)?.delete(collection, id)?;
            output::written(json, "deleted", &w);
        }
        Command::Export {
            collection,
            id,
            out,
        } => {
            let bytes = open_existing(&cli)?.export(collection, id)?;
            match out {
                Some(path) => {
                    std::fs::write(path, &bytes)
                        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
                    output::exported(json, path, bytes.len());
                }
                None if std::io::stdout().is_terminal() => {
                    return Err(Failure("refusing to write binary automerge bytes to a terminal: pass --out FILE or redirect".into()));
                }
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        Command::Import {
            collection,
            id,
            file,
        } => {
            let bytes = std::fs::read(file)
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))?;
            let w = open_existing(&cli)?.import(collection, id, &bytes)?;
            output::written(json, "imported", &w);
        }
        Command::Bench { which } => bench(which)?,
        Command::Id => {
            let dir = store_dir(&cli)?;
            open_existing(&cli)?;
            let key = fieldsync::node::identity::load_or_create(dir)?;
            let id = key.public().to_peer_id();
            if json {
                println!("{}", serde_json::json!({ "peer_id": id.to_string() }));
            } else {
                println!("{id}");
            }
        }
        Command::Serve { listen, peer, live } => serve(&cli, listen, peer, *live)?,
        Command::Members { action } => {
            let r = open_existing(&cli)?;
            match action {
                Members::Add { peer, role } => {
                    let role: fieldsync::Role = role.parse().map_err(Failure)?;
                    peer.parse::<libp2p::PeerId>()
                        .map_err(|e| Failure(format!("not a peer id: {peer}: {e}")))?;
                    r.add_member(peer, role)?;
                }
                Members::Remove { peer } => {
                    if !r.remove_member(peer)? {
                        return Err(Failure(format!("{peer} is not a member")));
                    }
                }
                Members::List => {
                    let members = r.members()?;
                    if json {
                        let list: Vec<_> = members
                            .iter()
                            .map(|(p, role)| serde_json::json!({ "peer": p, "role": role }))
                            .collect();
                        println!("{}", serde_json::Value::Array(list));
                    } else {
                        for (p, role) in members {
                            println!("{p} {role}");
                        }
                    }
                }
            }
        }
        Command::Sync { peer, timeout } => sync(&cli, peer, *timeout)?,
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))
}

fn multiaddr(text: &str) -> Result<libp2p::Multiaddr, Failure> {
    text.parse()
        .map_err(|e| Failure(format!("not a multiaddr: {text}: {e}")))
}

fn serve(cli: &Cli, listen: &str, peers: &[String], live: bool) -> CliResult {
    let dir = store_dir(cli)?;
    let replica = open_existing(cli)?;
    let key = fieldsync::node::identity::load_or_create(dir)?;
    let listen = multiaddr(listen)?;
    let peers = peers
        .iter()
        .map(|p| multiaddr(p))
        .collect::<Result<Vec<_>, _>>()?;
    runtime()?.block_on(async {
        let node = fieldsync::node::Node::start(replica, key, listen).await?;
        node.set_live(live)?;
        for p in peers {
            match node.dial(p.clone()).await {
                Ok(id) => eprintln!("connected to {id} at {p}"),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        for addr in node.listen_addrs().await? {
            let full = format!("{addr}/p2p/{}", node.peer_id());
            if cli.json {
                println!("{}", serde_json::json!({ "listening": full }));
            } else {
                println!("listening on {full}");
            }
        }
        std::io::stdout().flush()?;
        // Serve until interrupted (Ctrl-C, or the process is stopped).
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn sync(cli: &Cli, peer: &str, timeout: u64) -> CliResult {
    let dir = store_dir(cli)?;
    let replica = open_existing(cli)?;
    let key = fieldsync::node::identity::load_or_create(dir)?;
    let addr = multiaddr(peer)?;
    let limit = std::time::Duration::from_secs(timeout);
    runtime()?.block_on(async {
        let node =
            fieldsync::node::Node::start(replica, key, multiaddr("/ip4/127.0.0.1/tcp/0")?).await?;
        let work = async {
            let id = node.dial(addr).await?;
            node.sync_now(id).await
        };
        let report = tokio::time::timeout(limit, work)
            .await
            .map_err(|_| Failure(format!("sync with {peer} did not finish in {timeout} s")))??;
        if cli.json {
            println!(
                "{}",
                serde_json::json!({
                    "records_sent": report.records_sent,
                    "records_received": report.records_received,
                    "bytes_sent": report.bytes_sent,
                    "bytes_received": report.bytes_received,
                    "rounds": report.rounds,
                    "millis": report.elapsed_ms,
                })
            );
        } else {
            println!(
                "synced with {peer}: {} records sent, {} received; {} bytes sent, {} received; {} ms",
                report.records_sent,
                report.records_received,
                report.bytes_sent,
                report.bytes_received,
                report.elapsed_ms
            );
        }
        Ok(())
    })
}

fn bench(which: &Bench) -> CliResult {
    match which {
        Bench::Local {
            records,
            batch,
            single,
            rounds,
        } => {
            let tmp = tempfile::tempdir()?;
            let opts = fieldsync::bench::LocalOptions {
                records: *records,
                batch: *batch,
                single: *single,
                rounds: *rounds,
            };
            let report = fieldsync::bench::local(tmp.path(), &opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Bench::Sync {
            unchanged,
            changed,
            small,
            large,
            initial,
        } => {
            use fieldsync::bench::sync as b;
            let progress = |what: &str| eprintln!("bench sync: {what}");
            progress(&format!("unchanged, {unchanged} records"));
            let a = b::unchanged(*unchanged)?;
            progress(&format!("{changed} changed of {small}"));
            let small_case = b::changed(*small, *changed)?;
            progress(&format!("{changed} changed of {large}"));
            let large_case = b::changed(*large, *changed)?;
            progress(&format!("initial, {initial} records"));
            let c = b::initial(*initial)?;
            let bytes = |w: &b::Wire| (w.bytes_out + w.bytes_in) as f64;
            let report = serde_json::json!({
                "cases": [&a, &small_case, &large_case, &c],
                "checks": {
                    "a_unchanged_round_trips": a.fieldsync.round_trips,
                    "a_unchanged_bytes_each_way": [a.fieldsync.bytes_out, a.fieldsync.bytes_in],
                    "b_time_growth_small_to_large": large_case.fieldsync.millis / small_case.fieldsync.millis,
                    "b_bytes_growth_small_to_large": bytes(&large_case.fieldsync) / bytes(&small_case.fieldsync),
                    "c_wire_over_saved": bytes(&c.fieldsync) / c.saved_bytes.unwrap_or(1).max(1) as f64,
                },
                "rss_mib": fieldsync::bench::rss_mib(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Bench::Open { records, dir } => {
            let tmp;
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().to_path_buf()
                }
            };
            let filled = dir.join("db").exists() && {
                let r = fieldsync::bench::open(&dir, false)?;
                r.get(
                    fieldsync::bench::COLLECTION,
                    &fieldsync::bench::id(records.saturating_sub(1)),
                )?
                .is_some()
            };
            let fill_secs = if !filled {
                let t = std::time::Instant::now();
                fieldsync::bench::fill(&dir, *records)?;
                t.elapsed().as_secs_f64()
            } else {
                0.0
            };
            let exe = std::env::current_exe()?;
            let out = std::process::Command::new(exe)
                .args(["bench", "open-probe"])
                .arg(&dir)
                .output()?;
            if !out.status.success() {
                return Err(Failure(format!(
                    "probe failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            let probe: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let report = serde_json::json!({
                "records": records,
                "fill_seconds": fill_secs,
                "probe": probe,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Bench::OpenProbe { dir } => {
            let report = fieldsync::bench::open_probe(dir)?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
