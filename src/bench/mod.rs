//! Benchmark workloads, shared by the criterion benches (`benches/local.rs`) and
//! the `fieldsync bench` command, each measured against a raw baseline in the same
//! run (see `docs/benchmarks.md`).
//!
//! The baseline is what an application would write by hand with the same two
//! libraries and the same durability: an automerge document per record, saved
//! whole with `Automerge::save` and written to sled, flushed before the call
//! returns.

pub mod baseline;
pub mod conflicts;
pub mod net;
pub mod pending;
pub mod signing;
pub mod sync;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::schema::{Collection, FieldType};
use crate::{Config, Replica, Result, Value, fields};

/// The benchmark collection: 8 fields of mixed types.
pub const COLLECTION: &str = "item";

/// The benchmark collection's declaration.
pub fn collection() -> std::result::Result<Collection, crate::schema::SchemaError> {
    Collection::builder(COLLECTION)
        .required("name", FieldType::String)
        .field("code", FieldType::String)
        .field("qty", FieldType::Integer)
        .field("price", FieldType::Float)
        .field("active", FieldType::Boolean)
        .field("due", FieldType::Timestamp)
        .field("visits", FieldType::Counter)
        .field("site", FieldType::String)
        .build()
}

/// The 8 field values of record number `i`.
pub fn record(i: usize) -> crate::Fields {
    let i64v = i as i64;
    fields([
        ("name", Value::String(format!("item {i}"))),
        ("code", Value::String(format!("C-{:06}", i % 1_000_000))),
        ("qty", Value::Int(i64v % 97)),
        ("price", Value::Float(i as f64 * 0.25)),
        ("active", Value::Bool(i.is_multiple_of(2))),
        ("due", Value::Timestamp(1_790_000_000_000 + i64v)),
        ("visits", Value::Counter(0)),
        ("site", Value::String(format!("site-{}", i % 50))),
    ])
}

/// The 2-field patch applied to record `i` in update benchmarks.
pub fn patch(i: usize, round: usize) -> crate::Fields {
    fields([
        ("qty", Value::Int((i + round) as i64 % 89)),
        ("site", Value::String(format!("site-{}", (i + round) % 50))),
    ])
}

/// The id of record `i`.
pub fn id(i: usize) -> String {
    format!("rec{i:08}")
}

/// Open a replica for benchmarks in `dir` with the benchmark collection.
pub fn open(dir: &Path, durable: bool) -> Result<Replica> {
    let r = Replica::open(dir, Config::default().with_durable_writes(durable))?;
    r.define_collection(collection()?)?;
    Ok(r)
}

