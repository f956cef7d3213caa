//! The five source documents (`../shared/seeds/`), each told with the built
//! `fieldsync` binary: separate stores, separate processes, real libp2p on
//! loopback. Each test quotes the seed's text it checks and asserts the
//! outcome the seed describes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as J;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldsync")
}

/// A store of a story, with its clock skew (milliseconds, 0: right).
#[derive(Clone)]
struct Store {
    path: PathBuf,
    skew: i64,
}

impl Store {
    fn new(dir: &Path, name: &str) -> Self {
        Store {
            path: dir.join(name),
            skew: 0,
        }
    }

    fn skewed(mut self, ms: i64) -> Self {
        self.skew = ms;
        self
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .env("FIELDSYNC_CLOCK_SKEW_MS", self.skew.to_string())
            .arg("--store")
            .arg(&self.path)
            .args(args)
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> J {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn id(&self) -> String {
        self.ok(&["id"]).trim().to_owned()
    }

    /// A field of a record, as JSON (`Null` if absent).
    #[track_caller]
    fn field(&self, collection: &str, id: &str, field: &str) -> J {
        self.json(&["get", collection, id])["fields"][field].clone()
    }

    #[track_caller]
    fn sync(&self, addr: &str) -> String {
        self.ok(&["sync", "--peer", addr, "--timeout", "60"])
    }

    /// `serve` on this store; dropped, it stops.
    fn serve(&self, extra: &[&str]) -> Serve {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin())
            .env("FIELDSYNC_CLOCK_SKEW_MS", self.skew.to_string())
            .arg("--store")
            .arg(&self.path)
            .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut addr = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                addr = a.to_owned();
            }
            if line.starts_with("mode ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        assert!(!addr.is_empty(), "serve printed no address");
        Serve { child, addr }
    }
}

struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A hub that founds the group as its authority, and devices that join it.
fn group(hub: &Store, devices: &[&Store], schema: &Path) {
    hub.ok(&["init", "--schema", schema.to_str().unwrap()]);
    hub.ok(&["group", "found", "--role", "authority"]);
    let root = hub.id();
    for d in devices {
        if !d.path.join("db").exists() {
            d.ok(&["init", "--schema", schema.to_str().unwrap()]);
        }
        hub.ok(&["members", "add", &d.id(), "--role", "device"]);
        d.ok(&["group", "join", &root]);
    }
}

/// Wait (at most 30 s) until `check` holds.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

// ------------------------------------------------------------------ Pega

/// "a case status conflict arises because the case has a Resolved status on
/// the server and a Pending approval status on the client. Pega Platform
/// creates a status conflict case that contains the data that the employee
/// updated during the flight, and then routes the status conflict case to
/// the system administrator. The system administrator analyzes both the
/// original case on the server and the status conflict case, and then
/// decides to reopen the original case, add the changes made by the
/// employee, and then route the updated case to the manager for approval."
#[test]
fn pega_an_expense_edited_in_flight_while_approved_is_reopened_by_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let schema = write(
        dir.path(),
        "schema.toml",
        r#"
[collections.expense]
policy = "user_action"
queue = "sync_errors"
status = { field = "status", states = ["draft", "pending_approval", "resolved"] }
[collections.expense.fields]
title = { type = "string", required = true }
amount = { type = "float", required = true }
note = "string"
status = { type = "string", default = "draft" }
"#,
    );
    let [hub, employee, manager, admin] =
        ["hub", "employee", "manager", "admin"].map(|n| Store::new(dir.path(), n));
    group(&hub, &[&employee, &manager, &admin], &schema);
    let server = hub.serve(&[]);
    employee.ok(&[
        "put",
        "expense",
        "x17",
        "title=Flight to Lisbon",
        "amount=420",
        "status=pending_approval",
    ]);
    for p in [&employee, &manager, &admin] {
        p.sync(&server.addr);
    }
    // In flight: the employee changes the amount; the manager approves.
    employee.ok(&["put", "expense", "x17", "amount=465.5", "note=seat upgrade"]);
    manager.ok(&["put", "expense", "x17", "status=resolved"]);
    manager.sync(&server.addr);
    employee.sync(&server.addr);
    // The server shows the case resolved, with a status conflict case in the
    // work queue holding the employee's data.
    assert_eq!(hub.field("expense", "x17", "status"), "resolved");
    assert_eq!(hub.field("expense", "x17", "amount"), 420.0);
    let queue = hub.json(&["conflicts", "list", "--open", "--queue", "sync_errors"]);
    let queue = queue.as_array().unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0]["kind"], "status_regression");
    let id = queue[0]["id"].as_str().unwrap().to_owned();
    // Both are devices: the sides are named by their members, not
    // "authority" and "device".
    let sides = queue[0]["sides"].as_array().unwrap();
    assert!(
        sides.contains(&J::from(employee.id())) && sides.contains(&J::from(manager.id())),
        "{sides:?}"
    );
    // The employee sees the edit held, not confirmed.
    let events = employee.json(&["pending"]);
    assert_eq!(events[0]["held"], true, "{events}");
    // The administrator, on a third device, compares both versions...
    admin.sync(&server.addr);
    let detail = admin.json(&["conflicts", "show", &id]);
    assert_eq!(
        detail["versions"][employee.id()]["amount"],
        465.5,
        "{detail}"
    );
    assert_eq!(
        detail["versions"][manager.id()]["status"],
        "resolved",
        "{detail}"
    );
    let err = admin.fails(&["conflicts", "resolve", &id, "--keep", "authority"]);
    assert!(
        err.contains("neither side of this conflict is an authority"),
        "{err}"
    );
    // ...and reopens the case with the employee's changes, for the manager.
    let out = admin.ok(&[
        "conflicts",
        "resolve",
        &id,
        "--keep",
        &employee.id(),
        "--reopen",
        "pending_approval",
        "--note",
        "back to the manager",
    ]);
    assert!(out.contains("reopened"), "{out}");
    for _ in 0..2 {
        for p in [&admin, &employee, &manager] {
            p.sync(&server.addr);
        }
    }
    for p in [&hub, &employee, &manager, &admin] {
        assert_eq!(p.field("expense", "x17", "status"), "pending_approval");
        assert_eq!(p.field("expense", "x17", "amount"), 465.5);
        assert_eq!(p.field("expense", "x17", "note"), "seat upgrade");
        let all = p.json(&["conflicts", "list"]);
        assert_eq!(all[0]["state"], "resolved");
    }
}

