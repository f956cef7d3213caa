//! The network node: a libp2p swarm that carries the sync protocol between
//! replicas (a shell around [`crate::sync::Session`]; the protocol itself does no
//! IO).
//!
//! Each node owns one swarm — TCP (noise, yamux) and QUIC, or TCP alone behind
//! a group secret (libp2p private network) — with one request-response
//! protocol, `/fieldsync/sync/1`: every sync message is one request whose
//! response is an empty acknowledgement of delivery (the sync protocol has its
//! own acknowledgements). One [`Session`] runs per connected peer; its storage
//! work runs through [`Replica::drive`] on the runtime's blocking section.
//! Peers are found by dialing addresses (remembered in the store and redialed
//! with backoff when the connection drops) or by mDNS on the LAN.
//!
//! ```no_run
//! # async fn demo(replica: fieldsync::Replica, other: libp2p::Multiaddr) -> Result<(), Box<dyn std::error::Error>> {
//! use fieldsync::node::{Node, NodeConfig};
//! let node = Node::start(replica, NodeConfig::default()).await?;
//! let peer = node.add_peer(other).await?; // dial now, and again if it drops
//! let report = node.sync_now(peer).await?;
//! println!("{} records in, {} out", report.records_received, report.records_sent);
//! for (peer, result) in node.sync_all().await? {
//!     println!("{peer}: {result:?}");
//! }
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

mod codec;
pub mod identity;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::futures::future::Either;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, Transport, mdns, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::Replica;
use crate::sync::{Input, Notification, Output, Report, Session};
pub use codec::SyncCodec;
/// The libp2p types this module's public signatures use, so that an app
/// names them without depending on libp2p itself (and on the same version).
pub use libp2p::{Multiaddr, PeerId, identity::Keypair, pnet::PreSharedKey};

/// The protocol name of fieldsync's sync messages on libp2p.
pub const PROTOCOL: &str = "/fieldsync/sync/1";

/// The identify protocol version fieldsync nodes announce.
const IDENTIFY: &str = "/fieldsync/1.0.0";

/// How often sessions are given a `Tick` (their retry timers) and remembered
/// peers are checked for a redial.
const TICK: Duration = Duration::from_millis(250);

/// How a node runs: where it listens, whom it dials, how it finds peers, and
/// its mode. `NodeConfig::default()` listens on a free TCP (and, with the
/// `quic` feature, QUIC) port of 127.0.0.1, in manual mode, without mDNS.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Addresses to listen on (port 0 picks a free port). TCP (`/tcp/N`) and,
    /// with the `quic` feature and no group secret, QUIC (`/udp/N/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start. Each becomes a remembered peer (its address is
    /// kept in the store and redialed whenever the connection drops).
    pub peers: Vec<Multiaddr>,
    /// Find peers on the local network by mDNS and connect to them.
    pub mdns: bool,
    /// Live mode at start (see [`Node::set_live`]).
    pub live: bool,
    /// The group secret: only peers holding the same key can connect at all
    /// (TCP only; QUIC is not offered while a secret is set).
    pub group_secret: Option<PreSharedKey>,
    /// Redial a remembered peer this long after its connection dropped or a
    /// dial failed, doubling after each failure...
    pub redial_first: Duration,
    /// ...up to this long.
    pub redial_max: Duration,
    /// Dial the peers remembered in the store at start (and redial them). Off
    /// for a one-shot node that dials by itself.
    pub remembered: bool,
    /// The most connections peers may open to this node at once (default
    /// 1,024); beyond it a new inbound connection is refused before any sync
    /// work, and the refusal is logged. Dials this node makes are not
    /// counted here. Besides it, at most [`MAX_PENDING_INBOUND`] connections
    /// may be in their handshake, and [`MAX_PER_PEER`] open to one peer in
    /// both directions (each [`Node::dial`] opens one). 0 counts as 1.
    pub max_inbound: u32,
}

/// Inbound connections in their handshake at most (TCP, noise, yamux; the
/// handshake times out after 10 s). A bound against memory, at a price: a
/// host that keeps this many handshakes open keeps other peers out too, as
/// libp2p has no per-address limit (docs/security.md).
pub const MAX_PENDING_INBOUND: u32 = 256;

/// At most one log line per this long about refused connections.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections to one peer at most (both directions, TCP and QUIC, and the
/// second connection a simultaneous dial makes).
pub const MAX_PER_PEER: u32 = 8;

impl Default for NodeConfig {
    fn default() -> Self {
        let mut listen: Vec<Multiaddr> = vec![loopback_tcp()];
        if cfg!(feature = "quic") {
            listen.extend("/ip4/127.0.0.1/udp/0/quic-v1".parse::<Multiaddr>().ok());
        }
        Self {
            listen,
            peers: Vec::new(),
            mdns: false,
            live: false,
            group_secret: None,
            redial_first: Duration::from_millis(500),
            redial_max: Duration::from_secs(60),
            remembered: true,
            max_inbound: 1024,
        }
    }
}

fn loopback_tcp() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

