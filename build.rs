//! Records the git revision pcapd is built from (`pcapd --version`): PCAPD_GIT_REV, from
//! `git rev-parse --short HEAD`; left unset outside a git checkout (the binary says "unknown").
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(rev) = git(&["rev-parse", "--short", "HEAD"]) {
        println!("cargo:rustc-env=PCAPD_GIT_REV={rev}");
        // A new commit or checkout moves HEAD or the branch it names: rebuild to say so.
        for path in ["HEAD", "packed-refs"] {
            if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(p) = git(&["rev-parse", "--git-path", &head]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
