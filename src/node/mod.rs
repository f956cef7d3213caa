//! The network node: a libp2p swarm that carries the sync protocol between
//! replicas (a shell around [`crate::sync::Session`]; the protocol itself does no
//! IO).
//!
//! Each node owns one swarm (TCP, noise, yamux) with one request-response
//! protocol, `/fieldsync/sync/1`: every sync message is one request whose
//! response is an empty acknowledgement of delivery (the sync protocol has its
//! own acknowledgements). One [`Session`] runs per connected peer; its storage work
//! runs through [`Replica::drive`] on the runtime's blocking section.
//!
//! ```no_run
//! # async fn demo(replica: fieldsync::Replica, other: libp2p::Multiaddr) -> Result<(), Box<dyn std::error::Error>> {
//! use fieldsync::node::Node;
//! let node = Node::start(replica, libp2p::identity::Keypair::generate_ed25519(),
//!     "/ip4/127.0.0.1/tcp/0".parse()?).await?;
//! let peer = node.dial(other).await?;
//! let report = node.sync_now(peer).await?;
//! println!("{} records in, {} out", report.records_received, report.records_sent);
//! # Ok(()) }
//! ```

mod codec;
pub mod identity;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::Replica;
use crate::sync::{Input, Notification, Output, Report, Session};
use codec::SyncCodec;

/// The protocol name of fieldsync's sync messages on libp2p.
pub const PROTOCOL: &str = "/fieldsync/sync/1";

/// How often sessions are given a `Tick` (their retry timers).
const TICK: Duration = Duration::from_millis(500);

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
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
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
}

enum Command {
    Live(bool),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>),
    Sync(PeerId, oneshot::Sender<Result<Report, NodeError>>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
}

/// A running node: a handle to the task that owns the swarm. Dropping every
/// handle stops the node.
#[derive(Debug, Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Start a node for `replica` with identity `keypair`, listening on
    /// `listen` (port 0 picks a free port). Must run on a multi-threaded tokio
    /// runtime (storage work runs in `block_in_place`).
    pub async fn start(
        replica: Replica,
        keypair: Keypair,
        listen: Multiaddr,
    ) -> Result<Self, NodeError> {
        let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_behaviour(|_| Behaviour {
                sync: request_response::Behaviour::new(
                    [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                ),
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        swarm.listen_on(listen).map_err(|e| setup(&e))?;
        let peer_id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            swarm,
            watch: replica.watch(crate::WatchFilter::All),
            live: false,
            admitted: Default::default(),
            replica,
            sessions: HashMap::new(),
            dials: HashMap::new(),
            syncs: HashMap::new(),
            addrs: Vec::new(),
            addr_waiters: Vec::new(),
        };
        tokio::spawn(worker.run(rx));
        Ok(Self {
            peer_id,
            commands: tx,
        })
    }

    /// Live mode (on) or manual mode (off, the default). Live: a change made on
    /// this replica, or received from a peer, is offered at once to every
    /// connected member, and a sync starts whenever a member connects. Manual:
    /// nothing moves until [`Node::sync_now`]. Can be switched while running.
    pub fn set_live(&self, live: bool) -> Result<(), NodeError> {
        self.commands
            .send(Command::Live(live))
            .map_err(|_| NodeError::Stopped)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on (waits for the first one).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Addrs(tx))
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Connect to a peer; returns its peer id once the connection is up.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial(addr, tx))
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Sync with a connected peer until both hold the same records; returns what
    /// moved.
    pub async fn sync_now(&self, peer: PeerId) -> Result<Report, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Sync(peer, tx))
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }
}

struct Worker {
    swarm: Swarm<Behaviour>,
    replica: Replica,
    watch: crate::Watch,
    live: bool,
    /// Peers whose open connections passed the membership check.
    admitted: std::collections::HashSet<PeerId>,
    sessions: HashMap<PeerId, Session>,
    /// Pending dials, by the connection id the dial will have.
    dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>)>,
    syncs: HashMap<PeerId, Vec<oneshot::Sender<Result<Report, NodeError>>>>,
    addrs: Vec<Multiaddr>,
    addr_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
}

impl Worker {
    /// Whether `peer` may exchange data with this replica: any peer while the
    /// group has no members (an open group), else members only.
    fn is_member(&self, peer: &PeerId) -> bool {
        match self.replica.members() {
            Ok(members) => {
                members.is_empty() || members.iter().any(|(m, _)| *m == peer.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the members; refusing the peer");
                false
            }
        }
    }

    /// Refuse a non-member: close its connections before any record moves.
    fn refuse(&mut self, peer: PeerId) {
        tracing::warn!(%peer, "refused a peer that is not a member of the group");
        self.admitted.remove(&peer);
        self.sessions.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                event = self.swarm.select_next_some() => self.event(event),
                change = self.watch.recv() => self.changed(change),
                _ = tick.tick() => {
                    let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
                    for p in peers {
                        self.feed(p, Input::Tick);
                    }
                }
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
            Ok(e) => {
                for p in peers {
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

    fn command(&mut self, c: Command) {
        match c {
            Command::Live(live) => {
                self.live = live;
                for s in self.sessions.values_mut() {
                    s.set_live(live);
                }
                if live {
                    let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
                    for p in peers {
                        self.feed(p, Input::Start);
                    }
                }
            }
            Command::Dial(addr, reply) => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Sync(peer, reply) => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(NodeError::Sync {
                        peer: peer.to_string(),
                        reason: "not connected".into(),
                    }));
                    return;
                }
                self.syncs.entry(peer).or_default().push(reply);
                self.feed(peer, Input::Start);
            }
            Command::Addrs(reply) => {
                if self.addrs.is_empty() {
                    self.addr_waiters.push(reply);
                } else {
                    let _ = reply.send(self.addrs.clone());
                }
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.addrs.push(address);
                for w in self.addr_waiters.drain(..) {
                    let _ = w.send(self.addrs.clone());
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                let member = self.is_member(&peer_id);
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(if member {
                        Ok(peer_id)
                    } else {
                        Err(NodeError::Dial {
                            addr: addr.to_string(),
                            reason: format!("{peer_id} is not a member of this group"),
                        })
                    });
                }
                if !member {
                    self.refuse(peer_id);
                    return;
                }
                self.admitted.insert(peer_id);
                if self.live {
                    self.feed(peer_id, Input::Start);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial {
                        addr: addr.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.sessions.remove(&peer_id);
                self.admitted.remove(&peer_id);
                for reply in self.syncs.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Err(NodeError::Sync {
                        peer: peer_id.to_string(),
                        reason: "the connection closed".into(),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.sync_event(e),
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
                if !self.admitted.contains(&peer) {
                    // Nothing of a non-member's message is read into a session.
                    drop(channel);
                    self.refuse(peer);
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
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::warn!(%peer, %error, "a sync message was not delivered");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::warn!(%peer, %error, "a sync message could not be received");
            }
            _ => {}
        }
    }

    /// Feed one input to the peer's session and carry out its outputs.
    fn feed(&mut self, peer: PeerId, input: Input) {
        let live = self.live;
        let session = self.sessions.entry(peer).or_insert_with(|| {
            let mut s = Session::new();
            s.set_live(live);
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
        for o in outs {
            match o {
                Output::Send(bytes) => {
                    self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
                }
                Output::Notify(Notification::Synced(report)) => {
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
                Output::Notify(Notification::Incomplete { reason, .. })
                | Output::Notify(Notification::Refused { reason })
                | Output::Notify(Notification::ProtocolError { reason }) => {
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
    }
}
