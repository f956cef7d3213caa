//! The control socket: while `fieldsync serve` runs on a store, it owns the
//! store (sled allows one process), so the other commands on that store are
//! sent to it through a Unix socket in the store directory (`control.sock`,
//! readable and writable by its owner only) and run there, against the served
//! replica and node.
//!
//! A request is the command as JSON, then end of stream; the answer is one
//! status byte (0: success, 1: failure) followed by the command's standard
//! output, or by the error message.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Command, Ctx, Failure};

/// The socket's file name in the store directory.
pub(crate) const SOCKET: &str = "control.sock";

/// The largest request read (a command line is far smaller).
const MAX_REQUEST: u64 = 1 << 20;

/// A command sent to a running `serve`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) json: bool,
    #[serde(default)]
    pub(crate) verbose: bool,
    pub(crate) command: Command,
}

/// What commands run against: the served replica and its node.
pub(crate) struct Served {
    pub(crate) replica: fieldsync::Replica,
    pub(crate) node: fieldsync::node::Node,
    pub(crate) rt: tokio::runtime::Handle,
}

/// Whether a command goes to a running `serve` (those that use the store;
/// not `init`, `serve`, `secret` or `bench`).
pub(crate) fn forwarded(c: &Command) -> bool {
    !matches!(
        c,
        Command::Init { .. }
            | Command::Serve { .. }
            | Command::Secret { .. }
            | Command::Bench { .. }
    )
}

#[cfg(unix)]
pub(crate) use unix::{connect, forward, listen};

#[cfg(not(unix))]
pub(crate) fn connect(_dir: &Path) -> Option<std::convert::Infallible> {
    None
}

#[cfg(not(unix))]
pub(crate) fn forward(
    s: std::convert::Infallible,
    _: &Request,
    _: &mut Vec<u8>,
) -> Result<(), Failure> {
    match s {}
}

#[cfg(not(unix))]
pub(crate) fn listen(_dir: &Path, _served: Served) -> Result<PathBuf, Failure> {
    Ok(PathBuf::from("(no control socket on this platform)"))
}

/// Run one request against the served store; the answer's bytes.
fn answer(served: &Served, request: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let result = match serde_json::from_slice::<Request>(request) {
        Ok(req) => {
            let ctx = Ctx {
                dir: None,
                json: req.json,
                verbose: req.verbose,
                served: Some(served),
            };
            crate::run(&ctx, &req.command, &mut out)
        }
        Err(e) => Err(Failure(format!("bad control request: {e}"))),
    };
    if let Err(Failure(msg)) = result {
        out.clear();
        out.push(1);
        out.extend_from_slice(msg.as_bytes());
    }
    out
}

#[cfg(unix)]
mod unix {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    /// Connect to the store's running `serve`, if one answers.
    pub(crate) fn connect(dir: &Path) -> Option<UnixStream> {
        UnixStream::connect(dir.join(SOCKET)).ok()
    }

    /// Send a request and copy its answer into `out`.
    pub(crate) fn forward(
        mut stream: UnixStream,
        request: &Request,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let lost = |e: std::io::Error| Failure(format!("the control socket failed: {e}"));
        let body = serde_json::to_vec(request)?;
        stream.write_all(&body).map_err(lost)?;
        stream.shutdown(std::net::Shutdown::Write).map_err(lost)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(lost)?;
        match answer.split_first() {
            Some((0, rest)) => {
                out.extend_from_slice(rest);
                Ok(())
            }
            Some((_, rest)) => Err(Failure(String::from_utf8_lossy(rest).into_owned())),
            None => Err(Failure(
                "the served store closed the control socket without an answer".into(),
            )),
        }
    }

    /// Listen on the store's control socket; each connection is served on its
    /// own thread. A socket file left by a process that no longer runs is
    /// replaced.
    pub(crate) fn listen(dir: &Path, served: Served) -> Result<PathBuf, Failure> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(SOCKET);
        if connect(dir).is_some() {
            return Err(Failure(format!(
                "{} is in use by another process",
                path.display()
            )));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure(format!("cannot remove {}: {e}", path.display()))),
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| Failure(format!("cannot listen on {}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let served = std::sync::Arc::new(served);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                };
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    if let Err(e) = (&mut stream).take(MAX_REQUEST).read_to_end(&mut request) {
                        tracing::warn!(error = %e, "control request unreadable");
                        return;
                    }
                    let answer = answer(&served, &request);
                    if let Err(e) = stream.write_all(&answer) {
                        tracing::warn!(error = %e, "control answer not delivered");
                    }
                });
            }
        });
        Ok(path)
    }
}
