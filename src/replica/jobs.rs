//! Reactions that run a program (Creatio's business logic on the main node,
//! attached by a person with a reactions file, see `docs/pending.md`): the
//! triggering transaction queues a job under `q:` in its own batch; a runner
//! takes the jobs one by one, runs the program with the trigger on its
//! standard input, and writes the records it prints together with the job's
//! removal, in one transaction. A failed run is tried again later.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Replica;
use super::reactions::{Reaction, Trigger, written_id_of};
use crate::error::{Error, Result};
use crate::store::keys;
use crate::value::{Fields, Value};

/// Runs of a failing job before it is left as failed.
pub const MAX_ATTEMPTS: u32 = 5;

/// The most a program may print (1 MiB): more is a failed run.
const MAX_OUTPUT: usize = 1 << 20;

/// A program a reaction runs.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) argv: Vec<String>,
    pub(crate) timeout: Duration,
    /// The directory it runs in (default: the process's).
    pub(crate) dir: Option<std::path::PathBuf>,
}

/// A queued run of a reaction's program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Job {
    reaction: String,
    collection: String,
    id: String,
    cause: String,
    before: Option<serde_json::Value>,
    after: serde_json::Value,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    last_error: Option<String>,
    /// Not before this (ms since the epoch, this replica's clock).
    #[serde(default)]
    next_at: u64,
}

fn fields_json(f: &Fields) -> serde_json::Value {
    serde_json::Value::Object(f.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

impl Job {
    pub(crate) fn new(r: &Reaction, t: &Trigger<'_>) -> Self {
        Job {
            reaction: r.name.clone(),
            collection: t.collection.to_owned(),
            id: t.id.to_owned(),
            cause: t.cause.to_owned(),
            before: t.before.map(fields_json),
            after: fields_json(t.after),
            attempts: 0,
            last_error: None,
            next_at: 0,
        }
    }

    /// `q:<reaction id of the trigger>`: one job per reaction and trigger.
    pub(crate) fn key(&self) -> Vec<u8> {
        let id = written_id_of(&self.reaction, &self.collection, &self.id, &self.cause, "");
        let mut k = keys::JOBS.to_vec();
        k.extend_from_slice(id.as_bytes());
        k
    }

    pub(crate) fn encode(&self) -> std::result::Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }

    /// What the program reads on its standard input.
    fn input(&self) -> serde_json::Value {
        serde_json::json!({
            "reaction": self.reaction,
            "collection": self.collection,
            "id": self.id,
            "before": self.before,
            "after": self.after,
        })
    }
}

/// A queued reaction job, as [`Replica::reaction_jobs`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactionJob {
    /// The reaction.
    pub reaction: String,
    /// The record that triggered it.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// Runs so far.
    pub attempts: u32,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// Whether it failed [`MAX_ATTEMPTS`] times and is left alone.
    pub failed: bool,
}

/// Wakes the runner when a commit queues jobs.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    waiting: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn notify(&self) {
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Wait until notified or `timeout` passed.
    fn wait(&self, timeout: Duration) {
        let guard = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }
}