impl NodeConfig {
    /// Listen on these addresses instead of the defaults.
    pub fn listen_on(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Dial this peer at start and keep redialing it.
    pub fn with_peer(mut self, addr: Multiaddr) -> Self {
        self.peers.push(addr);
        self
    }

    /// Discover peers on the LAN by mDNS.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Start in live mode (`true`) or manual mode (`false`).
    pub fn with_live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Speak only to peers holding this group secret.
    pub fn with_group_secret(mut self, secret: Option<PreSharedKey>) -> Self {
        self.group_secret = secret;
        self
    }

    /// Whether to dial the peers remembered in the store.
    pub fn with_remembered(mut self, on: bool) -> Self {
        self.remembered = on;
        self
    }

    /// The most connections peers may open to this node at once (at least 1).
    pub fn with_max_inbound(mut self, n: u32) -> Self {
        self.max_inbound = n.max(1);
        self
    }

    /// The redial backoff: first delay and cap.
    pub fn with_redial(mut self, first: Duration, max: Duration) -> Self {
        self.redial_first = first;
        self.redial_max = max.max(first);
        self
    }
}

/// A connected peer as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Its peer id.
    pub peer: PeerId,
    /// Whether a connection to it is open (and passed the membership check).
    pub connected: bool,
    /// The addresses this node redials it at: remembered, or found by mDNS
    /// (empty: the peer dialed this node).
    pub addresses: Vec<Multiaddr>,
    /// The addresses the peer says it listens on (libp2p identify).
    pub listening: Vec<Multiaddr>,
    /// The software the peer says it runs (`fieldsync/<version>`).
    pub agent: Option<String>,
}

/// The transport: TCP with noise and yamux, behind the group secret if there is
/// one; otherwise also QUIC (with the `quic` feature).
fn transport(
    key: &Keypair,
    secret: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let noise = noise::Config::new(key).map_err(|e| setup(&e))?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default());
    // A peer that never completes the handshake (for one, a peer without the
    // group secret) fails the connection instead of holding it open.
    let handshake = Duration::from_secs(10);
    // With a group secret, the private-network handshake wraps the socket
    // before anything else is said on it.
    let tcp = tcp
        .and_then(move |socket, _| async move {
            Ok::<_, libp2p::pnet::PnetError>(match secret {
                Some(psk) => Either::Left(PnetConfig::new(psk).handshake(socket).await?),
                None => Either::Right(socket),
            })
        })
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(handshake)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    #[cfg(feature = "quic")]
    if secret.is_none() {
        let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
            .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
        return Ok(tcp
            .or_transport(quic)
            .map(|either, _| either.into_inner())
            .boxed());
    }
    Ok(tcp)
}

