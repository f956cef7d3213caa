//! The `fieldsync` command line, end to end on a real store directory, and the
//! quick-start example.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldsync")
}

fn run(store: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "errors go to stderr only");
    String::from_utf8(out.stderr).unwrap()
}

fn schema_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/schema.toml")
}

/// `N` new stores, each made by `init` with the example schema.
fn stores_with_schema<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| {
        let dir = tempfile::tempdir().unwrap();
        ok(
            dir.path(),
            &["init", "--schema", schema_file().to_str().unwrap()],
        );
        dir
    })
}

#[test]
fn init_put_get_list_delete_with_text_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let out = ok(&s, &["init", "--schema", schema_file().to_str().unwrap()]);
    assert!(out.contains("collections: customer, invoice"), "{out}");

    assert!(
        ok(
            &s,
            &[
                "put",
                "customer",
                "c1",
                "name=Acme",
                "tax_id=T-1",
                "since=1790000000000"
            ]
        )
        .contains("inserted customer/c1")
    );
    ok(
        &s,
        &[
            "put",
            "invoice",
            "i1",
            "customer=c1",
            "total=12.5",
            "tags=a,b",
            "notes=hello",
            "visits=2",
            "lines=3",
        ],
    );
    // put on an existing record updates only the fields given.
    assert!(
        ok(
            &s,
            &["put", "invoice", "i1", "paid=true", "tags=[\"x\",\"y z\"]"]
        )
        .contains("updated invoice/i1")
    );

    let text = ok(&s, &["get", "invoice", "i1"]);
    assert!(
        text.contains("total: 12.5")
            && text.contains("paid: true")
            && text.contains("tags: [x, y z]"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&s, &["--json", "get", "invoice", "i1"])).unwrap();
    assert_eq!(json["fields"]["total"], 12.5);
    assert_eq!(json["fields"]["visits"], 2);
    assert_eq!(json["fields"]["notes"], "hello");
    assert_eq!(json["fields"]["tags"], serde_json::json!(["x", "y z"]));
    assert_eq!(json["meta"]["deleted"], false);
    assert_eq!(json["meta"]["heads"].as_array().unwrap().len(), 1);

    ok(&s, &["put", "invoice", "i2", "customer=c1", "total=3"]);
    let list: serde_json::Value = serde_json::from_str(&ok(
        &s,
        &["--json", "list", "invoice", "--where", "paid=true"],
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(ok(&s, &["list", "invoice"]).contains("2 record(s)"));

    assert!(ok(&s, &["delete", "invoice", "i2"]).contains("deleted invoice/i2"));
    assert!(ok(&s, &["list", "invoice"]).contains("1 record(s)"));
    let all: serde_json::Value =
        serde_json::from_str(&ok(&s, &["--json", "list", "invoice", "--deleted"])).unwrap();
    assert_eq!(all[1]["meta"]["deleted"], true);

    let schema: serde_json::Value = serde_json::from_str(&ok(&s, &["--json", "schema"])).unwrap();
    assert_eq!(schema[1]["name"], "invoice");
}

#[test]
fn errors_go_to_stderr_with_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    assert!(fails(&s, &["get", "customer", "c1"]).contains("no fieldsync store"));
    ok(&s, &["init", "--schema", schema_file().to_str().unwrap()]);
    assert!(fails(&s, &["put", "nope", "x", "a=1"]).contains("unknown collection `nope`"));
    assert!(fails(&s, &["put", "customer", "c1", "colour=red"]).contains("unknown field `colour`"));
    assert!(
        fails(&s, &["put", "invoice", "i1", "customer=c1", "total=lots"])
            .contains("expects a float")
    );
    assert!(
        fails(&s, &["put", "invoice", "i1", "total=1"]).contains("`invoice.customer` is required")
    );
    assert!(fails(&s, &["put", "customer", "c1", "name"]).contains("FIELD=VALUE"));
    assert!(fails(&s, &["get", "customer", "ghost"]).contains("no record `ghost`"));
    let json_err = fails(&s, &["--json", "get", "customer", "ghost"]);
    let v: serde_json::Value = serde_json::from_str(json_err.trim()).unwrap();
    assert!(v["error"].as_str().unwrap().contains("ghost"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[collections.a.fields]\nx = \"nonsense\"").unwrap();
    assert!(
        fails(
            &dir.path().join("other"),
            &["init", "--schema", bad.to_str().unwrap()]
        )
        .contains("unknown type `nonsense`")
    );
    // Nothing was written by any of the failures.
    assert!(ok(&s, &["list", "customer"]).contains("0 record(s)"));
}

#[test]
fn export_and_import_move_a_record_between_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let schema = schema_file();
    ok(&a, &["init", "--schema", schema.to_str().unwrap()]);
    ok(&b, &["init", "--schema", schema.to_str().unwrap()]);
    ok(&a, &["put", "customer", "c1", "name=Acme"]);
    let file = dir.path().join("c1.automerge");
    assert!(
        ok(
            &a,
            &["export", "customer", "c1", "--out", file.to_str().unwrap()]
        )
        .contains("bytes")
    );
    // Export to a pipe writes the same bytes.
    let piped = run(&a, &["export", "customer", "c1"]);
    assert_eq!(piped.stdout, std::fs::read(&file).unwrap());
    assert!(
        ok(&b, &["import", "customer", "c1", file.to_str().unwrap()])
            .contains("imported customer/c1")
    );
    let got: serde_json::Value =
        serde_json::from_str(&ok(&b, &["--json", "get", "customer", "c1"])).unwrap();
    assert_eq!(got["fields"]["name"], "Acme");
    std::fs::write(&file, b"garbage").unwrap();
    assert!(
        fails(&b, &["import", "customer", "c2", file.to_str().unwrap()])
            .contains("not an automerge document")
    );
}