// ---------------------------------------------------------------- GeneXus

/// "RejectedServer: Events with this status could not be replicated in the
/// server side because some error happened. From the device it is possible
/// to access the error code and messages" and "if we have a
/// Customer-Invoice model, and we insert a Customer with one Invoice, if for
/// some reason the event associated with the Customer is rejected by the
/// server when replicating, the Invoice event is maked as RejectedFK."
#[test]
fn genexus_a_rejected_customer_rejects_its_invoice_and_the_fix_confirms_both() {
    let dir = tempfile::tempdir().unwrap();
    let device_schema = r#"
[collections.customer.fields]
name = { type = "string", required = true }
tax_id = "string"
[collections.invoice.fields]
customer = { type = "reference", to = "customer", required = true }
total = { type = "float", required = true }
"#;
    let hub_schema = format!(
        "{device_schema}\n[[collections.customer.rules]]\nfield = \"tax_id\"\nrequired = true\ncode = \"missing_tax_id\"\nmessage = \"a customer needs a tax id\"\n"
    );
    let hs = write(dir.path(), "hub.toml", &hub_schema);
    let ds = write(dir.path(), "device.toml", device_schema);
    let [hub, device] = ["hub", "device"].map(|n| Store::new(dir.path(), n));
    device.ok(&["init", "--schema", ds.to_str().unwrap()]);
    group(&hub, &[&device], &hs);
    let server = hub.serve(&[]);
    device.sync(&server.addr);
    // Offline: a customer without a tax id (the device does not know the
    // rule) and an invoice for it.
    device.ok(&["put", "customer", "c1", "name=Quinta"]);
    device.ok(&["put", "invoice", "i1", "customer=c1", "total=120"]);
    let events = device.json(&["pending"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "pending")
    );
    device.sync(&server.addr);
    device.sync(&server.addr);
    let events = device.json(&["pending"]);
    let by = |c: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["collection"] == c)
            .cloned()
            .unwrap()
    };
    let (customer, invoice) = (by("customer"), by("invoice"));
    assert_eq!(customer["status"], "rejected");
    assert_eq!(customer["errors"][0]["code"], "missing_tax_id");
    assert_eq!(
        customer["errors"][0]["message"],
        "a customer needs a tax id"
    );
    assert_eq!(invoice["status"], "rejected_fk");
    assert_eq!(invoice["parent"], "customer/c1");
    assert_eq!(
        invoice["linked"], customer["id"],
        "the invoice's event links to the customer's"
    );
    // The device still shows what it wrote, with the reasons.
    let list = device.ok(&["list", "customer", "--rejected"]);
    assert!(
        list.contains("a customer needs a tax id") && list.contains("name=Quinta"),
        "{list}"
    );
    // The fix: a tax id; the server accepts it, and both events confirm.
    device.ok(&["put", "customer", "c1", "tax_id=PT-1"]);
    for _ in 0..3 {
        device.sync(&server.addr);
    }
    assert_eq!(
        device.json(&["pending"]).as_array().unwrap().len(),
        0,
        "all confirmed and gone"
    );
    assert_eq!(hub.field("customer", "c1", "tax_id"), "PT-1");
    assert_eq!(hub.field("invoice", "i1", "total"), 120.0);
    // A cancelled event (CanceledUser) is the user's own.
    device.ok(&["put", "customer", "c2", "name=Bolt"]);
    let id = device.json(&["pending"])[0]["id"].to_string();
    device.ok(&["pending", "cancel", &id]);
    assert_eq!(device.json(&["pending"])[0]["status"], "cancelled");
    assert!(device.json(&["get", "customer", "c2"])["meta"]["deleted"] == true);
}

