//! The human output of every command, pinned by snapshots (insta): each test
//! runs a short session with the built binary on real stores and compares
//! the transcript (commands, standard output, standard error, exit status)
//! with `tests/snapshots/`. What changes from run to run is replaced before
//! comparing: member ids by `MEMBER-1`, `MEMBER-2`… in order of appearance,
//! hashes, entry ids, times, ports, directories, byte counts and durations.
//! After a deliberate change of output, rerun with `INSTA_UPDATE=always` and
//! review the `.snap` diff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use regex_lite::Regex;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldsync")
}

/// A session: a directory of stores, and the transcript so far.
struct Session {
    dir: tempfile::TempDir,
    transcript: String,
    servers: Vec<Child>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Session {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("schema.toml"),
            r#"
[collections.customer]
[collections.customer.fields]
name = { type = "string", required = true }
tax_id = "string"
since = "timestamp"

[collections.expense]
policy = "user_action"
queue = "sync_errors"
block_sync_on_conflict = true
status = { field = "status", states = ["draft", "submitted", "approved"] }
[collections.expense.fields]
title = { type = "string", required = true }
amount = { type = "float", required = true }
status = { type = "string", default = "draft" }

[[collections.expense.rules]]
field = "amount"
max = 5000
code = "over_limit"
message = "an expense over 5000 needs a director"
"#,
        )
        .unwrap();
        // A device's schema: the same collections without the hub's rule
        // (devices do not know every rule an authority checks).
        let full = std::fs::read_to_string(dir.path().join("schema.toml")).unwrap();
        let device = full[..full.find("[[collections.expense.rules]]").unwrap()].to_owned();
        std::fs::write(dir.path().join("device.toml"), device).unwrap();
        Session {
            dir,
            transcript: String::new(),
            servers: Vec::new(),
        }
    }

    fn path(&self, store: &str) -> PathBuf {
        self.dir.path().join(store)
    }

    /// Run `fieldsync --store STORE ARGS` in the session directory, add it
    /// to the transcript, and return its standard output.
    fn run(&mut self, store: &str, args: &[&str]) -> String {
        let out = Command::new(bin())
            .current_dir(self.dir.path())
            .arg("--store")
            .arg(store)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.transcript
            .push_str(&format!("$ fieldsync --store {store} {}\n", args.join(" ")));
        self.transcript.push_str(&stdout);
        for line in stderr.lines() {
            self.transcript.push_str(&format!("[stderr] {line}\n"));
        }
        if !out.status.success() {
            self.transcript
                .push_str(&format!("[exit {}]\n", out.status.code().unwrap_or(-1)));
        }
        self.transcript.push('\n');
        stdout
    }

    /// `fieldsync serve` on STORE: its startup lines go into the transcript;
    /// returns its address.
    fn serve(&mut self, store: &str, extra: &[&str]) -> String {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin())
            .current_dir(self.dir.path())
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        self.transcript.push_str(&format!(
            "$ fieldsync --store {store} serve --listen /ip4/127.0.0.1/tcp/0 {}\n",
            extra.join(" ")
        ));
        let mut addr = String::new();
        // The startup lines: addresses, control socket, mode, reactions.
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            self.transcript.push_str(&line);
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                addr = a.to_owned();
            }
            if line.starts_with("mode ") {
                break;
            }
        }
        self.transcript.push('\n');
        // Keep reading (and dropping) whatever it prints later.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.servers.push(child);
        addr
    }

    fn note(&mut self, text: &str) {
        self.transcript.push_str(&format!("# {text}\n"));
    }

    /// The transcript with what varies replaced.
    fn redacted(&self) -> String {
        let mut t = self.transcript.clone();
        let dir = self.dir.path().to_string_lossy().into_owned();
        t = t.replace(&dir, "[DIR]");
        // Full member ids first, in order of appearance; short ones map to
        // the same names.
        let full = Regex::new(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}").unwrap();
        let mut names: HashMap<String, String> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for m in full.find_iter(&t) {
            let id = m.as_str().to_owned();
            if !names.contains_key(&id) {
                let name = format!("MEMBER-{}", names.len() + 1);
                names.insert(id.clone(), name);
                order.push(id);
            }
        }
        for id in &order {
            let name = &names[id];
            t = t.replace(id, name);
            let short = format!("{}…", &id[..16]);
            t = t.replace(&short, &format!("{name}…"));
        }
        // Entry ids, and the prefixes of them commands print and take.
        let entry = Regex::new(r"\b[0-9a-f]{32}\b").unwrap();
        let mut entries: Vec<String> = Vec::new();
        for m in entry.find_iter(&t) {
            if !entries.iter().any(|e| e == m.as_str()) {
                entries.push(m.as_str().to_owned());
            }
        }
        for (n, id) in entries.iter().enumerate() {
            for k in [32, 12, 10, 8] {
                let re = Regex::new(&format!(r"\b{}\b", &id[..k])).unwrap();
                t = re
                    .replace_all(&t, format!("ENTRY-{}", n + 1).as_str())
                    .into_owned();
            }
        }
        let rules: [(&str, &str); 16] = [
            (r"conflicts show [0-9a-f]{8}\b", "conflicts show [ENTRY8]"),
            (r"\brx[0-9a-f]{24}\b", "[REACTION-ID]"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "[ISO]"),
            (r#""(\w+)_ms":\d+"#, r#""${1}_ms":[MS]"#),
            (r#""\d{13}\.\d{5}""#, r#""[HLC]""#),
            (r"wrote \d+ bytes", "wrote [N] bytes"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "[LOGTIME]"),
            (r"[0-9a-f]{64}", "[HASH]"),
            (r"[0-9a-f]{32}", "[ENTRY]"),
            (r"\b[0-9a-f]{12}\b", "[ENTRY12]"),
            (r"conflict [0-9a-f]{8}\b", "conflict [ENTRY8]"),
            (r"resolve [0-9a-f]{8}\b", "resolve [ENTRY8]"),
            (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[TIME]"),
            (r"/tcp/\d+", "/tcp/[PORT]"),
            (
                r"\d+ bytes sent, \d+ received; \d+ ms",
                "[N] bytes sent, [N] received; [N] ms",
            ),
            (r"fingerprint [0-9a-f]+", "fingerprint [FP]"),
        ];
        for (pattern, with) in rules {
            t = Regex::new(pattern)
                .unwrap()
                .replace_all(&t, with)
                .into_owned();
        }
        t
    }
}

/// Sync `dev` with the hub, unrecorded, until a sync moves nothing (at most
/// five times): what the recorded syncs print then depends on the steps of
/// the story, not on how far the previous sync got. A single unrecorded sync
/// once left the device with one more record for the hub in a clean CI run
/// (the recorded sync after `put e3` sent 2 records, not 1); which record it
/// was is not known yet.
fn settle(s: &mut Session, dev: &str, addr: &str) {
    for _ in 0..5 {
        let out = Command::new(bin())
            .current_dir(s.dir.path())
            .args(["--store", dev, "sync", "--peer", addr, "--timeout", "30"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(": 0 records sent, 0 received;") {
            return;
        }
    }
}

#[test]
fn records_schema_and_files() {
    let mut s = Session::new();
    s.run("hub", &["init", "--schema", "schema.toml"]);
    s.run("hub", &["schema"]);
    s.run(
        "hub",
        &[
            "put",
            "customer",
            "c1",
            "name=Acme",
            "tax_id=T-1",
            "since=2026-01-15 09:30:00",
        ],
    );
    s.run("hub", &["put", "customer", "c1", "name=Acme Inc"]);
    s.run("hub", &["get", "customer", "c1"]);
    s.run("hub", &["put", "customer", "c2", "name=Bolt"]);
    s.run("hub", &["list", "customer"]);
    s.run("hub", &["delete", "customer", "c2"]);
    s.run("hub", &["list", "customer", "--deleted"]);
    s.run("hub", &["list", "customer", "--where", "name=Acme Inc"]);
    s.run(
        "hub",
        &["export", "customer", "c1", "--out", "c1.automerge"],
    );
    s.run("other", &["init", "--schema", "schema.toml"]);
    s.run("other", &["import", "customer", "c1", "c1.automerge"]);
    std::fs::write(s.path("notes.txt"), "Gate code 4411").unwrap();
    s.run("hub", &["put", "customer", "c3", "name@=notes.txt"]);
    s.run("hub", &["get", "customer", "c3"]);
    s.note("mistakes: each error says what is wrong and what to do");
    s.run("hub", &["get", "customer", "nope"]);
    s.run("hub", &["put", "customer", "c4", "tax_id=T-9"]);
    s.run(
        "hub",
        &["put", "customer", "c4", "name=X", "since=yesterday"],
    );
    s.run("hub", &["put", "nope", "x", "a=1"]);
    s.run("hub", &["put", "expense", "x1", "title=Car", "amount=9000"]);
    s.run("missing", &["get", "customer", "c1"]);
    s.run("hub", &["import", "customer", "c9", "no-such-file"]);
    s.note("JSON: times as ISO 8601 strings and milliseconds, HLC as a string");
    let json = s.run("hub", &["--json", "get", "customer", "c1"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["meta"]["modified"].as_str().unwrap().ends_with('Z'));
    assert!(v["meta"]["modified_ms"].as_u64().unwrap() < 1 << 53);
    assert!(v["meta"]["modified_hlc"].is_string());
    insta::assert_snapshot!(s.redacted());
}

#[test]
fn a_group_its_members_and_a_sync() {
    let mut s = Session::new();
    for store in ["hub", "dev", "stranger"] {
        s.run(store, &["init", "--schema", "schema.toml"]);
    }
    let hub = s.run("hub", &["id"]).trim().to_owned();
    let dev = s.run("dev", &["id"]).trim().to_owned();
    s.run("hub", &["members"]);
    s.run("hub", &["group", "found", "--role", "authority"]);
    s.run("hub", &["members", "add", &dev, "--role", "device"]);
    s.run(
        "hub",
        &[
            "group", "role", "clerk", "--read", "customer", "--write", "expense", "--scope", "team",
        ],
    );
    s.run("dev", &["group", "join", &hub]);
    s.run("hub", &["group", "show"]);
    s.run("hub", &["put", "customer", "c1", "name=Acme"]);
    let addr = s.serve("hub", &[]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    s.run("dev", &["members"]);
    s.run("dev", &["get", "customer", "c1"]);
    s.note("a store that is not a member is refused, and told what to do");
    s.run("stranger", &["sync", "--peer", &addr, "--timeout", "30"]);
    s.note("an address nobody listens at");
    s.run(
        "dev",
        &["sync", "--peer", "/ip4/127.0.0.1/tcp/9", "--timeout", "10"],
    );
    s.run("dev", &["sync", "--peer", "not-an-address"]);
    s.run("dev", &["members", "add", &dev]);
    s.run("hub", &["members", "remove", &dev]);
    s.run("hub", &["members"]);
    s.run("hub", &["secret", "new"]);
    s.run("hub", &["secret", "remove"]);
    insta::assert_snapshot!(s.redacted());
}

#[test]
fn conflicts_pending_events_and_status() {
    let mut s = Session::new();
    s.run("hub", &["init", "--schema", "schema.toml"]);
    s.run("dev", &["init", "--schema", "device.toml"]);
    let hub = s.run("hub", &["id"]).trim().to_owned();
    let dev = s.run("dev", &["id"]).trim().to_owned();
    s.run("hub", &["group", "found", "--role", "authority"]);
    s.run("hub", &["members", "add", &dev]);
    s.run("dev", &["group", "join", &hub]);
    let addr = s.serve("hub", &[]);
    s.run(
        "dev",
        &[
            "put",
            "expense",
            "e1",
            "title=Flight",
            "amount=420",
            "status=submitted",
        ],
    );
    s.run("dev", &["pending"]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    settle(&mut s, "dev", &addr);
    s.run("dev", &["pending"]);
    s.note("offline, the device edits while the hub approves (Pega)");
    s.run("dev", &["put", "expense", "e1", "amount=465.5"]);
    s.run("hub", &["put", "expense", "e1", "status=approved"]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    settle(&mut s, "dev", &addr);
    s.run("dev", &["pending"]);
    s.run("dev", &["status"]);
    s.run("hub", &["conflicts", "list"]);
    let list = s.run("hub", &["--json", "conflicts", "list", "--open"]);
    let entries: serde_json::Value = serde_json::from_str(&list).unwrap();
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    s.run("hub", &["conflicts", "show", &id[..10]]);
    s.note("the sync gate: the device's own changes to `expense` wait");
    s.run("dev", &["put", "expense", "e2", "title=Hotel", "amount=90"]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    s.run(
        "hub",
        &["conflicts", "assign", &id[..10], "finance", "--to", "ana"],
    );
    s.run(
        "hub",
        &["conflicts", "resolve", &id[..10], "--keep", "nobody"],
    );
    s.run(
        "hub",
        &[
            "conflicts",
            "resolve",
            &id[..10],
            "--keep",
            "device",
            "--reopen",
            "submitted",
            "--note",
            "approved again with the new amount",
        ],
    );
    s.run("hub", &["conflicts", "show", &id[..10]]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    settle(&mut s, "dev", &addr);
    s.run("dev", &["pending"]);
    s.run("dev", &["get", "expense", "e1"]);
    s.note("a rejection: the hub's rule refuses what the device could not check");
    // Settled again after the reads above: in clean CI runs the device once
    // more had a record for the hub here (the sync after `put e3` sent 2).
    settle(&mut s, "dev", &addr);
    s.run("dev", &["put", "expense", "e3", "title=Car", "amount=9000"]);
    s.run("dev", &["sync", "--peer", &addr, "--timeout", "30"]);
    settle(&mut s, "dev", &addr);
    s.run("dev", &["pending"]);
    s.run("dev", &["list", "expense"]);
    s.run("dev", &["list", "expense", "--rejected"]);
    s.run("dev", &["get", "expense", "e3"]);
    s.run("dev", &["pending", "cancel", "99"]);
    let events = s.run("dev", &["--json", "pending"]);
    let v: serde_json::Value = serde_json::from_str(&events).unwrap();
    let last = v.as_array().unwrap().last().unwrap()["id"].to_string();
    s.run("dev", &["pending", "dismiss", &last]);
    s.run("dev", &["pending"]);
    s.run("hub", &["status"]);
    insta::assert_snapshot!(s.redacted());
}

#[test]
fn reactions_attached_by_a_file() {
    let mut s = Session::new();
    s.run("hub", &["init", "--schema", "schema.toml"]);
    std::fs::write(
        s.path("approve.sh"),
        "#!/bin/sh\nprintf '[{\"collection\":\"customer\",\"key\":\"audit\",\"fields\":{\"name\":\"audited\"}}]'\n",
    )
    .unwrap();
    std::fs::write(
        s.path("hub").join("reactions.toml"),
        "[[reaction]]\nname = \"audit\"\ncollection = \"expense\"\nfield = \"status\"\nequals = \"approved\"\nrun = [\"sh\", \"../approve.sh\"]\n",
    )
    .unwrap();
    let _ = s.serve("hub", &[]);
    s.run(
        "hub",
        &[
            "put",
            "expense",
            "e1",
            "title=Flight",
            "amount=10",
            "status=approved",
        ],
    );
    // The runner takes the job at once; wait for its write (at most 20 s).
    let store = s.path("hub");
    for _ in 0..200 {
        let out = Command::new(bin())
            .arg("--store")
            .arg(&store)
            .args(["list", "customer"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("audited") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.run("hub", &["list", "customer"]);
    s.run("hub", &["status"]);
    insta::assert_snapshot!(s.redacted());
}
