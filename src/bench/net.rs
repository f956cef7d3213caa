//! Network benchmarks (run by `fieldsync bench net`; figures in
//! `docs/benchmarks.md`):
//!
//! - **Live propagation latency** over 1 and 3 hops: four nodes in a chain on
//!   loopback (separate durable sled stores, live mode); a record written on the
//!   first node is timed until it is durable and visible on the second (1 hop)
//!   and on the fourth (3 hops). Baseline in the same run: the round trip of one
//!   byte over a plain loopback TCP connection, the floor any protocol pays.
//! - **Initial sync throughput** between two processes: a `fieldsync serve`
//!   child holding N records, and an empty durable store in this process that
//!   dials it and runs `sync_now`. Baseline in the same run, also between two
//!   processes: the same N records sent as their saved automerge bytes over a
//!   plain TCP stream, each loaded with `Automerge::load` and written to sled,
//!   flushed every 256 records (what an app would write by hand with the same
//!   libraries and no reconciliation).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::node::{Node, NodeConfig};
use crate::{Replica, WatchFilter};

/// A boxed error: benchmarks report any failure as text.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Latency percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was measured.
    pub what: String,
    /// Samples taken.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn of(what: &str, mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms.get(i).copied().unwrap_or(f64::NAN)
        };
        Self {
            what: what.to_owned(),
            samples: ms.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The latency benchmark's report.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// A write on node 0 visible on node 1.
    pub one_hop: Latency,
    /// The same write visible on node 3 (relayed by nodes 1 and 2).
    pub three_hops: Latency,
    /// Baseline: one byte's round trip over plain loopback TCP.
    pub tcp_round_trip: Latency,
}

/// Nodes in a chain on loopback, each with its own durable sled store, all in
/// live mode: node i dialed node i + 1.
pub struct Chain {
    replicas: Vec<Replica>,
    _nodes: Vec<Node>,
    arrivals: tokio::sync::mpsc::UnboundedReceiver<(usize, String, Instant)>,
    next: usize,
}

impl Chain {
    /// Start `len` (≥ 2) nodes in `dir`. Must run on a multi-threaded runtime.
    pub async fn start(dir: &Path, len: usize) -> Result<Self, BenchError> {
        let len = len.max(2);
        let mut replicas = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..len {
            let r = super::open(&dir.join(format!("chain{i}")), true)?;
            let config = NodeConfig::default().with_live(true);
            nodes.push(Node::start(r.clone(), config).await?);
            replicas.push(r);
        }
        for i in 0..len - 1 {
            let addr = nodes[i + 1]
                .listen_addrs()
                .await?
                .into_iter()
                .find(|a| a.to_string().contains("/tcp/"))
                .ok_or("no TCP address")?;
            nodes[i].dial(addr).await?;
        }
        let (tx, arrivals) = tokio::sync::mpsc::unbounded_channel();
        for hop in [1, len - 1] {
            let mut watch = replicas[hop].watch(WatchFilter::All);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(e) = watch.recv().await {
                    if tx.send((hop, e.id, Instant::now())).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            replicas,
            _nodes: nodes,
            arrivals,
            next: 0,
        })
    }

    /// Insert a record on the first node; the times until it is durable and
    /// visible on the second node and on the last.
    pub async fn write_and_wait(&mut self) -> Result<(Duration, Duration), BenchError> {
        let k = self.next;
        self.next += 1;
        let id = format!("lat{k:08}");
        let last = self.replicas.len() - 1;
        let start = Instant::now();
        self.replicas[0].insert(super::COLLECTION, &id, super::record(k))?;
        let (mut first, mut end) = (None, None);
        let deadline = start + Duration::from_secs(10);
        while first.is_none() || end.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.arrivals.recv()).await {
                Ok(Some((hop, got, at))) if got == id => {
                    if hop == 1 {
                        first = Some(at - start);
                    }
                    if hop == last {
                        end = Some(at - start);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err(format!("{id} did not arrive in 10 s").into()),
            }
        }
        Ok((first.unwrap_or_default(), end.unwrap_or_default()))
    }
}

