//! The domain depends on nothing of ours and on no I/O or runtime crate.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "async-nats",
    "kurrentdb",
    "reqwest",
    "lettre",
    "homeroom-eventstore",
    "homeroom-app",
];

#[test]
fn the_domain_depends_on_no_runtime_io_or_crate_of_ours() {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "homeroom-domain",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.contains(&"homeroom-domain"), "tree: {tree}");
    assert!(names.contains(&"chrono"), "the tree is read: {tree}");
    for forbidden in FORBIDDEN {
        assert!(
            !names.contains(forbidden),
            "homeroom-domain pulls in {forbidden}:\n{tree}"
        );
    }
}

#[test]
fn the_kurrentdb_store_reads_and_writes_every_category_the_domain_writes() {
    let listed: Vec<String> = homeroom_domain::StreamRef::CATEGORIES
        .iter()
        .map(|c| format!("{c}-"))
        .collect();
    assert_eq!(
        listed,
        homeroom_store_kurrentdb::HOMEROOM_CATEGORIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect::<Vec<_>>()
    );
}
