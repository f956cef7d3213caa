//! Two replicas syncing over real libp2p connections on 127.0.0.1.

use std::time::Duration;

use fieldsync::node::Node;
use fieldsync::{Config, Replica, Value, fields};
use libp2p::identity::Keypair;

fn replica(dir: &std::path::Path) -> Replica {
    let schema = fieldsync::schema::Schema::new()
        .with(fieldsync::sim::collection())
        .expect("schema");
    Replica::open(dir, Config::default().with_schema(schema)).expect("opens")
}

fn item(title: &str) -> fieldsync::Fields {
    fields([("title", Value::from(title))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sync_over_libp2p_on_loopback() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    for i in 0..200 {
        a.insert("item", &format!("a{i}"), item("from a")).unwrap();
    }
    b.insert("item", "b0", item("from b")).unwrap();
    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let na = Node::start(a.clone(), Keypair::generate_ed25519(), loopback.clone())
        .await
        .unwrap();
    let nb = Node::start(b.clone(), Keypair::generate_ed25519(), loopback)
        .await
        .unwrap();
    let addr = na.listen_addrs().await.unwrap().remove(0);
    let peer = tokio::time::timeout(Duration::from_secs(10), nb.dial(addr))
        .await
        .expect("dial in time")
        .expect("dial");
    assert_eq!(peer, na.peer_id());
    let report = tokio::time::timeout(Duration::from_secs(30), nb.sync_now(peer))
        .await
        .expect("sync in time")
        .expect("sync");
    assert_eq!(report.records_received, 200);
    assert_eq!(report.records_sent, 1);
    assert_eq!(b.list("item").unwrap().len(), 201);
    assert_eq!(a.list("item").unwrap().len(), 201);
    // A second sync moves no record.
    let again = nb.sync_now(peer).await.unwrap();
    assert_eq!((again.records_sent, again.records_received), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(
        replica(d.path()),
        Keypair::generate_ed25519(),
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    )
    .await
    .unwrap();
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        n.dial(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()),
    )
    .await
    .expect("fails in time")
    .unwrap_err();
    assert!(e.to_string().contains("could not reach"), "{e}");
}