/// Measure live propagation over a chain of four nodes with `samples` writes
/// (after 5 unmeasured ones). Must run on a multi-threaded tokio runtime.
pub async fn latency(dir: &Path, samples: usize) -> Result<LatencyReport, BenchError> {
    let mut chain = Chain::start(dir, 4).await?;
    let (mut one, mut three) = (Vec::new(), Vec::new());
    let warmup = 5;
    for k in 0..samples + warmup {
        let (t1, t3) = chain.write_and_wait().await?;
        if k >= warmup {
            one.push(t1.as_secs_f64() * 1e3);
            three.push(t3.as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rtt = tokio::task::spawn_blocking(move || tcp_round_trips(samples)).await??;
    Ok(LatencyReport {
        one_hop: Latency::of("write to visible, 1 hop", one),
        three_hops: Latency::of("write to visible, 3 hops", three),
        tcp_round_trip: Latency::of("1-byte TCP round trip on loopback", rtt),
    })
}

/// Baseline: `samples` round trips of one byte over a loopback TCP
/// connection, in milliseconds each.
pub fn tcp_round_trips(samples: usize) -> Result<Vec<f64>, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut out = Vec::with_capacity(samples);
    let mut b = [7u8; 1];
    for _ in 0..samples {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(s);
    echo.join().map_err(|_| "echo thread panicked")??;
    Ok(out)
}

/// One initial-sync measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// What was measured.
    pub what: String,
    /// Records moved.
    pub records: usize,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// Records per second.
    pub records_per_second: f64,
    /// Bytes received by the empty side.
    pub bytes: u64,
}

/// The initial-sync benchmark's report for one store size.
#[derive(Debug, Clone, Serialize)]
pub struct InitialReport {
    /// fieldsync: `sync_now` against a `fieldsync serve` process.
    pub fieldsync: Throughput,
    /// Baseline: saved automerge documents streamed over TCP into sled.
    pub baseline: Throughput,
}

/// Start `exe --store dir serve` and return it with its TCP address.
fn serve(exe: &Path, dir: &Path) -> Result<(Child, libp2p::Multiaddr), BenchError> {
    let mut child = std::process::Command::new(exe)
        .arg("--store")
        .arg(dir)
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let child = Child(child);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("serve printed {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Initial sync of `records` records between two processes, and the baseline.
/// `exe` is the `fieldsync` binary (the other process).
pub fn initial(exe: &Path, dir: &Path, records: usize) -> Result<InitialReport, BenchError> {
    let source = dir.join(format!("source{records}"));
    super::fill(&source, records)?;

    // fieldsync.
    let fieldsync = {
        let (_server, addr) = serve(exe, &source)?;
        let target = super::open(&dir.join(format!("target{records}")), true)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (report, seconds) = rt.block_on(async {
            let config = NodeConfig::default().listen_on([]).with_remembered(false);
            let node = Node::start(target.clone(), config).await?;
            let peer = node.dial(addr).await?;
            let t = Instant::now();
            let report = node.sync_now(peer).await?;
            Ok::<_, BenchError>((report, t.elapsed().as_secs_f64()))
        })?;
        check_count(&target, records)?;
        Throughput {
            what: "fieldsync sync_now from a serve process".into(),
            records,
            seconds,
            records_per_second: records as f64 / seconds,
            bytes: report.bytes_received,
        }
    };

    // Baseline: the serving side is a child process too.
    let baseline = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port().to_string();
        let _sender = Child(
            std::process::Command::new(exe)
                .args(["bench", "raw-send"])
                .arg(&source)
                .arg(&port)
                .arg(records.to_string())
                .stderr(std::process::Stdio::inherit())
                .spawn()?,
        );
        let db = sled::open(dir.join(format!("baseline{records}")))?;
        // Timed from the connection, as fieldsync is timed from its dial.
        let (stream, _) = listener.accept()?;
        let t = Instant::now();
        let mut stream = BufReader::with_capacity(1 << 16, stream);
        let mut bytes = 0u64;
        let mut n = 0;
        let mut len = [0u8; 4];
        while n < records {
            stream.read_exact(&mut len)?;
            let mut doc = vec![0u8; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut doc)?;
            bytes += 4 + doc.len() as u64;
            let loaded = automerge::Automerge::load(&doc)?;
            db.insert(super::id(n).as_bytes(), loaded.save())?;
            n += 1;
            if n % 256 == 0 {
                db.flush()?;
            }
        }
        db.flush()?;
        let seconds = t.elapsed().as_secs_f64();
        Throughput {
            what: "baseline: saved automerge documents over TCP, loaded and written to sled".into(),
            records,
            seconds,
            records_per_second: records as f64 / seconds,
            bytes,
        }
    };
    Ok(InitialReport {
        fieldsync,
        baseline,
    })
}

fn check_count(r: &Replica, records: usize) -> Result<(), BenchError> {
    for i in [0, records / 2, records.saturating_sub(1)] {
        if r.get(super::COLLECTION, &super::id(i))?.is_none() {
            return Err(format!("record {i} missing after the sync").into());
        }
    }
    Ok(())
}

/// The baseline's sending process: connect to 127.0.0.1:`port` and send the
/// first `records` records of the store in `dir` as length-prefixed saved
/// automerge documents.
pub fn raw_send(dir: &Path, port: u16, records: usize) -> Result<(), BenchError> {
    let r = Replica::open(dir, crate::Config::default())?;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stream);
    for i in 0..records {
        let doc = r.export(super::COLLECTION, &super::id(i))?;
        out.write_all(&(doc.len() as u32).to_be_bytes())?;
        out.write_all(&doc)?;
    }
    out.flush()?;
    Ok(())
}
