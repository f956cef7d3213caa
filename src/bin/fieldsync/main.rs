//! `fieldsync`: the command-line tool for a fieldsync store.
//!
//! Human output by default, `--json` on every command; errors go to stderr with a
//! non-zero exit status. See `fieldsync --help`.

mod conflicts;
mod control;
mod group;
mod output;
mod parse;
mod pending;

use output::outln;

/// mimalloc instead of the system allocator: automerge documents are many
/// small allocations, and glibc's malloc and free took ~45% of the time of an
/// initial sync (see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fieldsync::schema::Schema;
use fieldsync::{Config, Fields, Replica, Scan};
use serde::{Deserialize, Serialize};

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
    /// Show more: change heads, logical clock counters.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Serialize, Deserialize)]
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
        /// Include records hidden because an authority rejected them (or
        /// their parent), with the reasons.
        #[arg(long)]
        rejected: bool,
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
    /// Show this store's peer id (its identity is made on first use) and, while
    /// `serve` runs on the store, its listen addresses and connected peers.
    Id,
    /// Listen for peers and answer their syncs until interrupted. Prints
    /// `listening on ADDR` (with `/p2p/PEER_ID`) for each address. While it
    /// runs, the other commands on this store go through its control socket
    /// (`control.sock` in the store directory).
    Serve {
        /// Address to listen on, TCP (`/ip4/0.0.0.0/tcp/4001`) or QUIC
        /// (`/ip4/0.0.0.0/udp/4001/quic-v1`); repeatable; port 0 picks a free one.
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: Vec<String>,
        /// A peer to connect to at start (repeatable). It is remembered and
        /// redialed, with backoff, whenever the connection drops.
        #[arg(long)]
        peer: Vec<String>,
        /// Find peers on the local network by mDNS and connect to them.
        #[arg(long)]
        mdns: bool,
        /// Live mode: sync with each live peer as it connects and offer it
        /// every change at once.
        #[arg(long, conflicts_with = "manual")]
        live: bool,
        /// Manual mode (the default): this node starts no sync and takes no
        /// pushed change until told to (`fieldsync sync`); it answers the
        /// syncs other peers start.
        #[arg(long)]
        manual: bool,
        /// A reactions file: programs this node runs when synced data
        /// matches (format in docs/pending.md). Default: `reactions.toml` in
        /// the store directory, if there is one.
        #[arg(long)]
        reactions: Option<PathBuf>,
    },
    /// Sync until both sides hold the same records, print what moved, and exit.
    /// With `--peer`: that peer. Without: every connected peer when `serve`
    /// runs on the store, otherwise every remembered peer.
    Sync {
        /// The peer's address (as printed by `serve`).
        #[arg(long)]
        peer: Option<String>,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// The conflict list: list, show side by side, resolve, assign.
    Conflicts {
        #[command(subcommand)]
        action: conflicts::Conflicts,
    },
    /// Pending events: every local write not yet confirmed (list, cancel,
    /// dismiss).
    Pending {
        #[command(subcommand)]
        action: Option<pending::Pending>,
    },
    /// The sync state: pending events by status, open conflicts, blocked
    /// collections, and (while `serve` runs) each peer's connection and sync.
    Status,
    /// The group's members: add, remove, list (admins add and remove; the
    /// list replicates). Without a subcommand: the list.
    Members {
        #[command(subcommand)]
        action: Option<group::Members>,
    },
    /// The group: found one (this store is its root), join one, define roles,
    /// show it (see docs/security.md).
    Group {
        #[command(subcommand)]
        action: group::Group,
    },
    /// Manage the group secret (`swarm.key` in the store directory): with one,
    /// the node speaks only to peers holding the same secret.
    Secret {
        #[command(subcommand)]
        action: Secret,
    },
    /// Run benchmarks and print their figures as JSON.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand, Serialize, Deserialize)]
enum Secret {
    /// Make a new random secret for this store and print it (copy the printed
    /// text to the other members' stores with `secret import`).
    New,
    /// Use the secret in FILE (libp2p's swarm.key format).
    Import {
        /// The key file.
        file: PathBuf,
    },
    /// Remove the store's secret.
    Remove,
}

#[derive(Subcommand, Serialize, Deserialize)]
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
    /// Conflict detection: a merge of `records` records, `concurrent` of
    /// them edited on both sides, with detection against the same merge with
    /// detection off (see docs/benchmarks.md).
    Conflicts {
        /// Records in each store (the device changes all of them).
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Records the authority changes concurrently.
        #[arg(long, default_value_t = 1_000)]
        concurrent: usize,
        /// Merges of each variant (alternated); the report gives medians.
        #[arg(long, default_value_t = 7)]
        samples: usize,
    },
    /// Pending events: a sync of offline updates with an authority, and
    /// local writes, each with events against events off (see
    /// docs/benchmarks.md).
    Pending {
        /// Records changed offline on the device.
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Runs of each variant (alternated); the report gives medians.
        #[arg(long, default_value_t = 7)]
        samples: usize,
    },
    /// Signed changes: an initial sync (seals sent, verified, stored) and
    /// writes (each transaction's changes sealed), against signing off (see
    /// docs/benchmarks.md).
    Signing {
        /// Records synced and written.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Records written per transaction (changes are sealed 256 to a seal
        /// when they first leave the replica, whatever transactions made them).
        #[arg(long, default_value_t = 1000)]
        per_tx: usize,
        /// Runs of each variant (alternated); the report gives medians.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
    /// Network: live propagation latency over 1 and 3 hops (four nodes on
    /// loopback), and initial sync throughput between two processes, each
    /// against its baseline (see docs/benchmarks.md).
    Net {
        /// Writes timed for the latency figures.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Store sizes for the initial sync (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000])]
        records: Vec<usize>,
    },
    /// The baseline's sending process (run by `bench net`).
    #[command(hide = true)]
    RawSend {
        /// The source store.
        dir: PathBuf,
        /// The loopback port to send to.
        port: u16,
        /// How many records.
        records: usize,
    },
    /// Open a store and report (run by `bench open` in a fresh process).
    #[command(hide = true)]
    OpenProbe {
        /// The store directory.
        dir: PathBuf,
    },
}

/// A CLI failure: the message printed on stderr.
pub(crate) struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs warnings (refused records, clocks off, peers refused); a
    // one-shot command reports its outcome itself, so only errors are
    // logged unless -v asks for more.
    let level = match (&cli.command, cli.verbose) {
        (_, true) => tracing::Level::INFO,
        (Command::Serve { .. }, false) => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let json = cli.json;
    let binary = matches!(cli.command, Command::Export { out: None, .. });
    let mut out = Vec::new();
    let result = dispatch(cli, &mut out);
    if json && !binary {
        out = output::js_safe_lines(&out);
    }
    let mut stdout = std::io::stdout();
    let written = stdout.write_all(&out).and_then(|()| stdout.flush());
    match result.and(written.map_err(Failure::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            let msg = with_hint(msg);
            if json {
                eprintln!("{}", serde_json::json!({ "error": msg }));
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The replica's configuration: the defaults, with the wall clock moved by
/// `FIELDSYNC_CLOCK_SKEW_MS` milliseconds when that is set (to try, or test,
/// a device whose clock is wrong; see docs/conflicts.md, "Clocks").
fn config() -> Config {
    let skew: i64 = std::env::var("FIELDSYNC_CLOCK_SKEW_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if skew == 0 {
        return Config::default();
    }
    Config::default().with_clock(move || {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        u64::try_from(wall.saturating_add(skew)).unwrap_or(0)
    })
}

/// An error with what to do next, for the errors people meet most.
fn with_hint(msg: String) -> String {
    let hint = if msg.starts_with("unknown collection") || msg.starts_with("unknown field") {
        " (`fieldsync schema` shows the collections and their fields)"
    } else if msg.starts_with("forbidden:") {
        " (`fieldsync members` shows the group's admins)"
    } else if msg.contains("is blocked:") && !msg.contains("fieldsync conflicts") {
        " (`fieldsync conflicts list --open`, then `fieldsync conflicts resolve ID --keep SIDE`)"
    } else {
        ""
    };
    format!("{msg}{hint}")
}

/// Run a command: through the control socket of a `serve` running on the
/// store if there is one, here otherwise.
fn dispatch(mut cli: Cli, out: &mut Vec<u8>) -> CliResult {
    if let Command::Export { out: None, .. } = &cli.command
        && std::io::stdout().is_terminal()
    {
        return Err(Failure(
            "refusing to write binary automerge bytes to a terminal: pass --out FILE or redirect"
                .into(),
        ));
    }
    if let (Command::Init { .. }, Some(dir)) = (&cli.command, &cli.store)
        && control::connect(dir).is_some()
    {
        return Err(Failure(
            "the store is being served; stop `fieldsync serve` to change its schema".into(),
        ));
    }
    if let Some(dir) = cli.store.clone()
        && control::forwarded(&cli.command)
        && let Some(stream) = control::connect(&dir)
    {
        // The server runs elsewhere: name files by absolute paths.
        match &mut cli.command {
            Command::Import { file, .. } => *file = std::path::absolute(&*file)?,
            Command::Export { out: Some(f), .. } => *f = std::path::absolute(&*f)?,
            _ => {}
        }
        let request = control::Request {
            json: cli.json,
            verbose: cli.verbose,
            command: cli.command,
        };
        return control::forward(stream, &request, out);
    }
    let ctx = Ctx {
        dir: cli.store.as_deref(),
        json: cli.json,
        verbose: cli.verbose,
        served: None,
    };
    run(&ctx, &cli.command, out)
}

/// What a command runs against.
pub(crate) struct Ctx<'a> {
    dir: Option<&'a Path>,
    json: bool,
    /// Show heads and logical clock counters.
    verbose: bool,
    /// The running node, when the command came through `serve`'s control socket.
    served: Option<&'a control::Served>,
}

impl Ctx<'_> {
    fn dir(&self) -> Result<&Path, Failure> {
        self.dir.ok_or_else(|| {
            Failure("no store given: pass --store DIR (or set FIELDSYNC_STORE)".into())
        })
    }

    /// The store directory, which must hold a store (every command but `init`
    /// refuses to create one).
    fn store_dir(&self) -> Result<&Path, Failure> {
        let dir = self.dir()?;
        if !dir.join("db").exists() {
            return Err(Failure(format!(
                "no fieldsync store at {} (create one with `fieldsync --store {} init`)",
                dir.display(),
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// How this command prints.
    fn view<'r>(&self, replica: &'r Replica) -> output::View<'r> {
        output::View {
            json: self.json,
            verbose: self.verbose,
            replica,
        }
    }

    /// The store's replica: the served one, or the store opened here (every
    /// command but `init` refuses to create a store).
    fn replica(&self) -> Result<Replica, Failure> {
        if let Some(s) = self.served {
            return Ok(s.replica.clone());
        }
        let dir = self.store_dir()?;
        Replica::open(dir, config()).map_err(|e| match e {
            fieldsync::Error::Store(fieldsync::store::StoreError::Locked { .. }) => Failure(format!(
                "{e} (another process, such as `fieldsync serve`, has the store open; while `serve` runs, commands go through it)"
            )),
            other => Failure(other.to_string()),
        })
    }
}

pub(crate) fn run(ctx: &Ctx, command: &Command, out: &mut Vec<u8>) -> CliResult {
    let json = ctx.json;
    match command {
        Command::Init { schema } => {
            if ctx.served.is_some() {
                return Err(Failure(
                    "the store is being served; stop `fieldsync serve` to change its schema".into(),
                ));
            }
            let dir = ctx.dir()?;
            let mut config = config();
            if let Some(path) = schema {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
                config = config.with_schema(Schema::from_toml(&text)?);
            }
            let r = Replica::open(dir, config)?;
            output::init(out, json, dir, &r);
        }
        Command::Schema => output::schema(out, json, &ctx.replica()?.schema()),
        Command::Put {
            collection,
            id,
            values,
        } => {
            let r = ctx.replica()?;
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
            ctx.view(&r)
                .written(out, if exists { "updated" } else { "inserted" }, &w);
        }
        Command::Get { collection, id } => {
            let r = ctx.replica()?;
            match r.get(collection, id)? {
                Some(rec) => ctx.view(&r).record(out, &rec),
                None => {
                    return Err(Failure(format!(
                        "no record `{id}` in collection `{collection}` (`fieldsync list {collection}` lists them)"
                    )));
                }
            }
        }
        Command::List {
            collection,
            filters,
            limit,
            deleted,
            rejected,
        } => {
            let r = ctx.replica()?;
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
            if *rejected {
                scan = scan.with_rejected();
            }
            ctx.view(&r).records(out, &r.scan(&scan)?);
        }
        Command::Delete { collection, id } => {
            let r = ctx.replica()?;
            let w = r.delete(collection, id)?;
            ctx.view(&r).written(out, "deleted", &w);
        }
        Command::Export {
            collection,
            id,
            out: file,
        } => {
            let bytes = ctx.replica()?.export(collection, id)?;
            match file {
                Some(path) => {
                    std::fs::write(path, &bytes)
                        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
                    output::exported(out, json, path, bytes.len());
                }
                None => out.extend_from_slice(&bytes),
            }
        }
        Command::Import {
            collection,
            id,
            file,
        } => {
            let bytes = std::fs::read(file)
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))?;
            let r = ctx.replica()?;
            let w = r.import(collection, id, &bytes)?;
            ctx.view(&r).written(out, "imported", &w);
        }
        Command::Bench { which } => bench(which)?,
        Command::Id => id(ctx, out)?,
        Command::Serve {
            listen,
            peer,
            mdns,
            live,
            manual: _,
            reactions,
        } => {
            if ctx.served.is_some() {
                return Err(Failure("the store is already being served".into()));
            }
            serve(ctx, listen, peer, *mdns, *live, reactions.as_deref())?
        }
        Command::Members { action } => {
            group::members(ctx, action.as_ref().unwrap_or(&group::Members::List), out)?
        }
        Command::Group { action } => group::run(ctx, action, out)?,
        Command::Conflicts { action } => conflicts::run(ctx, action, out)?,
        Command::Pending { action } => pending::run(ctx, action.as_ref(), out)?,
        Command::Status => pending::status(ctx, out)?,
        Command::Secret { action } => secret(ctx, action, out)?,
        Command::Sync { peer, timeout } => sync(ctx, peer.as_deref(), *timeout, out)?,
    }
    Ok(())
}

fn secret(ctx: &Ctx, action: &Secret, out: &mut Vec<u8>) -> CliResult {
    use fieldsync::node::identity;
    let dir = ctx.store_dir()?;
    match action {
        Secret::New => {
            let key = identity::new_secret();
            identity::save_secret(dir, key)?;
            out.extend_from_slice(key.to_key_file().as_bytes());
        }
        Secret::Import { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))?;
            let key = identity::parse_secret(&text).map_err(Failure)?;
            identity::save_secret(dir, key)?;
            outln!(out, "group secret set (fingerprint {})", key.fingerprint());
        }
        Secret::Remove => {
            let path = dir.join(identity::SECRET_FILE);
            std::fs::remove_file(&path)
                .map_err(|e| Failure(format!("cannot remove {}: {e}", path.display())))?;
            outln!(out, "group secret removed");
        }
    }
    if ctx.served.is_none() && control::connect(dir).is_some() {
        eprintln!("note: restart `fieldsync serve` on this store to use the change");
    }
    Ok(())
}

fn id(ctx: &Ctx, out: &mut Vec<u8>) -> CliResult {
    let (peer, addrs, peers) = match ctx.served {
        Some(s) => {
            let (addrs, peers) = s.rt.block_on(async {
                Ok::<_, Failure>((s.node.listen_addrs().await?, s.node.peers().await?))
            })?;
            (s.node.peer_id(), addrs, peers)
        }
        None => {
            let r = ctx.replica()?;
            let member = fieldsync::member::member_id(r.actor().to_bytes())
                .ok_or_else(|| Failure("the store's actor is not a key".into()))?;
            let peer: libp2p::PeerId = member
                .parse()
                .map_err(|e| Failure(format!("the store's member id does not parse: {e}")))?;
            (peer, Vec::new(), Vec::new())
        }
    };
    if ctx.json {
        let peers: Vec<_> = peers
            .iter()
            .map(|p| {
                serde_json::json!({ "peer": p.peer.to_string(), "connected": p.connected,
                "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "listening": p.listening.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "agent": p.agent })
            })
            .collect();
        outln!(
            out,
            "{}",
            serde_json::json!({
                "peer_id": peer.to_string(),
                "listening": addrs.iter().map(|a| format!("{a}/p2p/{peer}")).collect::<Vec<_>>(),
                "peers": peers,
            })
        );
    } else {
        outln!(out, "{peer}");
        for a in addrs {
            outln!(out, "listening on {a}/p2p/{peer}");
        }
        for p in peers {
            let state = if p.connected {
                "connected"
            } else {
                "not connected"
            };
            outln!(out, "peer {} {state}", p.peer);
        }
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
    text.parse().map_err(|_| {
        Failure(format!(
            "`{text}` is not a peer address: give one as `fieldsync serve` prints it, such as /ip4/192.168.1.10/tcp/4001/p2p/12D3KooW…"
        ))
    })
}

fn serve(
    ctx: &Ctx,
    listen: &[String],
    peers: &[String],
    mdns: bool,
    live: bool,
    reactions: Option<&Path>,
) -> CliResult {
    use fieldsync::node::{Node, NodeConfig, identity};
    let dir = ctx.dir()?;
    let replica = ctx.replica()?;
    // Reactions a person attached: registered before the node takes any
    // change, run from their queue on a thread of their own.
    let default_file = dir.join("reactions.toml");
    let file = reactions
        .map(Path::to_path_buf)
        .or_else(|| default_file.exists().then_some(default_file));
    let mut loaded = Vec::new();
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        let found = fieldsync::reactions_from_toml(&text, &replica.schema())
            .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
        // Programs run in the file's directory (its relative paths work).
        let base = std::path::absolute(path)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for r in found {
            loaded.push(format!("reaction {}: {}", r.name(), r.describe()));
            replica.add_reaction(r.in_dir(&base))?;
        }
    }
    let _runner = (!loaded.is_empty()).then(|| replica.spawn_reaction_runner());
    let mut config = NodeConfig::default()
        .listen_on(
            listen
                .iter()
                .map(|a| multiaddr(a))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .with_mdns(mdns)
        .with_live(live)
        .with_group_secret(identity::load_secret(dir)?);
    for p in peers {
        config = config.with_peer(multiaddr(p)?);
    }
    let rt = runtime()?;
    rt.block_on(async {
        let node = Node::start(replica.clone(), config).await?;
        let addrs = node.listen_addrs().await?;
        // The control socket is up before the addresses are printed, so a
        // script that waits for them can use the other commands at once.
        let served = control::Served {
            replica,
            node: node.clone(),
            rt: tokio::runtime::Handle::current(),
        };
        let socket = control::listen(dir, served)?;
        // Everything about the start on one stream (standard output), best
        // effort: a script that reads the first line and closes the pipe
        // must not stop the node.
        let mut stdout = std::io::stdout();
        for addr in addrs {
            let full = format!("{addr}/p2p/{}", node.peer_id());
            if ctx.json {
                let _ = writeln!(stdout, "{}", serde_json::json!({ "listening": full }));
            } else {
                let _ = writeln!(stdout, "listening on {full}");
            }
        }
        let mode = if live {
            "live: syncs with live peers as they connect and sends every change at once"
        } else {
            "manual: moves nothing on its own and takes no pushed change until `fieldsync sync`; answers the syncs peers start"
        };
        if ctx.json {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::json!({ "control_socket": socket.display().to_string(), "live": live, "reactions": loaded })
            );
        } else {
            let _ = writeln!(stdout, "control socket at {}", socket.display());
            for l in &loaded {
                let _ = writeln!(stdout, "{l}");
            }
            let _ = writeln!(stdout, "mode {mode}");
        }
        // Best effort: a reader that stops after the first line (a script
        // waiting for the address) must not stop the node.
        let _ = stdout.flush();
        // Serve until interrupted (Ctrl-C, or the process is stopped).
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn report_json(peer: &libp2p::PeerId, r: &fieldsync::sync::Report) -> serde_json::Value {
    serde_json::json!({
        "peer": peer.to_string(),
        "records_sent": r.records_sent,
        "records_received": r.records_received,
        "bytes_sent": r.bytes_sent,
        "bytes_received": r.bytes_received,
        "messages_sent": r.messages_sent,
        "messages_received": r.messages_received,
        "rounds": r.rounds,
        "millis": r.elapsed_ms,
        "clock_offset_ms": r.clock.map(|c| c.offset_ms),
        "not_synced": r.issues.iter().map(|i| serde_json::json!({
            "record": format!("{}/{}", i.key.collection, i.key.id),
            "by_peer": i.by_peer,
            "too_large": i.too_large,
            "reason": i.reason,
        })).collect::<Vec<_>>(),
    })
}

fn report_line(out: &mut Vec<u8>, peer: &libp2p::PeerId, r: &fieldsync::sync::Report) {
    outln!(
        out,
        "synced with {peer}: {} records sent, {} received; {} bytes sent, {} received; {} ms",
        r.records_sent,
        r.records_received,
        r.bytes_sent,
        r.bytes_received,
        r.elapsed_ms
    );
    if let Some(c) = r.clock
        && c.offset_ms.abs() > 1000
    {
        outln!(
            out,
            "  note: its clock is {} ms {} than this store's; save times are corrected for conflicts, but check the clocks",
            c.offset_ms.unsigned_abs(),
            if c.offset_ms > 0 { "ahead" } else { "behind" }
        );
    }
}

/// `sync`: with one peer (dialed), or with every connected peer of a running
/// `serve`, or with every remembered peer.
fn sync(ctx: &Ctx, peer: Option<&str>, timeout: u64, out: &mut Vec<u8>) -> CliResult {
    use fieldsync::node::{Node, NodeConfig, identity};
    let addr = peer.map(multiaddr).transpose()?;
    let limit = std::time::Duration::from_secs(timeout);
    let work = |node: Node, remembered: Vec<(String, Vec<String>)>| async move {
        match addr {
            Some(addr) => {
                let id = node.dial(addr).await?;
                let report = node.sync_now(id).await?;
                Ok::<_, Failure>(vec![(id, Ok(report))])
            }
            None => {
                // A one-shot node dials the remembered peers itself (a served
                // node is connected to them already).
                for (p, addrs) in remembered {
                    for a in addrs {
                        let Ok(a) = a.parse() else { continue };
                        match node.dial(a).await {
                            Ok(_) => break,
                            Err(e) => eprintln!("warning: {p}: {e}"),
                        }
                    }
                }
                let all = node.sync_all().await?;
                if all.is_empty() {
                    return Err(Failure(
                        "no peer to sync with: pass --peer ADDR (or connect `serve` to peers)"
                            .into(),
                    ));
                }
                Ok(all)
            }
        }
    };
    // A progress bar on a terminal (not with --json).
    let bar = (!ctx.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} syncing: {pos}/{len} records, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let draw = |node: &Node| {
        let bar = bar.clone();
        let mut rx = node.progress();
        async move {
            let Some(bar) = bar else { return };
            while let Ok(p) = rx.recv().await {
                bar.set_length(p.progress.records_total);
                bar.set_position(p.progress.records_done);
                bar.set_message(format!("{} bytes", p.progress.bytes));
            }
        }
    };
    let results = match ctx.served {
        Some(s) => s.rt.block_on(async {
            let drawing = tokio::spawn(draw(&s.node));
            let r = tokio::time::timeout(limit, work(s.node.clone(), Vec::new())).await;
            drawing.abort();
            r
        }),
        None => {
            let dir = ctx.dir()?;
            let replica = ctx.replica()?;
            let remembered = if peer.is_none() {
                replica.addresses()?
            } else {
                Vec::new()
            };
            let config = NodeConfig::default()
                .listen_on([])
                .with_remembered(false)
                .with_group_secret(identity::load_secret(dir)?);
            runtime()?.block_on(async {
                let node = Node::start(replica, config).await?;
                let drawing = tokio::spawn(draw(&node));
                let r = tokio::time::timeout(limit, work(node.clone(), remembered)).await;
                drawing.abort();
                // Closed before the runtime ends, so nothing of it runs
                // while the runtime shuts down.
                node.shutdown().await?;
                Ok::<_, Failure>(r)
            })?
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let what = peer.unwrap_or("the peers");
    let results = results
        .map_err(|_| Failure(format!("sync with {what} did not finish in {timeout} s")))??;
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    for (p, r) in &results {
        match r {
            Ok(r) => reports.push((p, r)),
            Err(e) => {
                let next = match e {
                    fieldsync::node::NodeError::Blocked { .. } => {
                        "; resolve them (`fieldsync conflicts list --open`, then `fieldsync conflicts resolve ID --keep SIDE`) and sync again"
                    }
                    _ => "",
                };
                failed.push(format!("{e}{next}"));
            }
        }
    }
    if ctx.json {
        let list: Vec<_> = reports.iter().map(|(p, r)| report_json(p, r)).collect();
        match (peer, list.as_slice()) {
            (Some(_), [one]) => outln!(out, "{one}"),
            _ => outln!(
                out,
                "{}",
                serde_json::json!({ "peers": list, "failed": failed })
            ),
        }
    } else {
        for (p, r) in &reports {
            report_line(out, p, r);
        }
    }
    match (peer, failed.is_empty()) {
        (_, true) => Ok(()),
        (Some(_), false) => Err(Failure(failed.join("; "))),
        (None, false) => Err(Failure(format!("sync failed with {}", failed.join("; ")))),
    }
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
        Bench::Net { samples, records } => {
            use fieldsync::bench::net;
            let tmp = tempfile::tempdir()?;
            eprintln!("bench net: latency, {samples} writes over a chain of 4 nodes");
            let latency = runtime()?
                .block_on(net::latency(tmp.path(), *samples))
                .map_err(Failure::from)?;
            let exe = std::env::current_exe()?;
            let mut initial = Vec::new();
            for n in records {
                eprintln!("bench net: initial sync of {n} records between two processes");
                initial.push(net::initial(&exe, tmp.path(), *n).map_err(Failure::from)?);
            }
            let report = serde_json::json!({
                "latency": latency,
                "initial_sync": initial,
                "checks": {
                    "p50_3_hops_ms": latency.three_hops.p50_ms,
                    "records_per_second": initial.iter().map(|i| (i.fieldsync.records, i.fieldsync.records_per_second.round())).collect::<Vec<_>>(),
                },
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Bench::Conflicts {
            records,
            concurrent,
            samples,
        } => {
            eprintln!(
                "bench conflicts: {records} records, {concurrent} edited on both sides, {samples} samples"
            );
            let report = fieldsync::bench::conflicts::run(*records, *concurrent, *samples)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Bench::Pending { records, samples } => {
            eprintln!("bench pending: {records} records, {samples} samples");
            let report = fieldsync::bench::pending::run(*records, *samples)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Bench::Signing {
            records,
            per_tx,
            samples,
        } => {
            eprintln!(
                "bench signing: {records} records, {per_tx} per transaction, {samples} samples"
            );
            let report = fieldsync::bench::signing::run(*records, *per_tx, *samples)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Bench::RawSend { dir, port, records } => {
            fieldsync::bench::net::raw_send(dir, *port, *records).map_err(Failure::from)?;
        }
        Bench::OpenProbe { dir } => {
            let report = fieldsync::bench::open_probe(dir)?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