/// Insert records `range` with one durable transaction per `batch` records.
pub fn insert_batched(r: &Replica, range: std::ops::Range<usize>, batch: usize) -> Result<()> {
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch.max(1)) {
        r.transaction(|tx| {
            for &i in chunk {
                tx.insert(COLLECTION, &id(i), record(i))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Update records `range` (2 fields each) with one durable transaction per
/// `batch` records.
pub fn update_batched(
    r: &Replica,
    range: std::ops::Range<usize>,
    batch: usize,
    round: usize,
) -> Result<()> {
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch.max(1)) {
        r.transaction(|tx| {
            for &i in chunk {
                tx.update(COLLECTION, &id(i), patch(i, round))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// One workload measured against its baseline over several rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What was measured.
    pub name: String,
    /// Records written per round.
    pub ops: usize,
    /// fieldsync's records per second (median over rounds).
    pub fieldsync_per_sec: f64,
    /// The baseline's records per second (median over rounds).
    pub baseline_per_sec: f64,
    /// fieldsync's time divided by the baseline's, median over rounds (lower is
    /// better; below 1 is faster than the baseline).
    pub time_ratio: f64,
    /// The ratio of each round.
    pub round_ratios: Vec<f64>,
}

/// The time the in-memory benchmark syncs run at.
pub(crate) const NOW: u64 = 1_800_000_000_000;

/// A benchmark replica on a memory store with `config` (writes not flushed:
/// memory stores have no disk), the benchmark collection defined.
pub(crate) fn memory_replica(store: crate::store::MemoryStore, config: Config) -> Result<Replica> {
    let r = Replica::with_storage(
        std::sync::Arc::new(store),
        config.with_durable_writes(false),
    )?;
    r.define_collection(collection()?)?;
    Ok(r)
}

/// Replicas opened with `open` on fresh copies of two prepared stores, their
/// sync indexes built (once per process in real use, so not timed).
pub(crate) fn fresh_pair(
    a: &crate::store::MemoryStore,
    b: &crate::store::MemoryStore,
    open: impl Fn(crate::store::MemoryStore) -> Result<Replica>,
) -> Result<(Replica, Replica)> {
    let (a, b) = (open(a.deep_copy()?)?, open(b.deep_copy()?)?);
    a.with_sync_index(|_| ())?;
    b.with_sync_index(|_| ())?;
    Ok((a, b))
}

/// Sync `from` with `to` over the in-memory link; an error unless the sync
/// ends with both sides equal.
pub(crate) fn sync_to_end(from: &Replica, to: &Replica) -> Result<crate::sim::PairSync> {
    let s = crate::sim::sync_pair(from, to, NOW, None)?;
    if !s.synced {
        return Err(crate::Error::Import {
            collection: COLLECTION.into(),
            reason: "the benchmark sync did not finish".into(),
        });
    }
    Ok(s)
}

/// Time `f(true)` and `f(false)` alternately, `samples` times each; returns
/// the medians (ms) and the last `true` run's count.
pub(crate) fn alternate(
    samples: usize,
    mut f: impl FnMut(bool) -> Result<(f64, usize)>,
) -> Result<(f64, f64, usize)> {
    let (mut on, mut off, mut count) = (Vec::new(), Vec::new(), 0);
    for _ in 0..samples.max(1) {
        for variant in [true, false] {
            let (ms, n) = f(variant)?;
            if variant {
                count = n;
                on.push(ms);
            } else {
                off.push(ms);
            }
        }
    }
    Ok((median(on), median(off), count))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Default)]
struct Samples {
    fieldsync: Vec<Duration>,
    baseline: Vec<Duration>,
}

impl Samples {
    fn comparison(&self, name: String, ops: usize) -> Comparison {
        let per = |d: &Duration| ops as f64 / d.as_secs_f64().max(1e-9);
        let round_ratios: Vec<f64> = self
            .fieldsync
            .iter()
            .zip(&self.baseline)
            .map(|(f, b)| f.as_secs_f64() / b.as_secs_f64().max(1e-9))
            .collect();
        Comparison {
            name,
            ops,
            fieldsync_per_sec: median(self.fieldsync.iter().map(per).collect()),
            baseline_per_sec: median(self.baseline.iter().map(per).collect()),
            time_ratio: median(round_ratios.clone()),
            round_ratios,
        }
    }
}

/// Options of [`local`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Records written by the batched workloads.
    pub records: usize,
    /// Records per transaction (and per baseline flush) in the batched workloads.
    pub batch: usize,
    /// Records written one durable call at a time in the single workloads.
    pub single: usize,
    /// Rounds; each runs every workload on fresh stores, alternating which side
    /// goes first, and the report gives medians.
    pub rounds: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            records: 20_000,
            batch: 100,
            single: 300,
            rounds: 3,
        }
    }
}

/// The report of [`local`].
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    /// Records per batched workload.
    pub records: usize,
    /// Records per batch.
    pub batch: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// Each workload against its baseline.
    pub results: Vec<Comparison>,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// Run `fs` and `base` in the order given by `fs_first`, recording both times.
fn pair(
    samples: &mut Samples,
    fs_first: bool,
    fs: impl FnOnce() -> Result<()>,
    base: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if fs_first {
        samples.fieldsync.push(timed(fs)?.1);
        samples.baseline.push(timed(base)?.1);
    } else {
        samples.baseline.push(timed(base)?.1);
        samples.fieldsync.push(timed(fs)?.1);
    }
    Ok(())
}

/// Run the local write benchmarks in fresh subdirectories of `dir`.
///
/// Workloads: single durable inserts; batched inserts; batched updates of 2
/// fields with every document loaded on both sides ("hot"); and the same updates
/// after reopening both stores, so fieldsync loads documents into its default
/// cache of 1024 and the baseline loads each from sled ("cold").
pub fn local(dir: &Path, o: &LocalOptions) -> Result<LocalReport> {
    let mut single = Samples::default();
    let mut insert = Samples::default();
    let mut hot = Samples::default();
    let mut cold = Samples::default();
    for round in 0..o.rounds.max(1) {
        let rd = dir.join(format!("round{round}"));
        let first = round % 2 == 0;

        let r = open(&rd.join("fs-single"), true)?;
        let mut b = baseline::Baseline::open(&rd.join("base-single"))?;
        pair(
            &mut single,
            first,
            || (0..o.single).try_for_each(|i| r.insert(COLLECTION, &id(i), record(i)).map(drop)),
            || b.insert_batched(0..o.single, 1),
        )?;

        // Hot: fieldsync caches every document, as the baseline keeps them all.
        let fs_dir = rd.join("fs-batch");
        let hot_config = Config::default().with_cache_docs(o.records);
        let r = Replica::open(&fs_dir, hot_config)?;
        r.define_collection(collection()?)?;
        let mut b = baseline::Baseline::open(&rd.join("base-batch"))?;
        pair(
            &mut insert,
            first,
            || insert_batched(&r, 0..o.records, o.batch),
            || b.insert_batched(0..o.records, o.batch),
        )?;
        pair(
            &mut hot,
            first,
            || update_batched(&r, 0..o.records, o.batch, 1),
            || b.update_batched(0..o.records, o.batch, 1),
        )?;

        // Cold: reopen fieldsync with the default cache; the baseline forgets its
        // documents and loads each from sled.
        drop(r);
        let r = Replica::open(&fs_dir, Config::default())?;
        b.forget();
        pair(
            &mut cold,
            first,
            || update_batched(&r, 0..o.records, o.batch, 2),
            || b.update_batched(0..o.records, o.batch, 2),
        )?;
    }
    Ok(LocalReport {
        records: o.records,
        batch: o.batch,
        rounds: o.rounds.max(1),
        results: vec![
            single.comparison("insert, 1 record per durable write".into(), o.single),
            insert.comparison(
                format!("insert, {} records per durable write", o.batch),
                o.records,
            ),
            hot.comparison(
                format!(
                    "update 2 fields, {} per durable write, documents loaded (hot)",
                    o.batch
                ),
                o.records,
            ),
            cold.comparison(
                format!(
                    "update 2 fields, {} per durable write, loaded from disk (cold)",
                    o.batch
                ),
                o.records,
            ),
        ],
    })
}

/// The report of [`open_probe`].
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    /// Time to open the replica, in milliseconds.
    pub open_ms: f64,
    /// Resident memory of the process after opening, in MiB (Linux; 0 elsewhere).
    pub rss_mib: f64,
    /// Time to read one record after opening, in milliseconds.
    pub first_get_ms: f64,
    /// The store's size on disk, in MiB.
    pub disk_mib: f64,
}

/// Fill `dir` with `n` benchmark records (non-durable writes, one flush at the end).
pub fn fill(dir: &Path, n: usize) -> Result<()> {
    let r = open(dir, false)?;
    insert_batched(&r, 0..n, 1000)?;
    r.flush()
}

/// Open the store in `dir`, read one record, and report the cost. Meant to run in
/// a fresh process so the memory figure is the open's alone.
pub fn open_probe(dir: &Path) -> Result<OpenReport> {
    let (r, open) = timed(|| Replica::open(dir, Config::default()))?;
    let rss = rss_mib();
    let (_, get) = timed(|| r.get(COLLECTION, &id(0)))?;
    Ok(OpenReport {
        open_ms: open.as_secs_f64() * 1e3,
        rss_mib: rss,
        first_get_ms: get.as_secs_f64() * 1e3,
        disk_mib: r.size_on_disk()? as f64 / (1 << 20) as f64,
    })
}

/// This process's resident set size in MiB, from `/proc/self/status` (0 if unknown).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
