//! `tern migrate` and `tern` against a real CQL node (`scripts/cassandra start`):
//! migrations are re-runnable, and `tern` refuses to start on a keyspace whose schema is
//! missing or older, telling the operator to run `tern migrate`. Needs the node; with
//! `TERN_SKIP_CQL=1` the test says loudly that it was skipped.

use std::process::Command;

fn skip() -> bool {
    if std::env::var("TERN_SKIP_CQL").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: e2e_cql needs a CQL node (TERN_SKIP_CQL=1 set)");
        return true;
    }
    false
}

fn config(dir: &std::path::Path, keyspace: &str) -> std::path::PathBuf {
    let nodes = std::env::var("TERN_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".into());
    let path = dir.join("tern.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[storage]\nbackend = \"scylla\"\n[storage.scylla]\nnodes = [\"{nodes}\"]\nkeyspace = \"{keyspace}\"\nconsistency = \"one\"\n[[apps]]\nid = 1\nsecret = \"0123456789abcdef\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn tern(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tern")).args(args).arg("--config").arg(config).output().unwrap()
}

#[test]
fn migrate_is_rerunnable_and_tern_refuses_unmigrated_schema() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keyspace = format!("e2e_cql_{}", std::process::id());
    let cfg = config(dir.path(), &keyspace);
    // Not migrated yet: tern refuses and says what to do.
    let out = tern(
        &[
            "all",
            "--http-addr",
            "127.0.0.1:0",
            "--tcp-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--link-addr",
            "127.0.0.1:0",
        ],
        &cfg,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tern started on an unmigrated keyspace");
    assert!(err.contains("tern migrate"), "refusal does not say to run `tern migrate`: {err}");
    // Migrate twice: both succeed.
    for round in 0..2 {
        let out = tern(&["migrate"], &cfg);
        assert!(out.status.success(), "migrate round {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The embedded backend needs no migration, and `tern migrate` says so.
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[[apps]]\nid = 1\nsecret = \"0123456789abcdef\"\n").unwrap();
    let out = tern(&["migrate"], &plain);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scylla"));
}
