//! A worker's stdout and stderr, which its plugin shares: kept in memory and in its log file as
//! a bounded head and tail, whatever the plugin writes.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// The head and the tail of a worker's output, whatever its size: `HEAD` bytes kept from the
/// start, the last `TAIL` bytes kept as it goes.
#[derive(Default)]
pub struct CappedLog {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

const HEAD: usize = 64 * 1024;
const TAIL: usize = 256 * 1024;

impl CappedLog {
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        while self.tail.len() > TAIL {
            let over = self.tail.len() - TAIL;
            self.tail.drain(..over);
            self.dropped += over as u64;
        }
    }

    /// The last `n` lines (of the tail, or of the head when that is all there is).
    pub fn tail_lines(&self, n: usize) -> String {
        let bytes: Vec<u8> = if self.tail.is_empty() {
            self.head.clone()
        } else {
            self.tail.iter().copied().collect()
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every kept line, the head's then the tail's (each part split on its own).
    fn lines(&self) -> Vec<String> {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        [&self.head[..], &tail[..]]
            .into_iter()
            .flat_map(|part| {
                let text = String::from_utf8_lossy(part).into_owned();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The lines holding `needle`, head then tail, at most `max` (the log's own order).
    pub fn lines_with(&self, needle: &str, max: usize) -> Vec<String> {
        let mut found: Vec<String> = self
            .lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        found.dedup();
        found.truncate(max);
        found
    }

    /// The last line, head or tail, that starts with `prefix`.
    pub fn last_line_starting(&self, prefix: &str) -> Option<String> {
        self.lines()
            .into_iter()
            .rev()
            .find(|l| l.starts_with(prefix))
    }

    pub fn write_to(&self, path: &Path) {
        let mut bytes = self.head.clone();
        if self.dropped > 0 {
            bytes.extend(format!("\n[... {} bytes left out ...]\n", self.dropped).bytes());
        }
        bytes.extend(self.tail.iter());
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, bytes);
    }
}

/// Reads `from` to its end into `log`.
pub fn drain(mut from: impl Read, log: &Mutex<CappedLog>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        log.lock().unwrap().push(&buf[..n]);
    }
}
