//! The sync protocol core does no IO: no module under `src/sync/` names tokio,
//! libp2p, sled, the file system, the network, threads or the clock. (Time comes in
//! as a parameter; the shells do the IO.)

#[test]
fn the_sync_core_does_no_io() {
    let forbidden = [
        "tokio",
        "libp2p",
        "sled",
        "std::fs",
        "std::net",
        "std::thread",
        "std::time",
        "SystemTime",
        "Instant",
        "crate::replica",
        "crate::store",
        "Replica",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sync");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/sync exists") {
        let path = entry.expect("readable entry").path();
        let text = std::fs::read_to_string(&path).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                assert!(
                    !code.contains(word),
                    "{}:{}: the sync core must not use `{word}`: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the sync modules, found {checked} files"
    );
}