#[test]
fn the_quickstart_example_runs_and_checks_itself() {
    // `cargo test` builds the examples next to the test binaries.
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let demo = examples.join("quickstart");
    assert!(
        demo.exists(),
        "{} is not built: run the whole suite with `cargo test` (a `--test` filter skips building examples)",
        demo.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&demo)
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn the_field_team_demo_converges_over_libp2p() {
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/field_team");
    assert!(
        demo.exists(),
        "{} is not built: run the whole suite with `cargo test`",
        demo.display()
    );
    let out = Command::new(&demo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK: all three peers hold the same 3 records"),
        "{stdout}"
    );
    assert!(
        stdout.contains("laptop ⇄ hub: 2 records sent, 2 received"),
        "{stdout}"
    );
}

#[test]
fn serve_and_sync_move_records_between_two_stores_over_libp2p() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = schema_file();
    let schema = schema.to_str().unwrap();
    ok(a.path(), &["init", "--schema", schema]);
    ok(b.path(), &["init", "--schema", schema]);
    ok(
        a.path(),
        &["put", "customer", "c1", "name=Acme", "tax_id=T-1"],
    );
    ok(
        b.path(),
        &["put", "customer", "c2", "name=Bolt", "tax_id=T-2"],
    );
    // The peer id is made once and kept.
    let id = ok(a.path(), &["id"]);
    assert_eq!(id, ok(a.path(), &["id"]));

    let (server, addr) = serve(a.path(), &[]);
    assert!(addr.ends_with(id.trim()), "{addr} names the peer id {id}");

    let report = ok(
        b.path(),
        &["--json", "sync", "--peer", &addr, "--timeout", "30"],
    );
    drop(server);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["records_received"], 1, "{report}");
    assert_eq!(report["records_sent"], 1, "{report}");
    assert!(ok(b.path(), &["get", "customer", "c1"]).contains("Acme"));
    assert!(ok(a.path(), &["get", "customer", "c2"]).contains("Bolt"));
}