/// What the node can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The swarm could not be built or could not listen.
    #[error("network setup failed: {0}")]
    Setup(String),
    /// A peer could not be reached.
    #[error("could not reach {addr}: {reason}")]
    Dial {
        /// The address dialed.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A sync did not complete.
    #[error("sync with {peer} did not complete: {reason}")]
    Sync {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer refused this node (for one, it does not count it as a member).
    #[error("{peer} refused to sync: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The sync exchanged everything it could, but this replica held back its
    /// own changes to collections with unresolved conflicts (the sync gate;
    /// see `docs/pending.md`). Other collections were synced.
    #[error("sync with {peer} is blocked: {}", blocked.iter().map(|b| format!("`{}` has {} unresolved conflict(s)", b.collection, b.conflicts.len())).collect::<Vec<_>>().join(", "))]
    Blocked {
        /// The peer.
        peer: String,
        /// The blocked collections and the open entries that block them.
        blocked: Vec<crate::pending::Blocked>,
        /// What moved.
        report: Box<Report>,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The node's command queue is full ([`COMMAND_QUEUE`] commands wait for
    /// its task): a call that does not wait ([`Node::set_live`],
    /// [`Node::forget_peer`]) is refused instead of queued without bound.
    /// Retry after a moment; the async calls wait for room instead.
    #[error("the node is busy: {COMMAND_QUEUE} commands are already waiting")]
    Busy,
    /// The node cannot run on this tokio runtime.
    #[error("{0}")]
    Runtime(String),
    /// The store's identity file is unreadable.
    #[error("identity file {path}: {reason}")]
    Identity {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    sync: request_response::Behaviour<SyncCodec>,
    /// Peers tell each other their listen addresses and what they run.
    identify: libp2p::identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// Refuses connections past [`NodeConfig::max_inbound`],
    /// [`MAX_PENDING_INBOUND`] and [`MAX_PER_PEER`].
    limits: libp2p::connection_limits::Behaviour,
}

type SyncReply = oneshot::Sender<Result<Report, NodeError>>;
type SyncWait = oneshot::Receiver<Result<Report, NodeError>>;

enum Command {
    Live(bool),
    Dial {
        addr: Multiaddr,
        remember: bool,
        reply: oneshot::Sender<Result<PeerId, NodeError>>,
    },
    Sync(PeerId, SyncReply),
    SyncAll(oneshot::Sender<Vec<(PeerId, SyncWait)>>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Forget(PeerId),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// A sync's progress with one peer, from [`Node::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncProgress {
    /// The peer.
    pub peer: PeerId,
    /// How far the sync has come.
    pub progress: crate::sync::Progress,
}

/// One peer as [`Node::status`] sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerStatus {
    /// Its peer id.
    pub peer: PeerId,
    /// Whether a connection to it is open (and passed the membership check).
    pub connected: bool,
    /// Whether a sync this node started with it is running.
    pub syncing: bool,
    /// The local time of the last sync with it that ended with both sides
    /// equal (`None`: never).
    pub last_synced: Option<crate::HlcTime>,
    /// The running (or last) sync's progress.
    pub progress: Option<crate::sync::Progress>,
    /// The last sync's report, if one finished since this node started.
    pub last_report: Option<Report>,
    /// How the last sync ended (`synced`, `blocked`, `incomplete: …`).
    pub last_outcome: Option<String>,
    /// Records with local events newer than the last equal sync with this
    /// peer: what it is still waiting for from here (an estimate from the
    /// pending events; records confirmed by an authority are not counted).
    pub records_out: usize,
    /// Bytes of sync messages queued for it now.
    pub bytes_out: usize,
    /// Records asked of it in the running sync and not received yet.
    pub records_in: u64,
}

/// The node's and its replica's sync state, from [`Node::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// Live (true) or manual mode.
    pub live: bool,
    /// Known peers: connected or remembered.
    pub peers: Vec<PeerStatus>,
    /// Pending events by status.
    pub pending: std::collections::BTreeMap<crate::pending::EventStatus, usize>,
    /// Open conflict entries.
    pub open_conflicts: usize,
    /// Collections the sync gate holds back, with their open entries.
    pub blocked: Vec<crate::pending::Blocked>,
}

/// Sync messages sent to one peer and not yet acknowledged at most (libp2p's
/// request-response refuses inbound streams beyond 100 per connection).
const WINDOW: usize = 32;

/// Commands waiting for the node's task at most; beyond it the async calls
/// wait for room and the others fail with [`NodeError::Busy`].
pub const COMMAND_QUEUE: usize = 256;

/// How long a refused peer's connection stays open for the refusal to arrive.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// Messages waiting for a peer, and how many are unacknowledged.
#[derive(Default)]
struct Outbox {
    queue: std::collections::VecDeque<Vec<u8>>,
    in_flight: usize,
}

/// A remembered peer: dialed at start and whenever it is not connected, with
/// backoff.
struct Redial {
    /// Found by mDNS and not remembered in the store: dropped when mDNS says
    /// its record expired.
    found_by_mdns: bool,
    addrs: Vec<Multiaddr>,
    delay: Duration,
    next: Instant,
    dialing: bool,
}

impl Redial {
    /// A peer to dial now, then with backoff starting at `first`.
    fn new(first: Duration, found_by_mdns: bool) -> Self {
        Self {
            found_by_mdns,
            addrs: Vec::new(),
            delay: first,
            next: Instant::now(),
            dialing: false,
        }
    }

    fn add(&mut self, addr: Multiaddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }
}

/// A running node: a handle to the task that owns the swarm. Dropping every
/// handle stops the node.
#[derive(Debug, Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    progress: tokio::sync::broadcast::Sender<SyncProgress>,
}

/// A dial failure in one plain sentence: libp2p's error nests every layer's
/// text (`Failed to negotiate transport protocol(s): [(addr: : Connection
/// refused (os error 111): …)]`); people need the cause.
fn plain_dial_error(text: &str) -> String {
    let has = |s: &str| text.contains(s);
    if has("Connection refused") {
        "nothing is listening at that address (connection refused)".into()
    } else if has("timed out") || has("Timeout") || has("timeout") {
        "it did not answer in time".into()
    } else if has("No route to host") {
        "there is no route to that host".into()
    } else if has("Network is unreachable") {
        "the network is unreachable".into()
    } else if has("WrongPeerId") || has("different peer") || has("Unexpected peer ID") {
        "another peer answered at that address (its /p2p/ part names a different member)".into()
    } else if has("Handshake failed") || has("pnet") || has("invalid data") {
        "the connection opened but the handshake failed: it is not a fieldsync node, or the two stores hold different group secrets (`fieldsync secret`)".into()
    } else if has("LocalPeerId") || has("local peer") {
        "that address is this node itself".into()
    } else {
        // The innermost cause, once.
        let inner = text
            .rsplit(": ")
            .find(|s| !s.trim().is_empty())
            .unwrap_or(text)
            .trim_end_matches([')', ']'])
            .trim();
        format!("the connection failed ({inner})")
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Start a node for `replica`, with the replica's own identity (its
    /// signing key is its peer id's key, so the peer id names the member that
    /// signs its changes). The app keeps using its `Replica` handle; the node
    /// syncs what it writes. Stop it with [`Node::shutdown`] (or drop every
    /// handle).
    ///
    /// Needs a multi-threaded tokio runtime (storage work runs in
    /// `block_in_place`): on a current-thread runtime, or outside one, it
    /// fails at once with [`NodeError::Runtime`].
    pub async fn start(replica: Replica, config: NodeConfig) -> Result<Self, NodeError> {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {}
            Ok(_) => {
                return Err(NodeError::Runtime(
                    "a fieldsync node needs a multi-threaded tokio runtime (its storage work runs in `block_in_place`): use `#[tokio::main]` or `tokio::runtime::Builder::new_multi_thread()`, not a current-thread runtime".into(),
                ));
            }
            Err(_) => {
                return Err(NodeError::Runtime(
                    "a fieldsync node must be started inside a multi-threaded tokio runtime".into(),
                ));
            }
        }
        let keypair = replica.node_keypair();
        let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
        let peer_id = keypair.public().to_peer_id();
        let transport = transport(&keypair, config.group_secret)?;
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| setup(&e))?,
            )
        } else {
            None
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| Behaviour {
                sync: request_response::Behaviour::new(
                    [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                ),
                identify: libp2p::identify::Behaviour::new(
                    libp2p::identify::Config::new(IDENTIFY.into(), key.public())
                        .with_agent_version(format!("fieldsync/{}", env!("CARGO_PKG_VERSION")))
                        .with_cache_size(256),
                ),
                mdns: Toggle::from(mdns),
                limits: libp2p::connection_limits::Behaviour::new(
                    libp2p::connection_limits::ConnectionLimits::default()
                        .with_max_established_incoming(Some(config.max_inbound.max(1)))
                        .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
                        .with_max_established_per_peer(Some(MAX_PER_PEER)),
                ),
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Setup(format!("cannot listen on {addr}: {e}")))?;
            listeners.insert(id);
        }
        // Remembered peers from earlier runs are dialed at once.
        let mut redials = HashMap::new();
        let remembered = if config.remembered {
            replica.addresses().map_err(|e| setup(&e))?
        } else {
            Vec::new()
        };
        for (peer, addrs) in remembered {
            let Ok(peer) = peer.parse::<PeerId>() else {
                tracing::warn!(%peer, "a remembered peer id does not parse; ignored");
                continue;
            };
            let mut r = Redial::new(config.redial_first, false);
            addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .for_each(|a| r.add(a));
            if !r.addrs.is_empty() {
                redials.insert(peer, r);
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (progress, _) = tokio::sync::broadcast::channel(256);
        let mut worker = Worker {
            progress: progress.clone(),
            last: HashMap::new(),
            swarm,
            watch: replica.watch(crate::WatchFilter::All),
            live: config.live,
            admitted: HashSet::new(),
            replica,
            sessions: HashMap::new(),
            dials: HashMap::new(),
            syncs: HashMap::new(),
            outbox: HashMap::new(),
            refusing: HashMap::new(),
            refused_by: HashMap::new(),
            identified: HashMap::new(),
            addrs: Vec::new(),
            addr_waiters: Vec::new(),
            listeners,
            redials,
            redial_first: config.redial_first,
            redial_max: config.redial_max,
            auto_started: HashSet::new(),
            refused_inbound: (0, None),
        };
        for addr in config.peers {
            let (reply, _) = oneshot::channel();
            worker.command(Command::Dial {
                addr,
                remember: true,
                reply,
            });
        }
        tokio::spawn(worker.run(rx));
        Ok(Self {
            peer_id,
            commands: tx,
            progress,
        })
    }

    /// Queue a command, waiting for room.
    async fn send(&self, c: Command) -> Result<(), NodeError> {
        self.commands.send(c).await.map_err(|_| NodeError::Stopped)
    }

    /// Queue a command if there is room now.
    fn try_send(&self, c: Command) -> Result<(), NodeError> {
        self.commands.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NodeError::Busy,
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })
    }

    /// Stop the node: close its connections and listeners and wait until its
    /// task has let go of them (so a program can end its runtime right
    /// after). Later calls on any handle fail with [`NodeError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Shutdown(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Live mode (on) or manual mode (off). Live: a change made on this
    /// replica, or received from a peer, is offered at once to every connected
    /// member, and a sync starts whenever a member connects. Manual: nothing
    /// moves until [`Node::sync_now`] or [`Node::sync_all`] (this node still
    /// answers peers that sync with it). Can be switched while running.
    /// Does not wait: fails with [`NodeError::Busy`] while the node's command
    /// queue is full.
    pub fn set_live(&self, live: bool) -> Result<(), NodeError> {
        self.try_send(Command::Live(live))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on (waits until every listener has one).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Addrs(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Connect to a peer once; returns its peer id once the connection is up
    /// and the peer passed the membership check. Not remembered: see
    /// [`Node::add_peer`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.dial_inner(addr, false).await
    }

    /// Connect to a peer and remember it: its address is kept in the store, it
    /// is dialed again at every start, and redialed with backoff whenever the
    /// connection drops.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.dial_inner(addr, true).await
    }

    async fn dial_inner(&self, addr: Multiaddr, remember: bool) -> Result<PeerId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial {
            addr,
            remember,
            reply,
        })
        .await?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Stop redialing a remembered peer and forget its addresses. Does not
    /// wait: fails with [`NodeError::Busy`] while the node's command queue is
    /// full.
    pub fn forget_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        self.try_send(Command::Forget(peer))
    }

    /// Close every connection to `peer` now; returns whether it was
    /// connected. A sync running with it fails ("the connection closed"). A
    /// remembered peer is not redialed for the rest of this run (its
    /// addresses stay stored, so the next start dials it again; see
    /// [`Node::forget_peer`]); [`Node::dial`] connects again. The peer itself
    /// may connect again: to keep a member out, revoke it.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(peer, tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// The connected and remembered peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Sync with a connected peer until both hold the same records; returns what
    /// moved (records and bytes each way, messages, duration).
    pub async fn sync_now(&self, peer: PeerId) -> Result<Report, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Sync(peer, tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Subscribe to the progress of syncs this node starts (one event per
    /// message received while syncing; see [`crate::sync::Progress`]).
    pub fn progress(&self) -> tokio::sync::broadcast::Receiver<SyncProgress> {
        self.progress.subscribe()
    }

    /// The sync state: per peer (connected, last equal sync, the running
    /// sync's progress, what waits each way) and for the replica (pending
    /// events by status, open conflicts, blocked collections).
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Sync with every connected member at once; one result per peer.
    pub async fn sync_all(&self) -> Result<Vec<(PeerId, Result<Report, NodeError>)>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SyncAll(tx)).await?;
        let pending = rx.await.map_err(|_| NodeError::Stopped)?;
        let mut out = Vec::with_capacity(pending.len());
        for (peer, rx) in pending {
            out.push((peer, rx.await.unwrap_or(Err(NodeError::Stopped))));
        }
        Ok(out)
    }
}

