//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use nanohost::model::preset::{write_preset, Preset};
use std::path::PathBuf;

/// A fresh directory holding the `tiny` preset (seed 0) in the Hugging Face layout.
pub fn tiny_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_preset(Preset::Tiny, 0, &dir).unwrap();
    (tmp, dir)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
