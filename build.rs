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
        // A new commit or checkout moves HEAD or the branch it names: rebuild to say so. Only
        // files that exist are watched: cargo reruns a script watching a missing file on every
        // build, and the crate is then rebuilt every time (packed-refs often does not exist).
        let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
        paths.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for path in paths {
            if let Some(p) = git(&["rev-parse", "--git-path", &path]).filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