/// What the node remembers of a peer's syncs since it started.
#[derive(Default)]
struct PeerSyncs {
    progress: Option<crate::sync::Progress>,
    report: Option<Report>,
    outcome: Option<String>,
}

struct Worker {
    /// Inbound connections refused by a limit since the last log line, and
    /// when that line was written (one line per [`REFUSED_LOG_EVERY`], so a
    /// flood of connections cannot flood the log).
    refused_inbound: (u64, Option<Instant>),
    progress: tokio::sync::broadcast::Sender<SyncProgress>,
    last: HashMap<PeerId, PeerSyncs>,
    swarm: Swarm<Behaviour>,
    replica: Replica,
    watch: crate::Watch,
    live: bool,
    /// Peers whose open connections passed the membership check.
    admitted: HashSet<PeerId>,
    sessions: HashMap<PeerId, Session>,
    /// Pending dials, by the connection id the dial will have.
    dials: HashMap<ConnectionId, PendingDial>,
    syncs: HashMap<PeerId, Vec<SyncReply>>,
    /// Outbound messages per peer, sent within the window.
    outbox: HashMap<PeerId, Outbox>,
    /// Non-members being told why they are refused, and when that began: the
    /// connection closes once the refusal is delivered, or after [`REFUSAL_GRACE`].
    refusing: HashMap<PeerId, Instant>,
    /// Why a peer last refused this node (reported by a later `sync_now`).
    refused_by: HashMap<PeerId, String>,
    /// What connected peers told about themselves: listen addresses, agent.
    identified: HashMap<PeerId, (Vec<Multiaddr>, String)>,
    addrs: Vec<Multiaddr>,
    addr_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    /// Listeners that have not reported an address yet.
    listeners: HashSet<libp2p::core::transport::ListenerId>,
    /// Remembered peers, redialed while not connected.
    redials: HashMap<PeerId, Redial>,
    redial_first: Duration,
    redial_max: Duration,
    /// Peers with which this live node started a sync on its own since they
    /// connected (once per connection, after the peer said it is live).
    auto_started: HashSet<PeerId>,
}

