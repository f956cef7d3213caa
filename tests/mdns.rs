//! mDNS discovery between two `fieldsync serve` processes on a real link.
//!
//! A sandbox's loopback may not carry multicast, so the test makes its own
//! network: `unshare -rn` (an unprivileged user + network namespace), a veth
//! pair with one end moved into a second namespace, and one server in each
//! (see tests/scripts/mdns_netns.sh). If the machine cannot make namespaces
//! (no `unshare`/`ip`, or user namespaces disabled), the test says so on
//! stderr and passes without checking anything.

use std::path::Path;
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldsync")
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Why namespaces cannot be made here, if they cannot.
fn cannot_make_namespaces() -> Option<String> {
    let probe = Command::new("unshare")
        .args([
            "-rn",
            "sh",
            "-c",
            "ip link add va type veth peer name vb && unshare -n true",
        ])
        .output();
    match probe {
        Err(e) => Some(format!("cannot run `unshare`: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "cannot make a network namespace with a veth link: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[test]
fn two_servers_find_each_other_by_mdns_across_a_veth_link() {
    if let Some(why) = cannot_make_namespaces() {
        eprintln!("SKIPPED mDNS test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/schema.toml");
    for s in [&a, &b] {
        ok(s, &["init", "--schema", schema.to_str().unwrap()]);
    }
    ok(&a, &["put", "customer", "m1", "name=Multicast"]);
    let a_id = ok(&a, &["id"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/mdns_netns.sh");
    let out = Command::new("timeout")
        .args(["60", "unshare", "-rn", "sh"])
        .arg(script)
        .arg(bin())
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = |p: &Path| std::fs::read_to_string(p.with_extension("err")).unwrap_or_default();
    assert!(
        stdout.contains("found=yes"),
        "A's record did not reach B: {stdout}\nA's log: {}\nB's log: {}",
        logs(&a),
        logs(&b)
    );
    assert!(stdout.contains("name: Multicast"), "{stdout}");
    // B found A by itself: A is among B's connected peers.
    assert!(
        stdout.contains(&format!("peer {} connected", a_id.trim())),
        "{stdout}"
    );
}
