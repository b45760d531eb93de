//! The worker's private channel to the supervisor: typed messages on a pipe of their own (file
//! descriptor 3 in the worker), never on stdout or stderr, which the plugin shares. A plugin
//! that prints, even something shaped like a message, only fills the worker's log.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The descriptor the worker finds the channel on.
pub const WORKER_FD: i32 = 3;

/// One line of JSON on the channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Message {
    /// Benchmark points done of the run's `total`, and the one starting.
    Progress {
        done: usize,
        total: usize,
        point: String,
    },
    /// The result file the worker wrote, in the output folder it was given.
    Results { file: PathBuf },
}

/// The worker's end, opened once from [`WORKER_FD`]; `None` when it was not started by a
/// supervisor (messages are then dropped).
fn worker_end() -> &'static std::sync::Mutex<Option<std::fs::File>> {
    static END: std::sync::OnceLock<std::sync::Mutex<Option<std::fs::File>>> =
        std::sync::OnceLock::new();
    END.get_or_init(|| {
        let open = std::env::var("NANOHOST_CHANNEL").is_ok_and(|v| v == WORKER_FD.to_string());
        // SAFETY: the supervisor put the pipe's write end on this descriptor and set the variable.
        std::sync::Mutex::new(open.then(|| unsafe { std::fs::File::from_raw_fd(WORKER_FD) }))
    })
}

/// Sends `m` to the supervisor.
pub fn send(m: &Message) {
    if let Some(f) = worker_end()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        let line = serde_json::to_string(m).expect("messages serialize");
        let _ = writeln!(f, "{line}").and_then(|_| f.flush());
    }
}

/// A pipe whose write end the worker gets as [`WORKER_FD`]: (read end, write end).
pub fn pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; both close on exec unless moved to 3.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors this process owns.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// A message line from the channel, checked: `None` for anything malformed or impossible
/// (progress past its total), which is ignored.
pub fn parse(line: &str) -> Option<Message> {
    match serde_json::from_str::<Message>(line).ok()? {
        Message::Progress { done, total, .. } if done > total => None,
        Message::Progress { done, total, point } => Some(Message::Progress {
            done,
            total,
            point: point
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect(),
        }),
        m => Some(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_typed_and_checked() {
        let p = Message::Progress {
            done: 1,
            total: 3,
            point: "standard batch 1".into(),
        };
        assert_eq!(parse(&serde_json::to_string(&p).unwrap()), Some(p));
        assert_eq!(
            parse(r#"{"progress": {"done": 5, "total": 2, "point": "x"}}"#),
            None
        );
        assert_eq!(parse(r#"{"result_file": "/tmp/forged.json"}"#), None);
        assert_eq!(parse("\u{fffd} not json"), None);
        let escaped =
            parse(r#"{"progress": {"done": 0, "total": 1, "point": "a\u001b[2Jb"}}"#).unwrap();
        assert_eq!(
            escaped,
            Message::Progress {
                done: 0,
                total: 1,
                point: "a[2Jb".into()
            }
        );
    }
}