/// The background runner of reaction jobs ([`Replica::spawn_reaction_runner`]);
/// it stops when dropped.
#[derive(Debug)]
pub struct ReactionRunner {
    stop: Arc<std::sync::atomic::AtomicBool>,
    replica: Replica,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReactionRunner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.replica.inner.jobs_waiting.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `argv` with `input` on its standard input for at most `timeout`; its
/// standard output, or why it failed.
fn run_program(command: &Command, input: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let timeout = command.timeout;
    let (program, args) = command
        .argv
        .split_first()
        .ok_or("the reaction names no program")?;
    let mut run = std::process::Command::new(program);
    if let Some(d) = &command.dir {
        run.current_dir(d);
    }
    let mut child = run
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is fine.
        let _ = stdin.write_all(input);
    }
    let mut stdout = child.stdout.take().ok_or("no standard output")?;
    let mut stderr = child.stderr.take().ok_or("no standard error")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut out);
        out
    });
    let errors = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut err);
        err
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` did not finish in {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("`{program}`: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    let err = errors.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        return Err(format!(
            "`{program}` exited with {status}{}",
            if text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", text.trim())
            }
        ));
    }
    if out.len() > MAX_OUTPUT {
        return Err(format!("`{program}` printed more than {MAX_OUTPUT} bytes"));
    }
    Ok(out)
}

/// The records a program printed: `(collection, key, fields)`.
fn parse_writes(
    out: &[u8],
    schema: &crate::schema::Schema,
) -> std::result::Result<Vec<(String, String, Fields)>, String> {
    let text = String::from_utf8_lossy(out);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("its output is not JSON: {e}"))?;
    let items = match j {
        serde_json::Value::Array(v) => v,
        serde_json::Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut writes = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let collection = item
            .get("collection")
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("record {n} of its output names no `collection`"))?;
        let c = schema.collection(collection).map_err(|e| e.to_string())?;
        let key = match item.get("key") {
            Some(serde_json::Value::String(k)) => k.clone(),
            Some(other) => other.to_string(),
            None => n.to_string(),
        };
        let mut fields = Fields::new();
        if let Some(obj) = item.get("fields").and_then(|f| f.as_object()) {
            for (name, v) in obj {
                let f = c.field(name).map_err(|e| e.to_string())?;
                fields.insert(name.clone(), Value::from_json(&f.ty, v)?);
            }
        }
        writes.push((collection.to_owned(), key, fields));
    }
    Ok(writes)
}

impl Replica {
    fn command_reaction(&self, name: &str) -> Option<(Reaction, Arc<Command>)> {
        let all = self
            .inner
            .reactions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        all.values()
            .flatten()
            .find(|r| r.name == name)
            .and_then(|r| r.command.clone().map(|c| (r.clone(), c)))
    }

    /// The reaction jobs waiting in the queue (and the failed ones kept).
    pub fn reaction_jobs(&self) -> Result<Vec<ReactionJob>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::JOBS, &mut |_, v| {
                if let Some(j) = Job::decode(v) {
                    out.push(ReactionJob {
                        failed: j.attempts >= MAX_ATTEMPTS,
                        reaction: j.reaction,
                        collection: j.collection,
                        id: j.id,
                        attempts: j.attempts,
                        last_error: j.last_error,
                    });
                }
                true
            })?;
        Ok(out)
    }

    /// Run every queued reaction job that is due, one after the other; returns
    /// how many completed. A job whose program fails is kept and tried again
    /// later (after 1, 2, 4, 8 s), up to [`MAX_ATTEMPTS`] runs.
    pub fn run_reaction_jobs(&self) -> Result<usize> {
        let mut due: Vec<(Vec<u8>, Job)> = Vec::new();
        let now = (self.inner.config.clock)();
        self.inner
            .storage
            .for_each_prefix(keys::JOBS, &mut |k, v| {
                if let Some(j) = Job::decode(v)
                    && j.attempts < MAX_ATTEMPTS
                    && j.next_at <= now
                {
                    due.push((k.to_vec(), j));
                }
                true
            })?;
        let mut done = 0;
        for (key, mut job) in due {
            let Some((reaction, command)) = self.command_reaction(&job.reaction) else {
                continue;
            };
            let input = job.input().to_string();
            let result = run_program(&command, input.as_bytes())
                .and_then(|out| parse_writes(&out, &self.schema()));
            match result {
                Ok(writes) => {
                    self.transaction(|tx| {
                        for (collection, k, fields) in writes {
                            let id = written_id_of(&reaction.name, &job.collection, &job.id, &job.cause, &k);
                            if tx.exists(&collection, &id)? {
                                continue;
                            }
                            if let Err(e) = tx.insert(&collection, &id, fields) {
                                tracing::warn!(reaction = %reaction.name, %collection, id, error = %e, "a reaction's write was refused");
                            }
                        }
                        tx.extra.push((key.clone(), None));
                        Ok(())
                    })?;
                    done += 1;
                }
                Err(e) => {
                    job.attempts += 1;
                    tracing::warn!(reaction = %job.reaction, collection = %job.collection, id = %job.id, attempt = job.attempts, error = %e, "a reaction's program failed");
                    job.last_error = Some(e);
                    job.next_at = now + 1000 * (1u64 << job.attempts.min(10));
                    let bytes = job.encode().map_err(|e| Error::Import {
                        collection: job.collection.clone(),
                        reason: e.to_string(),
                    })?;
                    self.inner.storage.put(&key, &bytes)?;
                    self.inner.storage.flush()?;
                }
            }
        }
        Ok(done)
    }

    /// Run reaction jobs on a background thread as commits queue them (and
    /// every second, for retries), until the returned runner is dropped.
    pub fn spawn_reaction_runner(&self) -> ReactionRunner {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("fieldsync-reactions".into())
            .spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = r.run_reaction_jobs() {
                        tracing::warn!(error = %e, "reaction jobs could not run");
                    }
                    r.inner.jobs_waiting.wait(Duration::from_secs(1));
                }
            })
            .ok();
        ReactionRunner {
            stop,
            replica: self.clone(),
            thread,
        }
    }
}
