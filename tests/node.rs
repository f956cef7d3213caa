//! Two replicas syncing over real libp2p connections on 127.0.0.1.

use std::time::Duration;

use fieldsync::node::{Node, NodeConfig};
use fieldsync::{Config, Replica, Value, fields};
use libp2p::identity::Keypair;

fn replica(dir: &std::path::Path) -> Replica {
    let schema = fieldsync::sim::default_schema();
    Replica::open(dir, Config::default().with_schema(schema)).expect("opens")
}

/// The peer id of a store's node (its identity is the store's key).
fn peer_of(r: &Replica) -> libp2p::PeerId {
    fieldsync::member::member_id(r.actor().to_bytes())
        .unwrap()
        .parse()
        .unwrap()
}

fn item(title: &str) -> fieldsync::Fields {
    fields([("title", Value::from(title))])
}

/// A node for `r` (with the store's identity), listening on a free loopback
/// port.
async fn start(r: &Replica) -> Node {
    start_with(r, NodeConfig::default().listen_on([tcp()])).await
}

fn tcp() -> libp2p::Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

async fn start_with(r: &Replica, config: NodeConfig) -> Node {
    Node::start(r.clone(), config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sync_over_libp2p_on_loopback() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    for i in 0..200 {
        a.insert("item", &format!("a{i}"), item("from a")).unwrap();
    }
    b.insert("item", "b0", item("from b")).unwrap();
    let na = start(&a).await;
    let nb = start(&b).await;
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
    // A learned, through identify, where B listens and what it runs, though B
    // dialed it.
    let b_addr = nb.listen_addrs().await.unwrap().remove(0);
    let mut seen = None;
    for _ in 0..100 {
        let peers = na.peers().await.unwrap();
        seen = peers.into_iter().find(|p| p.peer == nb.peer_id());
        if seen.as_ref().is_some_and(|p| p.agent.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("A lists B");
    assert!(seen.connected);
    assert_eq!(
        seen.agent.as_deref(),
        Some(concat!("fieldsync/", env!("CARGO_PKG_VERSION")))
    );
    assert!(seen.listening.contains(&b_addr), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let n = start(&replica(d.path())).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_refused_before_any_record_moves() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [hub, member, stranger] = [0, 1, 2].map(|i| replica(dirs[i].path()));
    hub.insert("item", "h1", item("hub data")).unwrap();
    stranger
        .insert("item", "s1", item("stranger data"))
        .unwrap();
    hub.found_group().unwrap();
    hub.add_member(&peer_of(&member).to_string(), fieldsync::Role::Device)
        .unwrap();
    let nh = start(&hub).await;
    let nm = start(&member).await;
    let ns = start(&stranger).await;
    let addr = nh.listen_addrs().await.unwrap().remove(0);

    // The stranger connects, but the hub closes the connection at once and
    // takes nothing from it.
    let peer = tokio::time::timeout(Duration::from_secs(10), ns.dial(addr.clone()))
        .await
        .expect("dial settles in time");
    if let Ok(peer) = peer {
        let r = tokio::time::timeout(Duration::from_secs(10), ns.sync_now(peer))
            .await
            .expect("sync settles in time");
        let e = r.expect_err("the hub must not sync with a stranger");
        assert!(
            e.to_string().contains("does not count") && e.to_string().contains("member"),
            "the stranger is told why: {e}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hub.get("item", "s1").unwrap().is_none(),
        "nothing of the stranger's data is stored"
    );
    assert!(
        stranger.get("item", "h1").unwrap().is_none(),
        "nothing of the hub's data leaked"
    );

    // The member syncs.
    let peer = nm.dial(addr).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), nm.sync_now(peer))
        .await
        .unwrap()
        .unwrap();
    // The hub's record, and the group's membership.
    assert!(report.records_received >= 1, "{report:?}");
    assert!(member.get("item", "h1").unwrap().is_some());
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_moves_changes_at_once_and_manual_mode_waits_for_sync_now() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    let na = start(&a).await;
    let nb = start(&b).await;
    let peer = nb
        .dial(na.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();

    // Manual (the default): nothing moves until sync_now.
    a.insert("item", "m1", item("manual")).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        b.get("item", "m1").unwrap().is_none(),
        "manual mode moved a record"
    );
    nb.sync_now(peer).await.unwrap();
    assert!(b.get("item", "m1").unwrap().is_some());

    // Live on both: each change reaches the other side on its own, both ways.
    na.set_live(true).unwrap();
    nb.set_live(true).unwrap();
    a.insert("item", "l1", item("live from a")).unwrap();
    assert!(
        eventually(|| b.get("item", "l1").unwrap().is_some()).await,
        "a's change did not arrive"
    );
    b.update("item", "l1", fields([("note", Value::from("seen by b"))]))
        .unwrap();
    assert!(
        eventually(|| a.get("item", "l1").unwrap().unwrap().fields.get("note")
            == Some(&Value::from("seen by b")))
        .await,
        "b's change did not arrive"
    );

    // Switched back to manual while running: nothing moves again.
    na.set_live(false).unwrap();
    nb.set_live(false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.insert("item", "m2", item("manual again")).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.get("item", "m2").unwrap().is_none());
}

#[test]
fn a_new_store_uses_its_identity_as_its_automerge_actor() {
    let d = tempfile::tempdir().unwrap();
    let r = replica(d.path());
    let key = fieldsync::node::identity::load_or_create(d.path()).unwrap();
    let peer = key.public().to_peer_id();
    assert_eq!(
        fieldsync::node::identity::actor_of(&peer).as_ref(),
        Some(r.actor())
    );
    // Every change carries it, so a change traces back to the member's peer id.
    let w = r.insert("item", "x", item("t")).unwrap();
    let rec = r.get("item", &w.id).unwrap().unwrap();
    assert_eq!(&rec.meta.author, r.actor());
    drop(r);
    // Reopening keeps both.
    let r = replica(d.path());
    assert_eq!(
        fieldsync::node::identity::actor_of(&peer).as_ref(),
        Some(r.actor())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_a_peer_that_never_met_its_author_through_a_relay() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = [0, 1, 2].map(|i| replica(dirs[i].path()));
    let mut nodes = Vec::new();
    for r in [&a, &b, &c] {
        let n = start(r).await;
        n.set_live(true).unwrap();
        nodes.push(n);
    }
    let hub = nodes[1].listen_addrs().await.unwrap().remove(0);
    nodes[0].dial(hub.clone()).await.unwrap();
    nodes[2].dial(hub).await.unwrap();
    a.insert("item", "from-a", item("relayed")).unwrap();
    assert!(
        eventually(|| c.get("item", "from-a").unwrap().is_some()).await,
        "A's record did not reach C through B"
    );
    c.update("item", "from-a", fields([("qty", Value::Int(7))]))
        .unwrap();
    assert!(
        eventually(
            || a.get("item", "from-a").unwrap().unwrap().fields.get("qty") == Some(&Value::Int(7))
        )
        .await,
        "C's edit did not reach A through B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_peer_is_redialed_after_its_listener_restarts() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    let quick =
        |c: NodeConfig| c.with_redial(Duration::from_millis(100), Duration::from_millis(400));
    let na = start_with(&a, quick(NodeConfig::default().listen_on([tcp()]))).await;
    let addr = na.listen_addrs().await.unwrap().remove(0);
    let nb = start_with(
        &b,
        quick(NodeConfig::default().listen_on([tcp()]).with_live(true)),
    )
    .await;
    let peer = nb.add_peer(addr.clone()).await.unwrap();
    assert_eq!(peer, na.peer_id());
    // The address is kept in B's store, without the peer id suffix.
    assert_eq!(
        b.addresses().unwrap(),
        vec![(peer.to_string(), vec![addr.to_string()])]
    );

    // A stops: B sees the peer disconnected.
    drop(na);
    let mut down = false;
    for _ in 0..100 {
        if nb.peers().await.unwrap().iter().all(|p| !p.connected) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "B still shows A connected after A stopped");
    // B keeps trying while A is away (several failed dials, with backoff)...
    tokio::time::sleep(Duration::from_millis(600)).await;

    // ...and A comes back on the same address, in live mode: B reconnects by
    // itself, and a change made on A afterwards reaches B.
    let na = start_with(
        &a,
        NodeConfig::default()
            .listen_on([addr.clone()])
            .with_live(true),
    )
    .await;
    assert_eq!(na.listen_addrs().await.unwrap(), vec![addr.clone()]);
    a.insert("item", "after-restart", item("back")).unwrap();
    assert!(
        eventually(|| b.get("item", "after-restart").unwrap().is_some()).await,
        "B did not reconnect to A after A's restart"
    );

    // B itself restarts: it dials A at start, from its store, untold.
    drop(nb);
    let nb = start_with(&b, NodeConfig::default().listen_on([tcp()]).with_live(true)).await;
    a.insert("item", "after-b-restart", item("again")).unwrap();
    assert!(
        eventually(|| b.get("item", "after-b-restart").unwrap().is_some()).await,
        "B did not dial its remembered peer at start"
    );
    // Forgotten: no longer kept.
    nb.forget_peer(peer).unwrap();
    assert!(
        eventually(|| b.addresses().unwrap().is_empty()).await,
        "the address was not forgotten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_holding_the_group_secret_can_connect() {
    use fieldsync::node::identity::new_secret;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [hub, member, other_group, open] = [0, 1, 2, 3].map(|i| replica(dirs[i].path()));
    hub.insert("item", "h1", item("secret data")).unwrap();
    let secret = new_secret();
    let with = |s| {
        NodeConfig::default()
            .listen_on([tcp()])
            .with_group_secret(s)
    };
    let nh = start_with(&hub, with(Some(secret))).await;
    let addr = nh.listen_addrs().await.unwrap().remove(0);
    for (r, s) in [(&other_group, Some(new_secret())), (&open, None)] {
        let n = start_with(r, with(s)).await;
        // A peer without the secret may only fail at the 10 s handshake
        // timeout; the test waits longer than that.
        let e = tokio::time::timeout(Duration::from_secs(30), n.dial(addr.clone()))
            .await
            .expect("settles in time");
        assert!(e.is_err(), "a peer without the secret connected: {e:?}");
        assert!(r.get("item", "h1").unwrap().is_none());
    }
    let n = start_with(&member, with(Some(secret))).await;
    let peer = n.dial(addr).await.unwrap();
    let report = n.sync_now(peer).await.unwrap();
    // The hub's record, and the group's membership.
    assert!(report.records_received >= 1, "{report:?}");
    assert!(member.get("item", "h1").unwrap().is_some());
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sync_over_quic() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    a.insert("item", "q1", item("over quic")).unwrap();
    let quic: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let na = start_with(&a, NodeConfig::default().listen_on([quic.clone()])).await;
    let nb = start_with(&b, NodeConfig::default().listen_on([quic])).await;
    let addr = na.listen_addrs().await.unwrap().remove(0);
    assert!(addr.to_string().contains("/quic-v1"), "{addr}");
    let peer = nb.dial(addr).await.unwrap();
    let report = nb.sync_now(peer).await.unwrap();
    assert_eq!(report.records_received, 1);
    assert!(b.get("item", "q1").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_all_syncs_with_every_connected_peer_and_reports_each() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [hub, x, y] = [0, 1, 2].map(|i| replica(dirs[i].path()));
    x.insert("item", "x1", item("from x")).unwrap();
    y.insert("item", "y1", item("from y")).unwrap();
    y.insert("item", "y2", item("from y")).unwrap();
    let nh = start(&hub).await;
    let nx = start(&x).await;
    let ny = start(&y).await;
    let px = nh
        .dial(nx.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    let py = nh
        .dial(ny.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    let mut results = tokio::time::timeout(Duration::from_secs(30), nh.sync_all())
        .await
        .unwrap()
        .unwrap();
    results.sort_by_key(|(p, _)| *p);
    let mut expected = vec![(px, 1), (py, 2)];
    expected.sort();
    let got: Vec<_> = results
        .iter()
        .map(|(p, r)| (*p, r.as_ref().expect("synced").records_received))
        .collect();
    assert_eq!(got, expected);
    assert!(
        results
            .iter()
            .all(|(_, r)| r.as_ref().unwrap().bytes_received > 0)
    );
    assert_eq!(hub.list("item").unwrap().len(), 3);
}

/// A hostile peer on a real libp2p connection: it speaks the sync protocol's
/// framing but sends garbage, a message of another version, a truncated
/// message, and a message naming an unknown collection. The node survives,
/// stores nothing of it, and keeps syncing with a good peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_crash_a_node_or_store_anything() {
    use libp2p::futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::{StreamProtocol, noise, tcp, yamux};

    let (dv, dg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (victim, good) = (replica(dv.path()), replica(dg.path()));
    victim.insert("item", "v1", item("victim's")).unwrap();
    let nv = start(&victim).await;
    let addr = nv.listen_addrs().await.unwrap().remove(0);

    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<fieldsync::node::SyncCodec>::new(
                [(
                    StreamProtocol::new(fieldsync::node::PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    swarm.dial(addr.clone()).unwrap();
    let victim_id = nv.peer_id();
    let mut valid = fieldsync::sync::msg::encode_refusal("x");
    valid[0] = b'Y'; // a sync message tag on a refusal's body: malformed
    let attacks: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe, 0xef],
        vec![b'Y', 99, 1, 2, 3],         // another protocol version
        vec![b'Y', 1, 0xff, 0xff, 0xff], // truncated
        valid,
        Vec::new(),
    ];
    let mut sent = false;
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answered < attacks.len() && tokio::time::Instant::now() < deadline {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some()).await;
        let Ok(event) = event else { break };
        match event {
            libp2p::swarm::SwarmEvent::ConnectionEstablished { peer_id, .. } if !sent => {
                assert_eq!(peer_id, victim_id);
                for a in &attacks {
                    swarm.behaviour_mut().send_request(&peer_id, a.clone());
                }
                sent = true;
            }
            libp2p::swarm::SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { .. },
                ..
            })
            | libp2p::swarm::SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                ..
            }) => answered += 1,
            _ => {}
        }
    }
    assert!(sent, "the hostile peer never connected");
    drop(swarm);

    // The victim stored nothing new and still serves a good peer.
    assert_eq!(victim.list("item").unwrap().len(), 1);
    let ng = start(&good).await;
    let peer = ng.dial(addr).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), ng.sync_now(peer))
        .await
        .expect("sync in time")
        .expect("the victim still syncs");
    assert_eq!(report.records_received, 1);
    assert!(good.get("item", "v1").unwrap().is_some());
}

/// A counting TCP proxy on loopback: forwards every connection to `target`
/// and counts them.
fn counting_proxy(
    target: std::net::SocketAddr,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let Ok(outbound) = std::net::TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                (outbound, inbound),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_peer_that_refuses_is_redialed_with_growing_backoff() {
    use std::sync::atomic::Ordering;
    let (dh, dd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, device) = (replica(dh.path()), replica(dd.path()));
    // The hub's group has one member, and it is not this device.
    let other = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    hub.found_group().unwrap();
    hub.add_member(&other, fieldsync::Role::Device).unwrap();
    let nh = start(&hub).await;
    let addr = nh.listen_addrs().await.unwrap().remove(0);
    let Some(libp2p::multiaddr::Protocol::Tcp(port)) = addr.iter().nth(1) else {
        panic!("not a TCP address: {addr}")
    };
    let (proxy, connections) = counting_proxy(([127, 0, 0, 1], port).into());
    let quick = NodeConfig::default()
        .listen_on([tcp()])
        .with_redial(Duration::from_millis(100), Duration::from_secs(60));
    let nd = start_with(&device, quick).await;
    let via_proxy: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{proxy}").parse().unwrap();
    // The first connection comes up (the device counts the hub as reachable),
    // then the hub refuses it.
    let peer = nd.add_peer(via_proxy).await.unwrap();
    let e = nd.sync_now(peer).await.expect_err("refused");
    assert!(e.to_string().contains("as a member of its group"), "{e}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Redials at about 0.1, 0.3, 0.7, 1.5, 3.1 s (plus each refusal's round
    // trip): a handful. Without backoff it would be one every 0.1–0.25 s.
    let n = connections.load(Ordering::SeqCst);
    eprintln!("{n} connections in 4 s");
    assert!((2..=7).contains(&n), "{n} connections in 4 s");
    assert!(device.get("item", "anything").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_over_libp2p_is_decided_the_same_on_both_peers() {
    use fieldsync::Role;
    use fieldsync::conflict::{ConflictFilter, Kind, ResolvedBy};
    use fieldsync::node::identity;
    let (dh, dd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, dev) = (replica(dh.path()), replica(dd.path()));
    let (kh, kd) = (
        identity::load_or_create(dh.path()).unwrap(),
        identity::load_or_create(dd.path()).unwrap(),
    );
    let (ph, _) = (kh.public().to_peer_id(), kd.public().to_peer_id());
    let _ = Role::Device;
    fieldsync::sim::authority_group(&hub, &[&dev], 0).unwrap();
    hub.insert("item", "x", item("pump")).unwrap();
    let (nh, nd) = (start(&hub).await, start(&dev).await);
    let addr = nh.listen_addrs().await.unwrap().remove(0);
    nd.dial(addr).await.unwrap();
    nd.sync_now(ph).await.unwrap();
    // Both nodes are in manual mode (the default): the edits below are
    // concurrent until the next sync.
    hub.update("item", "x", fields([("note", Value::from("hub"))]))
        .unwrap();
    dev.update("item", "x", fields([("note", Value::from("device"))]))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), nd.sync_now(ph))
        .await
        .expect("in time")
        .unwrap();
    let entries = hub.conflicts(&ConflictFilter::all()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, Kind::ConcurrentEdit);
    assert_eq!(
        entries[0].resolved_by,
        Some(ResolvedBy::Policy(fieldsync::schema::Policy::ServerWins))
    );
    assert!(
        entries[0].others[0].authority,
        "the hub's change, by its peer id"
    );
    assert_eq!(dev.conflicts(&ConflictFilter::all()).unwrap(), entries);
    for r in [&hub, &dev] {
        assert_eq!(
            r.get("item", "x").unwrap().unwrap().fields["note"],
            Value::from("hub")
        );
    }
}

/// Three sled stores with node identities: a hub (authority), a relay and a
/// device; every peer lists all three as members.
fn trio_with_identities() -> (Vec<tempfile::TempDir>, Vec<Replica>, Vec<Keypair>) {
    use fieldsync::Role;
    use fieldsync::node::identity;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let rs: Vec<Replica> = dirs.iter().map(|d| replica(d.path())).collect();
    let keys: Vec<Keypair> = dirs
        .iter()
        .map(|d| identity::load_or_create(d.path()).unwrap())
        .collect();
    let _ = Role::Device;
    fieldsync::sim::authority_group(&rs[0], &[&rs[1], &rs[2]], 0).unwrap();
    (dirs, rs, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_reaches_the_origin_over_libp2p_through_a_relay() {
    use fieldsync::pending::{EventStatus, PendingFilter};
    let (_dirs, rs, keys) = trio_with_identities();
    let (hub, dev) = (&rs[0], &rs[2]);
    hub.add_validator("item", |f| match f.get("note").and_then(Value::as_str) {
        Some(n) if n.ends_with('9') => {
            vec![
                fieldsync::schema::Violation::new("note_ends_in_9", "a note may not end in 9")
                    .on("note"),
            ]
        }
        _ => Vec::new(),
    })
    .unwrap();
    let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut nodes = Vec::new();
    for r in &rs {
        nodes.push(start(r).await);
    }
    let (nh, nr, nd) = (&nodes[0], &nodes[1], &nodes[2]);
    let relay_addr = nr.listen_addrs().await.unwrap().remove(0);
    let hub_addr = nh.listen_addrs().await.unwrap().remove(0);
    nd.dial(relay_addr).await.unwrap();
    nr.dial(hub_addr).await.unwrap();
    dev.insert("item", "ok", fields([("title", "fine".into())]))
        .unwrap();
    dev.insert(
        "item",
        "bad",
        fields([("title", "pump".into()), ("note", "lot 19".into())]),
    )
    .unwrap();
    let limit = Duration::from_secs(30);
    let run = |f| tokio::time::timeout(limit, f);
    run(nd.sync_now(ids[1])).await.unwrap().unwrap();
    let list = dev.pending(&PendingFilter::all()).unwrap();
    assert!(
        list.len() == 2 && list.iter().all(|e| e.status == EventStatus::Processing),
        "{list:?}"
    );
    run(nr.sync_now(ids[0])).await.unwrap().unwrap();
    run(nd.sync_now(ids[1])).await.unwrap().unwrap();
    let list = dev.pending(&PendingFilter::all()).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].record.as_str(), list[0].status),
        ("bad", EventStatus::Rejected)
    );
    assert_eq!(list[0].errors[0].code, "note_ends_in_9");
    assert_eq!(list[0].errors[0].message, "a note may not end in 9");
    // The node's status shows it, and the relay as last synced.
    let st = nd.status().await.unwrap();
    assert_eq!(st.pending.get(&EventStatus::Rejected), Some(&1));
    let p = st.peers.iter().find(|p| p.peer == ids[1]).unwrap();
    assert!(p.connected && p.last_synced.is_some());
    assert_eq!(p.last_outcome.as_deref(), Some("synced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_reports_a_blocked_collection_and_still_syncs_the_others() {
    use fieldsync::conflict::{Choice, ConflictFilter, Resolution};
    use fieldsync::node::NodeError;
    use fieldsync::schema::{Collection, FieldType, Policy};
    let (_dirs, rs, keys) = trio_with_identities();
    let (hub, dev) = (&rs[0], &rs[2]);
    let company = Collection::builder("company")
        .required("name", FieldType::String)
        .field("phone", FieldType::String)
        .policy(Policy::UserAction)
        .block_sync_on_conflict(true)
        .build()
        .unwrap();
    for r in [hub, dev] {
        r.define_collection(company.clone()).unwrap();
    }
    let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let (nh, nd) = (start(hub).await, start(dev).await);
    nd.dial(nh.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    dev.insert("company", "k1", fields([("name", "Kay".into())]))
        .unwrap();
    nd.sync_now(ids[0]).await.unwrap();
    hub.update("company", "k1", fields([("phone", "1".into())]))
        .unwrap();
    dev.update("company", "k1", fields([("phone", "2".into())]))
        .unwrap();
    nd.sync_now(ids[0]).await.unwrap();
    let open = dev.conflicts(&ConflictFilter::open()).unwrap();
    assert_eq!(open.len(), 1);
    dev.update("company", "k1", fields([("name", "Kay 2".into())]))
        .unwrap();
    dev.insert("item", "i1", item("other collection")).unwrap();
    match nd.sync_now(ids[0]).await {
        Err(NodeError::Blocked { blocked, .. }) => {
            assert_eq!(blocked.len(), 1);
            assert_eq!(blocked[0].collection, "company");
            assert_eq!(blocked[0].conflicts, vec![open[0].id.clone()]);
        }
        other => panic!("expected a blocked sync, got {other:?}"),
    }
    assert!(
        hub.get("item", "i1").unwrap().is_some(),
        "other collections sync"
    );
    assert_eq!(
        hub.get("company", "k1").unwrap().unwrap().fields["name"],
        Value::from("Kay"),
        "the blocked change stayed on the device"
    );
    assert_eq!(nd.status().await.unwrap().blocked.len(), 1);
    dev.resolve(&open[0].id, Resolution::new(Choice::KeepDevice))
        .unwrap();
    nd.sync_now(ids[0]).await.unwrap();
    assert_eq!(
        hub.get("company", "k1").unwrap().unwrap().fields["name"],
        Value::from("Kay 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_reports_progress_and_status_shows_the_peer() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    a.transaction(|tx| {
        for i in 0..300 {
            tx.insert("item", &format!("i{i}"), item("bulk"))?;
        }
        Ok(())
    })
    .unwrap();
    let (na, nb) = (start(&a).await, start(&b).await);
    let peer = nb
        .dial(na.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    let mut progress = nb.progress();
    let report = tokio::time::timeout(Duration::from_secs(30), nb.sync_now(peer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records_received, 300, "{report:?}");
    let mut seen = Vec::new();
    while let Ok(p) = progress.try_recv() {
        assert_eq!(p.peer, peer);
        seen.push(p.progress);
    }
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.windows(2)
            .all(|w| w[0].records_done <= w[1].records_done && w[0].bytes <= w[1].bytes)
    );
    assert!(seen.iter().all(|p| p.records_done <= p.records_total));
    let last = seen.last().unwrap();
    assert_eq!(
        last.records_done,
        report.records_sent + report.records_received
    );
    // b's pending events: none of its own; a's 300 inserts are confirmed
    // for b (no members: the peers synced with confirm).
    let st = nb.status().await.unwrap();
    let p = st.peers.iter().find(|p| p.peer == peer).unwrap();
    assert!(p.connected && !p.syncing && p.last_synced.is_some());
    assert_eq!(
        p.last_report.as_ref().map(|r| r.records_received),
        Some(300)
    );
    assert_eq!(p.records_out, 0);
    assert!(!st.live && st.blocked.is_empty() && st.open_conflicts == 0);
    // a learns b holds its records only from its own equal sync (InSync).
    assert!(
        eventually(|| a
            .pending(&fieldsync::pending::PendingFilter::all())
            .unwrap()
            .is_empty())
        .await,
        "a's events are confirmed by b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_libp2p_a_team_sees_only_its_records_and_a_revoked_peer_is_refused() {
    use fieldsync::node::identity;
    use fieldsync::rights::RoleRights;
    use fieldsync::schema::{Collection, FieldType, Schema};
    let schema = Schema::new()
        .with(
            Collection::builder("job")
                .required("title", FieldType::String)
                .field("team", FieldType::String)
                .build()
                .unwrap(),
        )
        .unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let rs: Vec<Replica> = dirs
        .iter()
        .map(|d| Replica::open(d.path(), Config::default().with_schema(schema.clone())).unwrap())
        .collect();
    let keys: Vec<Keypair> = dirs
        .iter()
        .map(|d| identity::load_or_create(d.path()).unwrap())
        .collect();
    let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let (hub, a, b) = (&rs[0], &rs[1], &rs[2]);
    hub.found_group().unwrap();
    for d in [a, b] {
        d.join_group(&ids[0].to_string()).unwrap();
    }
    hub.define_role(
        "field",
        &RoleRights {
            read: vec![],
            write: vec!["job".into()],
            scope: Some("team".into()),
            authority: false,
        },
    )
    .unwrap();
    hub.grant(&ids[1].to_string(), "field", Some("a")).unwrap();
    hub.grant(&ids[2].to_string(), "field", Some("b")).unwrap();
    let job =
        |t: &str, team: &str| fields([("title", Value::from(t)), ("team", Value::from(team))]);
    hub.insert("job", "ja", job("for a", "a")).unwrap();
    hub.insert("job", "jb", job("for b", "b")).unwrap();
    let mut nodes = Vec::new();
    for r in &rs {
        nodes.push(start(r).await);
    }
    let hub_addr = nodes[0].listen_addrs().await.unwrap().remove(0);
    let limit = Duration::from_secs(30);
    for n in &nodes[1..] {
        tokio::time::timeout(limit, n.dial(hub_addr.clone()))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(limit, n.sync_now(ids[0]))
            .await
            .unwrap()
            .unwrap();
    }
    let titles =
        |r: &Replica| -> Vec<String> { r.list("job").unwrap().into_iter().map(|x| x.id).collect() };
    assert_eq!(titles(a), ["ja"]);
    assert_eq!(titles(b), ["jb"]);
    // Revoke b: the hub refuses it from then on, and takes nothing it
    // writes after the revocation.
    hub.revoke(&ids[2].to_string()).unwrap();
    b.insert("job", "late", job("after revocation", "b"))
        .unwrap();
    hub.insert("job", "jb2", job("new for b", "b")).unwrap();
    let r = tokio::time::timeout(limit, nodes[2].sync_now(ids[0]))
        .await
        .unwrap();
    assert!(r.is_err(), "the revoked peer's sync fails: {r:?}");
    assert!(hub.get("job", "late").unwrap().is_none());
    assert!(b.get("job", "jb2").unwrap().is_none());
    // a still syncs.
    hub.insert("job", "ja2", job("new for a", "a")).unwrap();
    tokio::time::timeout(limit, nodes[1].sync_now(ids[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(titles(a), ["ja", "ja2"]);
}

#[test]
fn a_current_thread_runtime_is_refused_at_start_with_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let r = replica(d.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(Node::start(r, NodeConfig::default()))
        .unwrap_err();
    assert!(matches!(e, fieldsync::node::NodeError::Runtime(_)), "{e:?}");
    assert!(e.to_string().contains("multi-threaded"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_the_store_and_a_shut_down_node_says_so() {
    let d = tempfile::tempdir().unwrap();
    let r = replica(d.path());
    let n = start(&r).await;
    assert_eq!(
        n.peer_id(),
        peer_of(&r),
        "the node's peer id is the store's member id"
    );
    n.shutdown().await.unwrap();
    assert!(matches!(
        n.listen_addrs().await,
        Err(fieldsync::node::NodeError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_peer_does_not_push_into_a_node_in_manual_mode() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    // a is live (a hub that offers every change); b is a device in manual
    // mode (Creatio's offline mode): nothing moves until b syncs.
    let na = start_with(&a, NodeConfig::default().listen_on([tcp()]).with_live(true)).await;
    let nb = start(&b).await;
    let peer = nb
        .dial(na.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    a.insert("item", "pushed", item("from the live hub"))
        .unwrap();
    b.insert("item", "kept", item("from the manual device"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        b.get("item", "pushed").unwrap().is_none(),
        "a live push reached a manual node"
    );
    assert!(
        a.get("item", "kept").unwrap().is_none(),
        "a manual node's change left before it synced"
    );
    nb.sync_now(peer).await.unwrap();
    assert!(b.get("item", "pushed").unwrap().is_some());
    assert!(a.get("item", "kept").unwrap().is_some());
}

/// A node refuses inbound connections past its limit: the second peer cannot
/// sync with it, the first still can, and nothing is stored from the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_past_the_limit_are_refused() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c) = (
        replica(dirs[0].path()),
        replica(dirs[1].path()),
        replica(dirs[2].path()),
    );
    c.insert("item", "c0", item("from c")).unwrap();
    b.insert("item", "b0", item("from b")).unwrap();
    let na = start_with(
        &a,
        NodeConfig::default().listen_on([tcp()]).with_max_inbound(1),
    )
    .await;
    let (nb, nc) = (start(&b).await, start(&c).await);
    let addr = na.listen_addrs().await.unwrap().remove(0);
    let pa = tokio::time::timeout(Duration::from_secs(10), nb.dial(addr.clone()))
        .await
        .expect("dial in time")
        .expect("the first peer connects");
    // The second connection is refused once its handshake ends: whatever its
    // dial says, it cannot sync.
    let dialed = tokio::time::timeout(Duration::from_secs(10), nc.dial(addr))
        .await
        .expect("dial in time");
    let synced = match dialed {
        Err(_) => None,
        Ok(p) => Some(
            tokio::time::timeout(Duration::from_secs(10), nc.sync_now(p))
                .await
                .expect("sync ends in time"),
        ),
    };
    assert!(
        synced.as_ref().is_none_or(|r| r.is_err()),
        "a refused peer synced: {synced:?}"
    );
    let report = tokio::time::timeout(Duration::from_secs(30), nb.sync_now(pa))
        .await
        .expect("sync in time")
        .expect("the admitted peer still syncs");
    assert_eq!(report.records_sent, 1);
    assert!(a.get("item", "b0").unwrap().is_some());
    assert!(
        a.get("item", "c0").unwrap().is_none(),
        "nothing arrived from the refused peer"
    );
    let peers = na.peers().await.unwrap();
    assert!(
        !peers.iter().any(|p| p.peer == nc.peer_id() && p.connected),
        "the refused peer is listed as connected"
    );
    for n in [na, nb, nc] {
        n.shutdown().await.unwrap();
    }
}

/// `disconnect` closes the connection and keeps a remembered peer from being
/// redialed for the rest of the run; a later dial connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_connection_and_stops_redialing_until_a_dial() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(da.path()), replica(db.path()));
    let quick =
        |c: NodeConfig| c.with_redial(Duration::from_millis(100), Duration::from_millis(200));
    let na = start(&a).await;
    let nb = start_with(&b, quick(NodeConfig::default().listen_on([tcp()]))).await;
    let addr = na.listen_addrs().await.unwrap().remove(0);
    let pa = nb.add_peer(addr.clone()).await.unwrap();
    let connected = |n: &Node, p: libp2p::PeerId| {
        let n = n.clone();
        async move {
            n.peers()
                .await
                .unwrap()
                .iter()
                .any(|i| i.peer == p && i.connected)
        }
    };
    assert!(connected(&nb, pa).await);
    assert!(nb.disconnect(pa).await.unwrap(), "it was connected");
    let mut down = false;
    for _ in 0..100 {
        if !connected(&nb, pa).await && !connected(&na, nb.peer_id()).await {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(down, "still connected after disconnect");
    // Well past several redial delays, B has not dialed A again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !connected(&nb, pa).await,
        "a disconnected peer was redialed"
    );
    assert!(!nb.disconnect(pa).await.unwrap(), "not connected any more");
    // Its address stays remembered, and a dial connects again.
    assert_eq!(b.addresses().unwrap().len(), 1);
    a.insert("item", "a0", item("from a")).unwrap();
    let again = nb.dial(addr).await.unwrap();
    let report = nb.sync_now(again).await.unwrap();
    assert_eq!(report.records_received, 1);
    for n in [na, nb] {
        n.shutdown().await.unwrap();
    }
}
