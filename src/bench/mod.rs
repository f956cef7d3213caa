//! Benchmark workloads, shared by the criterion benches (`benches/local.rs`) and
//! the `fieldsync bench` command, each measured against a raw baseline in the same
//! run (see `docs/benchmarks.md`).
//!
//! The baseline is what an application would write by hand with the same two
//! libraries and the same durability: an automerge document per record, saved
//! whole with `Automerge::save` and written to sled, flushed before the call
//! returns.

pub mod baseline;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::schema::{Collection, FieldType};
use crate::{Config, Replica, Result, Value, fields};

/// The benchmark collection: 8 fields of mixed types.
pub const COLLECTION: &str = "item";

/// The benchmark collection's declaration.
pub fn collection() -> Collection {
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
        .unwrap_or_else(|e| panic!("the benchmark collection is valid: {e}"))
}

/// The 8 field values of record number `i`.
pub fn record(i: usize) -> crate::Fields {
    let i64v = i as i64;
    fields([
        ("name", Value::String(format!("item {i}"))),
        ("code", Value::String(format!("C-{:06}", i % 1_000_000))),
        ("qty", Value::Int(i64v % 97)),
        ("price", Value::Float(i as f64 * 0.25)),
        ("active", Value::Bool(i % 2 == 0)),
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
    r.define_collection(collection())?;
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

/// One measured comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What was measured.
    pub name: String,
    /// Operations (records written) per run.
    pub ops: usize,
    /// fieldsync's records per second.
    pub fieldsync_per_sec: f64,
    /// The baseline's records per second.
    pub baseline_per_sec: f64,
    /// fieldsync's time divided by the baseline's (lower is better; < 1 is faster).
    pub time_ratio: f64,
}

fn compare(name: &str, ops: usize, fs: Duration, base: Duration) -> Comparison {
    let per = |d: Duration| ops as f64 / d.as_secs_f64().max(1e-9);
    Comparison {
        name: name.into(),
        ops,
        fieldsync_per_sec: per(fs),
        baseline_per_sec: per(base),
        time_ratio: fs.as_secs_f64() / base.as_secs_f64().max(1e-9),
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
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            records: 20_000,
            batch: 100,
            single: 300,
        }
    }
}

/// The report of [`local`].
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    /// The options used.
    pub records: usize,
    /// Records per batch.
    pub batch: usize,
    /// Each workload against its baseline.
    pub results: Vec<Comparison>,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// Run the local write benchmarks in fresh subdirectories of `dir`.
pub fn local(dir: &Path, o: &LocalOptions) -> Result<LocalReport> {
    let mut results = Vec::new();

    // Single durable writes.
    let r = open(&dir.join("fs-single"), true)?;
    let ((), fs) = timed(|| {
        (0..o.single).try_for_each(|i| r.insert(COLLECTION, &id(i), record(i)).map(drop))
    })?;
    let mut b = baseline::Baseline::open(&dir.join("base-single"))?;
    let ((), base) = timed(|| b.insert_batched(0..o.single, 1))?;
    results.push(compare(
        "insert, 1 record per durable write",
        o.single,
        fs,
        base,
    ));

    // Batched inserts, then batched updates of the same records.
    let r = open(&dir.join("fs-batch"), true)?;
    let ((), fs) = timed(|| insert_batched(&r, 0..o.records, o.batch))?;
    let mut b = baseline::Baseline::open(&dir.join("base-batch"))?;
    let ((), base) = timed(|| b.insert_batched(0..o.records, o.batch))?;
    results.push(compare(
        &format!("insert, {} records per durable write", o.batch),
        o.records,
        fs,
        base,
    ));

    let ((), fs) = timed(|| update_batched(&r, 0..o.records, o.batch, 1))?;
    let ((), base) = timed(|| b.update_batched(0..o.records, o.batch, 1))?;
    results.push(compare(
        &format!("update 2 fields, {} records per durable write", o.batch),
        o.records,
        fs,
        base,
    ));

    Ok(LocalReport {
        records: o.records,
        batch: o.batch,
        results,
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