/// A running `fieldsync serve`, stopped when dropped (also when a test fails).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `fieldsync serve` on a store; returns the process and its address.
fn serve(store: &Path, extra: &[&str]) -> (Server, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin())
        .arg("--store")
        .arg(store)
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server(child);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (server, addr)
}

#[test]
fn a_live_server_relays_between_processes_that_never_meet() {
    let dirs = stores_with_schema::<3>();
    let [a, b, c] = [0, 1, 2].map(|i| dirs[i].path());
    ok(a, &["put", "customer", "c1", "name=Acme"]);
    // Both live (a manual node has nothing pushed into it, and is synced
    // with only when it asks).
    let (server_a, addr_a) = serve(a, &["--live"]);
    // B connects to A at start and, live, syncs with it at once.
    let (server_b, addr_b) = serve(b, &["--live", "--peer", &addr_a]);
    // C syncs with B only; A's record must come through B.
    let mut got = false;
    for _ in 0..50 {
        ok(c, &["sync", "--peer", &addr_b, "--timeout", "10"]);
        if run(c, &["get", "customer", "c1"]).status.success() {
            got = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop((server_a, server_b));
    assert!(got, "A's record did not reach C through B");
    assert!(ok(c, &["get", "customer", "c1"]).contains("Acme"));
}

#[test]
fn members_and_the_group_are_one_command_set_and_every_command_says_what_it_did() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    ok(a.path(), &["init"]);
    ok(b.path(), &["init"]);
    let id_a = ok(a.path(), &["id"]).trim().to_owned();
    let id_b = ok(b.path(), &["id"]).trim().to_owned();
    // Without a group: no members, and the list says how to make one.
    assert!(ok(a.path(), &["members"]).contains("no group"));
    // Adding a member needs a group.
    let err = fails(a.path(), &["members", "add", &id_b]);
    assert!(err.contains("found or join one"), "{err}");
    let out = ok(a.path(), &["group", "found", "--role", "authority"]);
    assert!(
        out.contains("founded a group") && out.contains(&id_a),
        "{out}"
    );
    assert!(out.contains("fieldsync group join"), "{out}");
    let out = ok(a.path(), &["members", "add", &id_b, "--role", "device"]);
    assert!(
        out.contains(&format!("added member {id_b} as `device`")),
        "{out}"
    );
    let out = ok(a.path(), &["members", "add", &id_b, "--role", "authority"]);
    assert!(
        out.contains("changed member") && out.contains("`device` -> `authority`"),
        "{out}"
    );
    let list = ok(a.path(), &["members", "list"]);
    assert!(
        list.contains(&id_a) && list.contains("root") && list.contains("this store"),
        "{list}"
    );
    assert!(list.contains(&id_b) && list.contains("authority"), "{list}");
    // The actor in hex is accepted for a member id, and shown as the peer id.
    let json: serde_json::Value =
        serde_json::from_str(&ok(a.path(), &["--json", "members"])).unwrap();
    let members = json["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{json}");
    assert!(
        members
            .iter()
            .all(|m| m["member"].as_str().unwrap().starts_with("12D3KooW"))
    );
    let err = fails(a.path(), &["members", "add", "nonsense"]);
    assert!(
        err.contains("is not a member id") && err.contains("fieldsync id"),
        "{err}"
    );
    let err = fails(a.path(), &["members", "add", &id_b, "--role", "boss"]);
    assert!(err.contains("no role `boss`"), "{err}");
    let out = ok(a.path(), &["members", "remove", &id_b]);
    assert!(out.contains(&format!("revoked member {id_b}")), "{out}");
    assert!(ok(a.path(), &["members"]).contains("revoked"));
    let err = fails(
        a.path(),
        &[
            "members",
            "remove",
            "12D3KooWBmwkafWE2fqfzS96VoTZXPmJdRz1ZF3kwuNcjqbJb2Bp",
        ],
    );
    assert!(err.contains("is not a member"), "{err}");
}

#[test]
fn sync_with_an_unreachable_peer_fails_with_a_clear_message() {
    let a = tempfile::tempdir().unwrap();
    ok(a.path(), &["init"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let err = fails(a.path(), &["sync", "--peer", &addr, "--timeout", "10"]);
    assert!(err.contains("could not reach"), "{err}");
    let err = fails(a.path(), &["sync", "--peer", "not-an-address"]);
    assert!(err.contains("is not a peer address"), "{err}");
}

/// The records of a store as `get --json` prints them, by id.
fn records_json(store: &Path, ids: &[&str]) -> Vec<serde_json::Value> {
    ids.iter()
        .map(|id| serde_json::from_str(&ok(store, &["--json", "get", "customer", id])).unwrap())
        .collect()
}

#[test]
fn three_processes_converge_while_two_of_them_serve() {
    let dirs = stores_with_schema::<3>();
    let [a, b, c] = [0, 1, 2].map(|i| dirs[i].path());
    let (_server_a, addr_a) = serve(a, &[]);
    let (_server_b, addr_b) = serve(b, &["--live", "--peer", &addr_a]);
    // A is served: its commands go through the control socket.
    ok(a, &["put", "customer", "a1", "name=Acme"]);
    // C works offline.
    ok(c, &["put", "customer", "c1", "name=Cargo", "tax_id=T-9"]);
    ok(c, &["put", "customer", "c2", "name=Crane"]);
    // C syncs with B; B, live, passes C's records on to A.
    ok(c, &["sync", "--peer", &addr_b, "--timeout", "30"]);
    // A, served, syncs with every peer it is connected to (B).
    let report = ok(a, &["--json", "sync", "--timeout", "30"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["peers"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    // C syncs again and gets A's record through B.
    ok(c, &["sync", "--peer", &addr_b, "--timeout", "30"]);
    let ids = ["a1", "c1", "c2"];
    let on_c = records_json(c, &ids);
    assert_eq!(on_c[0]["fields"]["name"], "Acme");
    assert_eq!(on_c[1]["fields"]["tax_id"], "T-9");
    assert_eq!(records_json(a, &ids), on_c, "A differs from C");
    assert_eq!(records_json(b, &ids), on_c, "B differs from C");
}

#[test]
fn commands_on_a_served_store_go_through_its_control_socket() {
    let a = tempfile::tempdir().unwrap();
    let a = a.path();
    ok(a, &["init", "--schema", schema_file().to_str().unwrap()]);
    let (_server, addr) = serve(a, &[]);
    // Writes and reads work while serve holds the store.
    ok(a, &["put", "customer", "k1", "name=Kite"]);
    assert!(ok(a, &["get", "customer", "k1"]).contains("Kite"));
    assert!(ok(a, &["list", "customer"]).contains("1 record(s)"));
    // Errors come back as errors.
    let err = fails(a, &["get", "customer", "nope"]);
    assert!(err.contains("no record `nope`"), "{err}");
    let err = fails(a, &["init"]);
    assert!(err.contains("is being served"), "{err}");
    // `id` shows the listen address of the running node.
    let id = ok(a, &["--json", "id"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(id["listening"][0], addr.as_str(), "{id}");
    // Export and import name files relative to the caller's directory.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .current_dir(tmp.path())
        .arg("--store")
        .arg(a)
        .args(["export", "customer", "k1", "--out", "k1.automerge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("k1.automerge").exists());
}

#[test]
fn a_group_secret_set_by_the_cli_keeps_other_stores_out() {
    let dirs = stores_with_schema::<3>();
    let [a, b, c] = [0, 1, 2].map(|i| dirs[i].path());
    ok(a, &["put", "customer", "s1", "name=Secretive"]);
    let key = ok(a, &["secret", "new"]);
    assert!(key.starts_with("/key/swarm/psk/1.0.0/"), "{key}");
    let file = dirs[1].path().join("shared.key");
    std::fs::write(&file, &key).unwrap();
    ok(b, &["secret", "import", file.to_str().unwrap()]);
    let (_server, addr) = serve(a, &[]);
    let err = fails(c, &["sync", "--peer", &addr, "--timeout", "30"]);
    assert!(err.contains("could not reach"), "{err}");
    ok(b, &["sync", "--peer", &addr, "--timeout", "30"]);
    assert!(ok(b, &["get", "customer", "s1"]).contains("Secretive"));
    assert!(fails(c, &["get", "customer", "s1"]).contains("no record"));
}

#[test]
fn a_sync_whose_records_are_refused_here_says_why() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ok(
        a.path(),
        &["init", "--schema", schema_file().to_str().unwrap()],
    );
    // B declares no collection: A's customers are refused there.
    ok(b.path(), &["init"]);
    ok(a.path(), &["put", "customer", "c1", "name=Acme"]);
    let (_server, addr) = serve(a.path(), &[]);
    let err = fails(b.path(), &["sync", "--peer", &addr, "--timeout", "30"]);
    assert!(err.contains("did not complete"), "{err}");
    assert!(
        err.contains("customer/c1 (refused here: unknown collection `customer`)"),
        "{err}"
    );
}

#[test]
fn a_store_that_is_not_a_member_is_told_so_and_nothing_moves() {
    let dirs = stores_with_schema::<3>();
    let [a, b, c] = [0, 1, 2].map(|i| dirs[i].path());
    ok(a, &["put", "customer", "a1", "name=Private"]);
    ok(b, &["put", "customer", "b1", "name=Stranger"]);
    let member = ok(c, &["id"]);
    ok(a, &["group", "found"]);
    ok(a, &["members", "add", member.trim()]);
    let (_server, addr) = serve(a, &[]);
    let err = fails(b, &["sync", "--peer", &addr, "--timeout", "30"]);
    assert!(err.contains("refused to sync"), "{err}");
    assert!(err.contains("as a member of its group"), "{err}");
    let id_b = ok(b, &["id"]);
    assert!(
        err.contains(&format!(
            "fieldsync members add {} --role device",
            id_b.trim()
        )),
        "the refusal names the command that admits it: {err}"
    );
    assert!(fails(b, &["get", "customer", "a1"]).contains("no record"));
    assert!(fails(a, &["get", "customer", "b1"]).contains("no record"));
    // The member syncs.
    ok(c, &["sync", "--peer", &addr, "--timeout", "30"]);
    assert!(ok(c, &["get", "customer", "a1"]).contains("Private"));
}

#[test]
fn conflicts_list_show_assign_and_resolve_from_the_command_line() {
    use fieldsync::schema::Schema;
    use fieldsync::{Config, Replica, Value, fields};
    let schema = Schema::from_toml(
        r#"
[collections.expense]
policy = "user_action"
queue = "sync_errors"
status = { field = "status", states = ["draft", "submitted", "approved"] }
[collections.expense.fields]
title = { type = "string", required = true }
amount = { type = "float", required = true }
status = { type = "string", default = "draft" }
"#,
    )
    .unwrap();
    let (hub_dir, dev_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    {
        let open =
            |d: &Path| Replica::open(d, Config::default().with_schema(schema.clone())).unwrap();
        let (hub, dev) = (open(hub_dir.path()), open(dev_dir.path()));
        fieldsync::sim::authority_group(&hub, &[&dev], 0).unwrap();
        hub.insert(
            "expense",
            "e1",
            fields([
                ("title", Value::from("taxi")),
                ("amount", Value::Float(10.0)),
            ]),
        )
        .unwrap();
        let now = 1_800_000_000_000;
        assert!(
            fieldsync::sim::sync_pair(&hub, &dev, now, None)
                .unwrap()
                .synced
        );
        hub.update("expense", "e1", fields([("amount", Value::Float(12.0))]))
            .unwrap();
        dev.update("expense", "e1", fields([("amount", Value::Float(15.0))]))
            .unwrap();
        assert!(
            fieldsync::sim::sync_pair(&dev, &hub, now, None)
                .unwrap()
                .synced
        );
    }
    let s = hub_dir.path();
    let schema_text = ok(s, &["schema"]);
    assert!(schema_text.contains("policy user_action"), "{schema_text}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "conflicts", "list", "--open"])).unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["kind"], "concurrent_edit");
    assert_eq!(entries[0]["queue"], "sync_errors");
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    let shown = ok(s, &["conflicts", "show", &id[..10]]);
    assert!(
        shown.contains("authority") && shown.contains("device"),
        "{shown}"
    );
    assert!(
        shown.contains("amount") && shown.contains("15") && shown.contains("12"),
        "{shown}"
    );
    let detail: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "conflicts", "show", &id])).unwrap();
    assert_eq!(detail["versions"]["device"]["amount"], 15.0);
    assert_eq!(detail["versions"]["authority"]["amount"], 12.0);
    ok(s, &["conflicts", "assign", &id, "finance", "--to", "ana"]);
    let mine: serde_json::Value = serde_json::from_str(&ok(
        s,
        &[
            "--json",
            "conflicts",
            "list",
            "--queue",
            "finance",
            "--assignee",
            "ana",
        ],
    ))
    .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let err = fails(s, &["conflicts", "resolve", "ffff", "--keep", "device"]);
    assert!(err.contains("no conflict entry"), "{err}");
    let err = fails(s, &["conflicts", "resolve", &id]);
    assert!(err.contains("exactly one of"), "{err}");
    ok(
        s,
        &[
            "conflicts",
            "resolve",
            &id,
            "--keep",
            "device",
            "--note",
            "receipt checked",
        ],
    );
    let open: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "conflicts", "list", "--open"])).unwrap();
    assert!(open.as_array().unwrap().is_empty());
    let rec: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "get", "expense", "e1"])).unwrap();
    assert_eq!(rec["fields"]["amount"], 15.0);
    let listed = ok(s, &["conflicts", "list"]);
    assert!(listed.contains("kept the device's version"), "{listed}");
}

#[test]
fn pending_events_are_listed_cancelled_and_confirmed_by_a_sync() {
    let [a, b] = stores_with_schema::<2>();
    ok(
        a.path(),
        &["put", "customer", "c1", "name=Acme", "tax_id=T-1"],
    );
    ok(a.path(), &["put", "customer", "c1", "name=Acme Inc"]);
    let list = ok(a.path(), &["pending"]);
    assert!(
        list.contains("pending") && list.contains("insert") && list.contains("customer/c1"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(a.path(), &["--json", "pending", "list"])).unwrap();
    let events = json.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["kind"], "update");
    assert_eq!(events[1]["status"], "pending");
    // Cancel the update: the name goes back.
    let id = events[1]["id"].as_u64().unwrap().to_string();
    assert!(ok(a.path(), &["pending", "cancel", &id]).contains("cancelled event"));
    let rec: serde_json::Value =
        serde_json::from_str(&ok(a.path(), &["--json", "get", "customer", "c1"])).unwrap();
    assert_eq!(rec["fields"]["name"], "Acme", "{rec}");
    let cancelled = ok(a.path(), &["pending", "list", "--status", "cancelled"]);
    assert!(cancelled.contains(&format!("{id:>5}")), "{cancelled}");
    assert!(fails(a.path(), &["pending", "cancel", &id]).contains("cannot cancel"));
    assert!(
        fails(a.path(), &["pending", "list", "--status", "nope"]).contains("unknown event status")
    );
    let status = ok(a.path(), &["status"]);
    assert!(
        status.contains("pending events: 2 (1 pending, 1 cancelled;"),
        "{status}"
    );
    assert!(status.contains("open conflicts: 0"), "{status}");
    // A sync with a peer (no members, no authority): the insert is confirmed.
    let (server, addr) = serve(b.path(), &[]);
    ok(a.path(), &["sync", "--peer", &addr, "--timeout", "30"]);
    drop(server);
    let left: serde_json::Value =
        serde_json::from_str(&ok(a.path(), &["--json", "pending"])).unwrap();
    let left = left.as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["status"], "cancelled");
    let st: serde_json::Value = serde_json::from_str(&ok(a.path(), &["--json", "status"])).unwrap();
    assert_eq!(st["pending"]["cancelled"], 1, "{st}");
    assert_eq!(st["peers"].as_array().unwrap().len(), 1, "{st}");
    ok(a.path(), &["pending", "dismiss", &id]);
    assert!(ok(a.path(), &["pending"]).contains("no pending events"));
}

#[test]
fn group_commands_found_define_and_show_roles_and_refuse_non_admins() {
    let [a, b] = stores_with_schema::<2>();
    let id_a = ok(a.path(), &["id"]).trim().to_owned();
    let id_b = ok(b.path(), &["id"]).trim().to_owned();
    ok(a.path(), &["group", "found"]);
    let out = ok(
        a.path(),
        &[
            "group", "role", "clerk", "--write", "invoice", "--read", "customer", "--scope", "team",
        ],
    );
    assert!(
        out.contains("defined role `clerk`: reads customer, writes invoice, only records whose `team` is the member's team"),
        "{out}"
    );
    let out = ok(
        a.path(),
        &[
            "members", "add", &id_b, "--role", "clerk", "--team", "north",
        ],
    );
    assert!(out.contains("in team `north`"), "{out}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(a.path(), &["--json", "group", "show"])).unwrap();
    assert_eq!(shown["group"], true, "{shown}");
    let members = shown["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "the root and b: {shown}");
    let b_entry = members
        .iter()
        .find(|m| m["member"] == id_b.as_str())
        .unwrap();
    assert_eq!(b_entry["role"], "clerk");
    assert_eq!(b_entry["team"], "north");
    let text = ok(a.path(), &["group", "show"]);
    assert!(
        text.contains("role `clerk`") && text.contains("built in"),
        "{text}"
    );
    ok(a.path(), &["members", "remove", &id_b]);
    assert!(ok(a.path(), &["group", "show"]).contains("revoked"));
    // b joins a's group but is no admin: it may not add members.
    let out = ok(b.path(), &["group", "join", &id_a]);
    assert!(
        out.contains("joined the group") && out.contains(&format!("fieldsync members add {id_b}")),
        "{out}"
    );
    let e = fails(b.path(), &["members", "add", &id_b, "--role", "clerk"]);
    assert!(e.contains("only the group's admins"), "{e}");
    let e = fails(b.path(), &["group", "join", "not-a-peer"]);
    assert!(e.contains("is not a member id"), "{e}");
}

/// A one-shot `sync` ends its node before its runtime: no panic at exit,
/// whatever the timing (it printed a tokio panic in about 4% of runs and
/// still exited 0).
#[test]
fn a_one_shot_sync_exits_cleanly_fifty_times_in_a_row() {
    let dirs = stores_with_schema::<2>();
    let [a, b] = [0, 1].map(|i| dirs[i].path());
    ok(a, &["put", "customer", "c1", "name=Acme", "tax_id=T-1"]);
    let (_server, addr) = serve(a, &[]);
    for i in 0..50 {
        ok(
            b,
            &[
                "put",
                "customer",
                &format!("b{i}"),
                "name=Bolt",
                "tax_id=T-2",
            ],
        );
        let out = run(b, &["sync", "--peer", &addr, "--timeout", "30"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {i}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("being shutdown"),
            "run {i} printed a panic: {stderr}"
        );
    }
}