struct PendingDial {
    addr: Multiaddr,
    remember: bool,
    reply: oneshot::Sender<Result<PeerId, NodeError>>,
}

impl Worker {
    /// The node's status (see [`Node::status`]); store errors leave parts
    /// empty (and are logged).
    fn status(&self) -> NodeStatus {
        let r = &self.replica;
        let log = |e: &dyn std::fmt::Display| tracing::warn!(error = %e, "status: could not read the store");
        let remembered: HashMap<String, crate::HlcTime> = r
            .remembered_peers()
            .inspect_err(|e| log(e))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let events = r
            .pending(&crate::pending::PendingFilter::all())
            .inspect_err(|e| log(e))
            .unwrap_or_default();
        let mut pending = std::collections::BTreeMap::new();
        for e in &events {
            *pending.entry(e.status).or_insert(0) += 1;
        }
        let mut peers: Vec<PeerId> = self
            .admitted
            .iter()
            .chain(self.redials.keys())
            .chain(self.last.keys())
            .copied()
            .collect();
        peers.sort();
        peers.dedup();
        let peers = peers
            .into_iter()
            .map(|peer| {
                let last_synced = remembered.get(&peer.to_string()).copied();
                let waiting: std::collections::BTreeSet<(&str, &str)> = events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.status,
                            crate::pending::EventStatus::Pending
                                | crate::pending::EventStatus::Processing
                        ) && last_synced.is_none_or(|t| e.time > t)
                    })
                    .map(|e| (e.collection.as_str(), e.record.as_str()))
                    .collect();
                let last = self.last.get(&peer);
                let progress = last.and_then(|l| l.progress);
                let syncing = self.sessions.get(&peer).is_some_and(Session::is_syncing);
                PeerStatus {
                    peer,
                    connected: self.admitted.contains(&peer) && self.swarm.is_connected(&peer),
                    syncing,
                    last_synced,
                    progress,
                    last_report: last.and_then(|l| l.report.clone()),
                    last_outcome: last.and_then(|l| l.outcome.clone()),
                    records_out: waiting.len(),
                    bytes_out: self
                        .outbox
                        .get(&peer)
                        .map_or(0, |o| o.queue.iter().map(Vec::len).sum()),
                    records_in: if syncing {
                        progress.map_or(0, |p| p.records_total - p.records_done)
                    } else {
                        0
                    },
                }
            })
            .collect();
        NodeStatus {
            peer_id: *self.swarm.local_peer_id(),
            live: self.live,
            peers,
            pending,
            open_conflicts: r
                .conflicts(&crate::conflict::ConflictFilter::open())
                .inspect_err(|e| log(e))
                .map(|v| v.len())
                .unwrap_or(0),
            blocked: r.sync_gate().inspect_err(|e| log(e)).unwrap_or_default(),
        }
    }

    /// Whether `peer` may exchange data with this replica: in a group (with a
    /// root), its root or an unrevoked member; in an open group, any peer.
    /// Cheap: the rights are cached.
    fn is_member(&self, peer: &PeerId) -> bool {
        self.in_good_standing(peer)
    }

    fn in_good_standing(&self, peer: &PeerId) -> bool {
        match self.replica.rights() {
            Ok(r) => identity::actor_of(peer).is_some_and(|a| r.in_good_standing(a.to_bytes())),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the rights; refusing the peer");
                false
            }
        }
    }

    /// Refuse a non-member: close its connections before any record moves.
    /// A non-member connected: tell it why in a protocol refusal (so its
    /// `sync_now` fails with that reason, not with a bare closed connection),
    /// then close the connection once the refusal is delivered or after
    /// [`REFUSAL_GRACE`]. None of its messages is read meanwhile.
    fn refuse(&mut self, peer: PeerId) {
        tracing::warn!(%peer, "refused a peer that is not a member of the group");
        self.admitted.remove(&peer);
        self.sessions.remove(&peer);
        self.outbox.remove(&peer);
        if self.refusing.insert(peer, Instant::now()).is_none() {
            let revoked = identity::actor_of(&peer).is_some_and(|a| {
                self.replica.rights().is_ok_and(|r| {
                    r.member(a.to_bytes())
                        .is_some_and(|m| m.revoked_at.is_some())
                })
            });
            let reason = if revoked {
                format!(
                    "{} does not count {peer} as a member of its group: it was revoked",
                    self.swarm.local_peer_id()
                )
            } else {
                format!(
                    "{} does not count {peer} as a member of its group: an admin of the group adds it with `fieldsync members add {peer} --role device`",
                    self.swarm.local_peer_id()
                )
            };
            let refusal = crate::sync::msg::encode_refusal(&reason);
            self.swarm.behaviour_mut().sync.send_request(&peer, refusal);
        }
    }

    /// Close a refused peer's connection.
    fn refused(&mut self, peer: PeerId) {
        if self.refusing.remove(&peer).is_some() {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(c) => self.command(c),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.event(event),
                change = self.watch.recv() => self.changed(change),
                _ = tick.tick() => {
                    let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
                    for p in peers {
                        self.feed(p, Input::Tick);
                    }
                    self.redial_due();
                    // Pending statuses a busy sync left to derive.
                    let replica = self.replica.clone();
                    tokio::task::block_in_place(|| replica.refresh_pending_soon());
                    let late: Vec<PeerId> = self
                        .refusing
                        .iter()
                        .filter(|(_, since)| since.elapsed() >= REFUSAL_GRACE)
                        .map(|(p, _)| *p)
                        .collect();
                    for p in late {
                        self.refused(p);
                    }
                }
            }
        };
        // The swarm (connections, listeners, transports) goes first, while
        // the runtime still runs; then the caller of `shutdown` is told.
        drop(self);
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
    }

    /// Dial every remembered peer that is not connected and whose backoff ran out.
    fn redial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .redials
            .iter()
            .filter(|(p, r)| !r.dialing && r.next <= now && !self.swarm.is_connected(p))
            .map(|(p, r)| (*p, r.addrs.clone()))
            .collect();
        for (peer, addrs) in due {
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            if self.swarm.dial(opts).is_ok() {
                if let Some(r) = self.redials.get_mut(&peer) {
                    r.dialing = true;
                }
            } else {
                self.redial_later(peer, true);
            }
        }
    }

    /// A dial to a remembered peer failed or its connection closed: try again
    /// after the current delay, and double the delay for the time after.
    fn redial_later(&mut self, peer: PeerId, failed: bool) {
        let (first, max) = (self.redial_first, self.redial_max);
        if let Some(r) = self.redials.get_mut(&peer) {
            r.dialing = false;
            if failed {
                r.next = Instant::now() + r.delay;
                r.delay = (r.delay * 2).min(max);
            } else {
                r.delay = first;
                r.next = Instant::now() + first;
            }
        }
    }

    /// A change became durable here: in live mode, offer it to every peer.
    fn changed(&mut self, change: Result<crate::ChangeEvent, crate::WatchError>) {
        if !self.live {
            return;
        }
        let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
        match change {
            // Only what it shows was computed again: the heads are the same,
            // there is nothing to offer.
            Ok(e) if e.kind == crate::ChangeKind::Reevaluated => {}
            Ok(e) => {
                for p in peers {
                    // Not offered back to the peer it came from.
                    if e.peer.as_deref() == Some(p.to_string().as_str()) {
                        continue;
                    }
                    let key = crate::sync::Key::new(e.collection.clone(), e.id.clone());
                    self.feed(p, Input::LocalChange(key));
                }
            }
            // Too many changes to offer one by one: reconcile instead.
            Err(crate::WatchError::Lagged(_)) => {
                for p in peers {
                    self.feed(p, Input::Start);
                }
            }
            Err(_) => {}
        }
    }

    /// Why a sync with `peer` cannot run: its refusal if it refused this
    /// node, else `otherwise`.
    fn unreachable(&self, peer: PeerId, otherwise: &str) -> NodeError {
        match self.refused_by.get(&peer) {
            Some(reason) => NodeError::Refused {
                peer: peer.to_string(),
                reason: reason.clone(),
            },
            None => NodeError::Sync {
                peer: peer.to_string(),
                reason: otherwise.into(),
            },
        }
    }

    fn start_sync(&mut self, peer: PeerId, reply: SyncReply) {
        if !self.admitted.contains(&peer) || !self.swarm.is_connected(&peer) {
            let _ = reply.send(Err(self.unreachable(peer, "not connected")));
            return;
        }
        self.syncs.entry(peer).or_default().push(reply);
        self.feed(peer, Input::Start);
    }

    fn command(&mut self, c: Command) {
        match c {
            // Handled by the loop in `run`.
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
            Command::Live(live) => {
                self.live = live;
                for s in self.sessions.values_mut() {
                    s.set_live(live);
                }
                // Every peer learns the new mode (a live peer then starts a
                // sync, or stops offering).
                let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
                for p in peers {
                    self.feed(p, Input::Hello);
                }
                if live {
                    // Live peers are synced with at once; manual ones wait
                    // for their own syncs.
                    let peers: Vec<PeerId> = self
                        .admitted
                        .iter()
                        .filter(|p| {
                            self.sessions
                                .get(p)
                                .is_some_and(|s| s.peer_live() == Some(true))
                        })
                        .copied()
                        .collect();
                    for p in peers {
                        self.auto_started.insert(p);
                        self.feed(p, Input::Start);
                    }
                }
            }
            Command::Dial {
                addr,
                remember,
                reply,
            } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(
                            id,
                            PendingDial {
                                addr,
                                remember,
                                reply,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Sync(peer, reply) => self.start_sync(peer, reply),
            Command::SyncAll(reply) => {
                let peers: Vec<PeerId> = self.admitted.iter().copied().collect();
                let mut pending = Vec::with_capacity(peers.len());
                for p in peers {
                    let (tx, rx) = oneshot::channel();
                    self.start_sync(p, tx);
                    pending.push((p, rx));
                }
                let _ = reply.send(pending);
            }
            Command::Addrs(reply) => {
                if !self.listeners.is_empty() {
                    self.addr_waiters.push(reply);
                } else {
                    let _ = reply.send(self.addrs.clone());
                }
            }
            Command::Status(reply) => {
                let status = tokio::task::block_in_place(|| self.status());
                let _ = reply.send(status);
            }
            Command::Peers(reply) => {
                let mut peers: Vec<PeerId> = self
                    .admitted
                    .iter()
                    .chain(self.redials.keys())
                    .copied()
                    .collect();
                peers.sort();
                peers.dedup();
                let info = peers
                    .into_iter()
                    .map(|peer| PeerInfo {
                        peer,
                        connected: self.admitted.contains(&peer) && self.swarm.is_connected(&peer),
                        addresses: self
                            .redials
                            .get(&peer)
                            .map(|r| r.addrs.clone())
                            .unwrap_or_default(),
                        listening: self
                            .identified
                            .get(&peer)
                            .map(|i| i.0.clone())
                            .unwrap_or_default(),
                        agent: self.identified.get(&peer).map(|i| i.1.clone()),
                    })
                    .collect();
                let _ = reply.send(info);
            }
            Command::Disconnect(peer, reply) => {
                // Not redialed for the rest of this run; its stored addresses
                // stay, so the next start dials it again.
                self.redials.remove(&peer);
                let connected = self.swarm.is_connected(&peer);
                if connected {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                let _ = reply.send(connected);
            }
            Command::Forget(peer) => {
                self.redials.remove(&peer);
                if let Err(e) = self.replica.forget_addresses(&peer.to_string()) {
                    tracing::warn!(%peer, error = %e, "could not forget the peer's addresses");
                }
            }
        }
    }

    /// A listener reported its address (or ended): once every listener has,
    /// answer those waiting for the addresses.
    fn listened(&mut self, id: libp2p::core::transport::ListenerId) {
        self.listeners.remove(&id);
        if self.listeners.is_empty() {
            for w in self.addr_waiters.drain(..) {
                let _ = w.send(self.addrs.clone());
            }
        }
    }

    /// Remember `addr` for `peer` in memory and in the store.
    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        // Keep the address without its `/p2p/` suffix: the peer id is the key.
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        if let Err(e) = self
            .replica
            .remember_address(&peer.to_string(), &addr.to_string())
        {
            tracing::warn!(%peer, error = %e, "could not remember the peer's address");
        }
        let first = self.redial_first;
        let r = self
            .redials
            .entry(peer)
            .or_insert_with(|| Redial::new(first, false));
        r.found_by_mdns = false;
        r.add(addr);
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                self.addrs.push(address);
                self.listened(listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Err(e) = reason {
                    tracing::warn!(error = %e, "a listener closed");
                }
                self.listened(listener_id);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(error = %error, "a listener failed");
                self.listened(listener_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                let member = self.is_member(&peer_id);
                if let Some(d) = self.dials.remove(&connection_id) {
                    if member && d.remember {
                        self.remember(peer_id, d.addr.clone());
                    }
                    let _ = d.reply.send(if member {
                        Ok(peer_id)
                    } else {
                        Err(NodeError::Dial {
                            addr: d.addr.to_string(),
                            reason: format!("{peer_id} is not a member of this group"),
                        })
                    });
                }
                if !member {
                    self.refuse(peer_id);
                    return;
                }
                // Connected: no redial is under way. The backoff is reset when
                // the connection ends well (not at once, or a peer that refuses
                // this node would be redialed at the shortest delay forever).
                if let Some(r) = self.redials.get_mut(&peer_id) {
                    r.dialing = false;
                }
                self.refused_by.remove(&peer_id);
                // Say hello: the clocks are measured, and a live peer that
                // hears this node is live starts a sync (see `PeerHello`).
                let new = self.admitted.insert(peer_id);
                if new {
                    self.feed(peer_id, Input::Hello);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let limit = matches!(
                    &error,
                    libp2p::swarm::ListenError::Denied { cause }
                        if cause.downcast_ref::<libp2p::connection_limits::Exceeded>().is_some()
                );
                if limit {
                    let (count, last) = &mut self.refused_inbound;
                    *count += 1;
                    let now = Instant::now();
                    if last.is_none_or(|t| now.duration_since(t) >= REFUSED_LOG_EVERY) {
                        tracing::warn!(from = %send_back_addr, %error, refused = *count, "refused inbound connections: a connection limit is reached (count since the last such line)");
                        *count = 0;
                        *last = Some(now);
                    }
                } else {
                    tracing::debug!(from = %send_back_addr, %error, "an inbound connection failed");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                if let Some(d) = self.dials.remove(&connection_id) {
                    let _ = d.reply.send(Err(NodeError::Dial {
                        addr: d.addr.to_string(),
                        reason: plain_dial_error(&error.to_string()),
                    }));
                }
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.redial_later(peer, true);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.sessions.remove(&peer_id);
                self.auto_started.remove(&peer_id);
                self.admitted.remove(&peer_id);
                self.outbox.remove(&peer_id);
                self.refusing.remove(&peer_id);
                self.identified.remove(&peer_id);
                let refused = self.refused_by.contains_key(&peer_id);
                self.redial_later(peer_id, refused);
                for reply in self.syncs.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Err(self.unreachable(peer_id, "the connection closed")));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.sync_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received { peer_id, info, .. },
            )) => {
                if info.protocol_version != IDENTIFY {
                    tracing::warn!(peer = %peer_id, version = %info.protocol_version, "a peer announces another protocol version");
                }
                self.identified
                    .insert(peer_id, (info.listen_addrs, info.agent_version));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                // A peer found by mDNS is dialed like a remembered one (with
                // backoff if the dial fails) until its mDNS record expires.
                let first = self.redial_first;
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    tracing::info!(%peer, %addr, "found by mDNS");
                    self.redials
                        .entry(peer)
                        .or_insert_with(|| Redial::new(first, true))
                        .add(addr);
                }
                self.redial_due();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(r) = self.redials.get_mut(&peer)
                        && r.found_by_mdns
                    {
                        r.addrs.retain(|a| *a != addr);
                        if r.addrs.is_empty() {
                            self.redials.remove(&peer);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn sync_event(&mut self, e: request_response::Event<Vec<u8>, Vec<u8>>) {
        match e {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // Membership was read once, when the connection came up: a
                // message costs no store read.
                // A member revoked since it connected is cut off.
                if self.admitted.contains(&peer) && !self.in_good_standing(&peer) {
                    self.refuse(peer);
                }
                if !self.admitted.contains(&peer) {
                    // Nothing of a non-member's message is read into a session.
                    drop(channel);
                    if !self.refusing.contains_key(&peer) {
                        self.refuse(peer);
                    }
                    return;
                }
                // Acknowledge delivery at once; the sync protocol answers with
                // its own messages.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, Vec::new());
                self.feed(peer, Input::Received(request));
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { .. },
                ..
            } if self.refusing.contains_key(&peer) => self.refused(peer),
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { .. },
                ..
            } => self.delivered(peer),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if self.refusing.contains_key(&peer) {
                    self.refused(peer);
                    return;
                }
                tracing::warn!(%peer, %error, "a sync message was not delivered");
                self.delivered(peer);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::warn!(%peer, %error, "a sync message could not be received");
            }
            _ => {}
        }
    }

    /// Send the peer's queued messages while fewer than [`WINDOW`] are
    /// unacknowledged, so a fast sender waits for a slow receiver instead of
    /// overrunning its inbound stream limit.
    fn pump(&mut self, peer: PeerId) {
        let Some(out) = self.outbox.get_mut(&peer) else {
            return;
        };
        while out.in_flight < WINDOW {
            let Some(bytes) = out.queue.pop_front() else {
                break;
            };
            out.in_flight += 1;
            self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        }
    }

    /// A message to `peer` was acknowledged (or failed): room for the next.
    fn delivered(&mut self, peer: PeerId) {
        if let Some(out) = self.outbox.get_mut(&peer) {
            out.in_flight = out.in_flight.saturating_sub(1);
        }
        self.pump(peer);
    }

    /// Feed one input to the peer's session and carry out its outputs.
    fn feed(&mut self, peer: PeerId, input: Input) {
        let live = self.live;
        let session = self.sessions.entry(peer).or_insert_with(|| {
            let mut s = Session::new();
            s.set_live(live);
            s.set_remote(identity::actor_of(&peer).map(|a| a.to_bytes().to_vec()));
            s
        });
        let replica = &self.replica;
        let outs = tokio::task::block_in_place(|| replica.drive(session, now_ms(), input));
        let outs = match outs {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%peer, error = %e, "sync storage error");
                return;
            }
        };
        let mut start = false;
        let mut restart = false;
        for o in outs {
            match o {
                Output::Send(bytes) => {
                    self.outbox.entry(peer).or_default().queue.push_back(bytes);
                    self.pump(peer);
                }
                Output::Notify(Notification::PeerHello { live }) => {
                    // Two live nodes sync as they meet; a peer in manual mode
                    // moves nothing until it syncs itself.
                    start |= self.live && live && self.auto_started.insert(peer);
                }
                Output::Notify(Notification::Progress(p)) => {
                    self.last.entry(peer).or_default().progress = Some(p);
                    let _ = self.progress.send(SyncProgress { peer, progress: p });
                }
                Output::Notify(Notification::Blocked { report, withheld }) => {
                    let blocked = self.replica.sync_gate().unwrap_or_default();
                    // The sync brought the decisions that open the gate: the
                    // changes it held back go in another sync at once.
                    if blocked.is_empty() && self.syncs.contains_key(&peer) {
                        restart = true;
                        continue;
                    }
                    tracing::info!(%peer, records = withheld.len(), "sync blocked by unresolved conflicts");
                    let last = self.last.entry(peer).or_default();
                    last.report = Some(report.clone());
                    last.outcome = Some("blocked".into());
                    for reply in self.syncs.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::Blocked {
                            peer: peer.to_string(),
                            blocked: blocked.clone(),
                            report: Box::new(report.clone()),
                        }));
                    }
                }
                Output::Notify(Notification::Synced(report)) => {
                    let last = self.last.entry(peer).or_default();
                    last.report = Some(report.clone());
                    last.outcome = Some("synced".into());
                    if let Err(e) = self.replica.note_synced(&peer.to_string(), report.root) {
                        tracing::warn!(%peer, error = %e, "could not remember the peer");
                    }
                    for reply in self.syncs.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Ok(report.clone()));
                    }
                }
                Output::Notify(Notification::InSync { root }) => {
                    if let Err(e) = self.replica.note_synced(&peer.to_string(), root) {
                        tracing::warn!(%peer, error = %e, "could not remember the peer");
                    }
                }
                Output::Notify(Notification::Refused { reason }) => {
                    tracing::warn!(%peer, %reason, "the peer refused this node");
                    for reply in self.syncs.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::Refused {
                            peer: peer.to_string(),
                            reason: reason.clone(),
                        }));
                    }
                    self.refused_by.insert(peer, reason);
                }
                Output::Notify(Notification::Incomplete { reason, .. })
                | Output::Notify(Notification::ProtocolError { reason }) => {
                    self.last.entry(peer).or_default().outcome =
                        Some(format!("incomplete: {reason}"));
                    for reply in self.syncs.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::Sync {
                            peer: peer.to_string(),
                            reason: reason.clone(),
                        }));
                    }
                }
                Output::Close => {
                    self.sessions.remove(&peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                _ => {}
            }
        }
        if start || restart {
            self.feed(peer, Input::Start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle whose task never reads: calls that do not wait are refused
    /// with `Busy` once the queue is full, and with `Stopped` once the task
    /// is gone; nothing queues without bound.
    #[test]
    fn a_full_command_queue_refuses_with_busy_then_stopped() {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (progress, _) = tokio::sync::broadcast::channel(1);
        let node = Node {
            peer_id: PeerId::random(),
            commands,
            progress,
        };
        for _ in 0..COMMAND_QUEUE {
            node.set_live(true).expect("room in the queue");
        }
        assert!(matches!(node.set_live(false), Err(NodeError::Busy)));
        assert!(matches!(
            node.forget_peer(PeerId::random()),
            Err(NodeError::Busy)
        ));
        drop(rx);
        assert!(matches!(node.set_live(true), Err(NodeError::Stopped)));
    }
}