// ------------------------------------------------------------------ Resco

/// "Server Wins ... no matter what change the user made to the record ...
/// the update made on the CRM server will be used", "Partial Device Wins
/// ... only the fields modified through the app will be changed on the
/// server", "Full Device Wins all the fields of the modified record will be
/// changed on the server according to the app", "User Action ... the user
/// can decide whether to use the record updated on the device, or its
/// version modified on the CRM server". Every policy at both granularities:
/// the device changes a and b, the server b and c.
#[test]
fn resco_every_policy_at_both_granularities_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let policies = [
        "server_wins",
        "partial_device_wins",
        "full_device_wins",
        "user_action",
        "last_writer_wins",
    ];
    let mut schema = String::new();
    for p in policies {
        for g in ["field", "record"] {
            schema.push_str(&format!(
                "[collections.{p}_{g}]\npolicy = \"{p}\"\ngranularity = \"{g}\"\n[collections.{p}_{g}.fields]\nname = {{ type = \"string\", required = true }}\na = \"string\"\nb = \"string\"\nc = \"string\"\n\n"
            ));
        }
    }
    let s = write(dir.path(), "schema.toml", &schema);
    let [hub, device] = ["hub", "device"].map(|n| Store::new(dir.path(), n));
    group(&hub, &[&device], &s);
    for p in policies {
        for g in ["field", "record"] {
            hub.ok(&[
                "put",
                &format!("{p}_{g}"),
                "r",
                "name=n",
                "a=a0",
                "b=b0",
                "c=c0",
            ]);
        }
    }
    let server = hub.serve(&[]);
    device.sync(&server.addr);
    // Offline: the server first, the device a moment later.
    for p in policies {
        for g in ["field", "record"] {
            hub.ok(&["put", &format!("{p}_{g}"), "r", "b=b-server", "c=c-server"]);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    for p in policies {
        for g in ["field", "record"] {
            device.ok(&["put", &format!("{p}_{g}"), "r", "a=a-device", "b=b-device"]);
        }
    }
    device.sync(&server.addr);
    device.sync(&server.addr);
    // (a, b, c) on every peer, and whether a person must decide.
    let expect = |p: &str, g: &str| -> ([&'static str; 3], bool) {
        match (p, g) {
            ("server_wins", "field") => (["a-device", "b-server", "c-server"], false),
            ("server_wins", _) => (["a0", "b-server", "c-server"], false),
            ("partial_device_wins", _) => (["a-device", "b-device", "c-server"], false),
            ("full_device_wins", _) => (["a-device", "b-device", "c0"], false),
            ("user_action", "field") => (["a-device", "b-server", "c-server"], true),
            ("user_action", _) => (["a0", "b-server", "c-server"], true),
            // The device saved later.
            ("last_writer_wins", "field") => (["a-device", "b-device", "c-server"], false),
            _ => (["a-device", "b-device", "c0"], false),
        }
    };
    for p in policies {
        for g in ["field", "record"] {
            let coll = format!("{p}_{g}");
            let (want, open) = expect(p, g);
            for store in [&hub, &device] {
                let rec = store.json(&["get", &coll, "r"]);
                let got =
                    ["a", "b", "c"].map(|f| rec["fields"][f].as_str().unwrap_or("").to_owned());
                assert_eq!(
                    got,
                    want.map(str::to_owned),
                    "{coll} on {}",
                    store.path.display()
                );
                let entries = store.json(&["conflicts", "list", "--collection", &coll]);
                assert_eq!(entries.as_array().unwrap().len(), 1, "{coll}: {entries}");
                assert_eq!(entries[0]["state"] == "open", open, "{coll}");
            }
        }
    }
    // User action: the user decides for the device's version (record
    // granularity: the whole record as the device had it).
    let entries = device.json(&["conflicts", "list", "--collection", "user_action_record"]);
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    device.ok(&["conflicts", "resolve", &id, "--keep", "device"]);
    device.sync(&server.addr);
    for store in [&hub, &device] {
        let rec = store.json(&["get", "user_action_record", "r"]);
        assert_eq!(rec["fields"]["a"], "a-device");
        assert_eq!(rec["fields"]["b"], "b-device");
        assert_eq!(rec["fields"]["c"], "c0");
    }
}

// -------------------------------------------------------------- OutSystems

/// "Checks if there are unsolved conflicts. If conflicts exist, the client
/// aborts the synchronization and reports the conflicts pending
/// resolution", "Iterates the list of locally deleted Company records ...
/// If it was changed, adds the Company record to a list of conflicting
/// companies", "present the client and server versions of the records side
/// by side and allow the end user to select which version to maintain",
/// and "this timestamp is established by the server to avoid problems due
/// to clock differences between client and server".
#[test]
fn outsystems_update_and_delete_conflicts_the_sync_gate_and_the_servers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(
        dir.path(),
        "schema.toml",
        r#"
[collections.company]
policy = "user_action"
block_sync_on_conflict = true
[collections.company.fields]
name = { type = "string", required = true }
phone = "string"
address = "string"
[collections.note.fields]
text = { type = "string", required = true }
"#,
    );
    let hub = Store::new(dir.path(), "hub");
    // The device's clock runs an hour fast.
    let device = Store::new(dir.path(), "device").skewed(3_600_000);
    group(&hub, &[&device], &s);
    for id in ["u1", "d1", "d2", "d3", "d4"] {
        hub.ok(&["put", "company", id, "name=Acme", "phone=1"]);
    }
    let server = hub.serve(&[]);
    device.sync(&server.addr);
    // update vs update; the device deletes while the server edits (d1, d2);
    // the server deletes while the device edits (d3, d4).
    hub.ok(&["put", "company", "u1", "phone=server"]);
    device.ok(&["put", "company", "u1", "phone=device"]);
    for id in ["d1", "d2"] {
        device.ok(&["delete", "company", id]);
        hub.ok(&["put", "company", id, "address=server st"]);
    }
    for id in ["d3", "d4"] {
        hub.ok(&["delete", "company", id]);
        device.ok(&["put", "company", id, "address=device st"]);
    }
    device.sync(&server.addr);
    let open = device.json(&["conflicts", "list", "--open"]);
    assert_eq!(open.as_array().unwrap().len(), 5, "{open}");
    // The gate: with conflicts open, the device's own company changes stay
    // here (other collections still go) and the sync says so.
    device.ok(&["put", "company", "new", "name=New Co"]);
    device.ok(&["put", "note", "n1", "text=other data still syncs"]);
    let err = device.fails(&["sync", "--peer", &server.addr, "--timeout", "60"]);
    assert!(
        err.contains("is blocked") && err.contains("fieldsync conflicts resolve"),
        "{err}"
    );
    assert_eq!(hub.field("note", "n1", "text"), "other data still syncs");
    assert!(hub.fails(&["get", "company", "new"]).contains("no record"));
    // Side by side, then decided: keep each side in turn.
    let id_of = |rec: &str| {
        open.as_array()
            .unwrap()
            .iter()
            .find(|e| e["record"] == rec)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let shown = device.ok(&["conflicts", "show", &id_of("u1")]);
    assert!(
        shown.contains("server") && shown.contains("device") && shown.contains("authority"),
        "{shown}"
    );
    for (rec, keep) in [
        ("u1", "device"),
        ("d1", "authority"),
        ("d2", "device"),
        ("d3", "authority"),
        ("d4", "device"),
    ] {
        device.ok(&["conflicts", "resolve", &id_of(rec), "--keep", keep]);
    }
    device.sync(&server.addr);
    device.sync(&server.addr);
    for store in [&hub, &device] {
        let get = |id: &str| store.json(&["get", "company", id]);
        assert_eq!(get("u1")["fields"]["phone"], "device");
        // d1: the device deleted, the server edited; keeping the server's
        // side brings the record back with its edit.
        assert_eq!(
            get("d1")["meta"]["deleted"],
            false,
            "keep authority keeps the server's edit"
        );
        assert_eq!(get("d1")["fields"]["address"], "server st");
        assert_eq!(get("d2")["meta"]["deleted"], true);
        assert_eq!(get("d3")["meta"]["deleted"], true);
        assert_eq!(get("d4")["meta"]["deleted"], false);
        assert_eq!(get("d4")["fields"]["address"], "device st");
        assert_eq!(get("new")["fields"]["name"], "New Co", "the gate opened");
    }
    // Sync times in the server's clock: the device's last sync shows real
    // time, not its own clock an hour ahead.
    let status = device.json(&["status"]);
    assert_eq!(status["times_in"], "authority");
    let last = status["peers"][0]["last_synced_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now.abs_diff(last) < 120_000,
        "last sync {last} vs now {now}: in the server's clock"
    );
    let text = device.ok(&["status"]);
    assert!(text.contains("the authority's clock"), "{text}");
}

// ----------------------------------------------------------------- Creatio

/// "If you select the online working mode ... if you add a task using the
/// mobile application, the task will be immediately displayed in the main
/// application and vice versa", "Changes made to the mobile application are
/// saved on the bpm'online server only after synchronizing", "the changes
/// that were saved last will be preserved", "mobile devices only display
/// data for which the users have access permissions", and "if the
/// opportunity moves to the next stage, an activity is generated in the
/// system ... the created activity will be displayed in the mobile
/// application".
#[test]
fn creatio_live_and_manual_modes_last_saved_wins_access_and_business_logic() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(
        dir.path(),
        "schema.toml",
        r#"
[collections.task]
policy = "last_writer_wins"
[collections.task.fields]
title = { type = "string", required = true }
team = "string"
[collections.opportunity.fields]
title = { type = "string", required = true }
stage = { type = "string", default = "qualify" }
[collections.activity.fields]
title = { type = "string", required = true }
opportunity = { type = "reference", to = "opportunity" }
"#,
    );
    let hub = Store::new(dir.path(), "hub");
    let online = Store::new(dir.path(), "online");
    let offline = Store::new(dir.path(), "offline");
    // Two devices of one team, with clocks an hour apart each way.
    let fast = Store::new(dir.path(), "fast").skewed(3_600_000);
    let slow = Store::new(dir.path(), "slow").skewed(-3_600_000);
    let north = Store::new(dir.path(), "north");
    group(&hub, &[&online, &offline, &fast, &slow, &north], &s);
    hub.ok(&[
        "group",
        "role",
        "north_team",
        "--write",
        "task",
        "--scope",
        "team",
    ]);
    hub.ok(&[
        "members",
        "add",
        &north.id(),
        "--role",
        "north_team",
        "--team",
        "north",
    ]);
    // Business logic on the main node: a call activity when an opportunity
    // reaches the negotiation stage.
    write(
        dir.path(),
        "make_call.sh",
        "#!/bin/sh\nid=$(sed -n 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/p')\nprintf '[{\"collection\":\"activity\",\"key\":\"call\",\"fields\":{\"title\":\"Call the customer\",\"opportunity\":\"%s\"}}]' \"$id\"\n",
    );
    let reactions = write(
        dir.path(),
        "reactions.toml",
        "[[reaction]]\nname = \"negotiation_call\"\ncollection = \"opportunity\"\nfield = \"stage\"\nequals = \"negotiation\"\nrun = [\"sh\", \"make_call.sh\"]\n",
    );
    let server = hub.serve(&["--live", "--reactions", reactions.to_str().unwrap()]);
    for d in [&online, &offline, &fast, &slow, &north] {
        d.sync(&server.addr);
    }
    // Online: the device's node is live, connected to the live hub.
    let online_node = online.serve(&["--live", "--peer", &server.addr]);
    online.ok(&["put", "task", "t1", "title=Call Ana"]);
    assert!(
        eventually(|| hub.run(&["get", "task", "t1"]).status.success()),
        "online: the task reaches the hub at once"
    );
    hub.ok(&["put", "task", "t2", "title=From the office"]);
    assert!(
        eventually(|| online.run(&["get", "task", "t2"]).status.success()),
        "and vice versa"
    );
    drop(online_node);
    // Offline (manual): connected, but nothing moves until the user syncs.
    let offline_node = offline.serve(&["--peer", &server.addr]);
    hub.ok(&["put", "task", "t3", "title=For the field"]);
    offline.ok(&["put", "task", "t4", "title=From the field"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        offline.run(&["get", "task", "t3"]).status.code() != Some(0),
        "manual: nothing pushed in"
    );
    assert!(
        hub.run(&["get", "task", "t4"]).status.code() != Some(0),
        "manual: nothing left before the sync"
    );
    offline.ok(&["sync"]);
    assert!(offline.run(&["get", "task", "t3"]).status.success());
    assert!(hub.run(&["get", "task", "t4"]).status.success());
    drop(offline_node);
    // Last saved wins, whatever the device clocks say: the slow device saves
    // a second after the fast one.
    for d in [&fast, &slow] {
        d.sync(&server.addr);
    }
    fast.ok(&["put", "task", "t1", "title=fast device"]);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    slow.ok(&["put", "task", "t1", "title=slow device, saved later"]);
    for _ in 0..2 {
        for d in [&fast, &slow] {
            d.sync(&server.addr);
        }
    }
    for store in [&hub, &fast, &slow] {
        assert_eq!(
            store.field("task", "t1", "title"),
            "slow device, saved later"
        );
    }
    // Access: a north-team member sees only its team's tasks.
    hub.ok(&["put", "task", "n1", "title=North job", "team=north"]);
    hub.ok(&["put", "task", "s1", "title=South job", "team=south"]);
    north.sync(&server.addr);
    assert!(north.run(&["get", "task", "n1"]).status.success());
    assert!(
        !north.run(&["get", "task", "s1"]).status.success(),
        "south's task never reaches the north device"
    );
    // Business logic: the device moves an opportunity to negotiation; the
    // main node's reaction creates the call, which the device then shows.
    online.ok(&["put", "opportunity", "o1", "title=Pumps"]);
    online.ok(&["put", "opportunity", "o1", "stage=negotiation"]);
    online.sync(&server.addr);
    assert!(
        eventually(|| hub.ok(&["list", "activity"]).contains("Call the customer")),
        "the main node's business logic ran"
    );
    online.sync(&server.addr);
    let acts = online.json(&["list", "activity"]);
    assert_eq!(acts.as_array().unwrap().len(), 1);
    assert_eq!(acts[0]["fields"]["opportunity"], "o1");
}

// ------------------------------------------------------------------ clocks

/// Three writes from three processes a second apart are stamped a second
/// apart (an earlier release stamped each new process 10 s after the last).
#[test]
fn three_cli_writes_a_second_apart_are_stamped_a_second_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(
        dir.path(),
        "schema.toml",
        "[collections.note.fields]\ntext = { type = \"string\", required = true }\n",
    );
    let store = Store::new(dir.path(), "store");
    store.ok(&["init", "--schema", s.to_str().unwrap()]);
    let mut stamps = Vec::new();
    for i in 0..3 {
        let w = store.json(&["put", "note", &format!("n{i}"), "text=x"]);
        stamps.push(w["time_ms"].as_u64().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for w in stamps.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            (900..3000).contains(&gap),
            "stamps {stamps:?}: {gap} ms apart"
        );
    }
    assert!(
        stamps[2] <= now,
        "no stamp is ahead of the clock: {stamps:?}, now {now}"
    );
}

// ----------------------------------------------------------- large records

/// Run a command on `store`; its standard error and its peak memory (bytes,
/// from the kernel's accounting of that one process).
// The child is waited for with wait4 (which also gives its memory), not
// Child::wait.
#[allow(clippy::zombie_processes)]
fn measured(store: &Store, args: &[&str]) -> (bool, String, u64) {
    use std::io::Read;
    let mut child = Command::new(bin())
        .arg("--store")
        .arg(&store.path)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the struct it is given, for
    // a child of this process that has not been waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, err, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

/// "Every record a sync skips or refuses is named": a record too large for
/// the limits is refused at write time, with the limit; an import that
/// expands past it is refused before anything is stored, and the store
/// still syncs.
#[test]
fn records_of_20_and_100_mib_are_refused_at_write_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(
        dir.path(),
        "schema.toml",
        "[collections.doc.fields]\ntitle = { type = \"string\", required = true }\nbody = \"string\"\n",
    );
    let [a, b] = ["a", "b"].map(|n| Store::new(dir.path(), n));
    for st in [&a, &b] {
        st.ok(&["init", "--schema", s.to_str().unwrap()]);
    }
    // What a command needs with no record in hand.
    let (_, _, base) = measured(&a, &["get", "doc", "none"]);
    for mib in [20usize, 100] {
        let file = dir.path().join(format!("body{mib}.txt"));
        std::fs::write(&file, "x".repeat(mib << 20)).unwrap();
        let arg = format!("body@={}", file.display());
        let (ok, err, peak) = measured(&a, &["put", "doc", &format!("big{mib}"), "title=t", &arg]);
        assert!(!ok, "a {mib} MiB record was written");
        assert!(
            err.contains("over the 4194304-byte limit of one record"),
            "{err}"
        );
        assert!(
            err.contains(&format!("big{mib}")),
            "the error names the record: {err}"
        );
        let size = (mib as u64) << 20;
        let grew = peak.saturating_sub(base);
        assert!(
            grew < 3 * size,
            "memory grew by {grew} bytes for a {mib} MiB record (base {base})"
        );
        std::fs::remove_file(&file).unwrap();
    }
    assert!(a.fails(&["get", "doc", "big20"]).contains("no record"));
    // 100 MiB of one letter in an automerge file of a few hundred kB.
    let mut doc = automerge::AutoCommit::new();
    use automerge::transaction::Transactable;
    doc.put(automerge::ROOT, "title", "bomb").unwrap();
    doc.put(automerge::ROOT, "body", "z".repeat(100 << 20))
        .unwrap();
    let bomb = dir.path().join("bomb.automerge");
    std::fs::write(&bomb, doc.save()).unwrap();
    drop(doc);
    let err = a.fails(&["import", "doc", "bomb", bomb.to_str().unwrap()]);
    assert!(err.contains("over the"), "{err}");
    assert!(a.fails(&["get", "doc", "bomb"]).contains("no record"));
    // The store is fine: it writes, reads and syncs.
    a.ok(&["put", "doc", "ok", "title=fine"]);
    let server = a.serve(&[]);
    b.sync(&server.addr);
    assert_eq!(b.field("doc", "ok", "title"), "fine");
}
