//! Live propagation over libp2p on loopback: a write on the first of four
//! chained nodes until it is durable and visible on the fourth (3 hops),
//! against the baseline of one byte's round trip over plain loopback TCP.
//! `fieldsync bench net` reports percentiles and the two-process initial sync
//! (see `docs/benchmarks.md`).
//!
//! `cargo bench --bench net`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::io::{Read, Write};

use fieldsync::bench::net::Chain;

fn net(c: &mut Criterion) {
    let mut g = c.benchmark_group("live");
    g.sample_size(50).measurement_time(Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut chain = rt.block_on(Chain::start(dir.path(), 4)).expect("chain");
    g.bench_function(
        BenchmarkId::new("write_to_visible_3_hops", "fieldsync"),
        |b| b.iter(|| rt.block_on(chain.write_and_wait()).expect("propagates")),
    );
    // The baseline: one byte echoed over a connection kept open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
        }
    });
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    g.bench_function(
        BenchmarkId::new("write_to_visible_3_hops", "baseline_tcp_rtt"),
        |b| {
            b.iter(|| {
                let mut byte = [7u8; 1];
                s.write_all(&byte).expect("write");
                s.read_exact(&mut byte).expect("read");
            })
        },
    );
    g.finish();
}

criterion_group!(benches, net);
criterion_main!(benches);
