//! The `weir` binary's command line. (Also makes `cargo test --workspace`
//! build the binary that the SQL tests start.)

use std::process::Command;

#[test]
fn help_lists_the_documented_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--help")
        .output()
        .expect("run weir --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--data-dir", "--listen", "--metrics-listen", "--config"] {
        assert!(text.contains(flag), "missing {flag} in:\n{text}");
    }
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("weir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--config", cfg.to_str().unwrap(), "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
