//! What the front-end's test binaries share: running the built
//! `ringside` with a script on stdin.

use std::process::{Command, Output};

/// Run `ringside ARGS` with `input` on stdin. A run that outlives two
/// minutes is killed (and the test then fails on its status), so a guest
/// that never stops cannot hang the test suite.
pub fn ringside_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringside starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("the script is written");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("ringside ends")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
