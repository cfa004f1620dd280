//! Events to JSON-lines files: one event per line, flushed line by line, rotated by size
//! (`PATH` → `PATH.1` → `PATH.2` …, the oldest beyond `keep` deleted).
//!
//! Exactly once across crashes: each line carries the event's `seq`. On open, a torn last line
//! (the process died mid-write) is cut off and the last `seq` written is read back, so the
//! caller can replay from its store everything after it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct JsonlWriter {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    last_seq: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("JSON-lines export to {path}: {source}")]
pub struct JsonlError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl JsonlWriter {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<JsonlWriter, JsonlError> {
        let err = |source| JsonlError {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(err)?;
        let (good_len, mut last_seq) = scan(&mut file).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        if good_len < size {
            file.set_len(good_len).map_err(err)?;
        }
        if last_seq == 0 {
            // A fresh file after a rotation: the last seq is in the newest rotated one.
            if let Ok(mut older) = File::open(rotated(path, 1)) {
                last_seq = scan(&mut older).map(|(_, s)| s).unwrap_or(0);
            }
        }
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            file,
            size: good_len,
            last_seq,
        })
    }

    /// The `seq` of the last event written (0 if none).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Appends one event (its JSON text, which holds `seq`) and flushes.
    pub fn append(&mut self, seq: i64, json: &str) -> Result<(), JsonlError> {
        if seq <= self.last_seq {
            return Ok(()); // already written (a replay overlapping the live feed)
        }
        let len = json.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        // One write per line, so a crash leaves at most one torn line, cut off on open.
        self.file.write_all(&line).map_err(|e| self.err(e))?;
        self.file.flush().map_err(|e| self.err(e))?;
        self.size += len;
        self.last_seq = seq;
        Ok(())
    }

    fn err(&self, source: std::io::Error) -> JsonlError {
        JsonlError {
            path: self.path.clone(),
            source,
        }
    }

    fn rotate(&mut self) -> Result<(), JsonlError> {
        let _ = std::fs::remove_file(rotated(&self.path, self.keep));
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(|e| self.err(e))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        self.size = 0;
        Ok(())
    }
}

pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Length of the file up to its last complete line, and the `seq` of that line.
fn scan(file: &mut File) -> std::io::Result<(u64, i64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&mut *file);
    let mut good = 0u64;
    let mut last = 0i64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        good += n as u64;
        if let Some(seq) = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["seq"].as_i64())
        {
            last = seq;
        }
    }
    Ok((good, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_cuts_torn_lines_and_remembers_the_last_seq() {
        let dir = std::env::temp_dir().join(format!("jsonl-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut w = JsonlWriter::open(&path, 60, 3).unwrap();
        for seq in 1..=5 {
            w.append(seq, &format!(r#"{{"seq":{seq},"pad":"xxxxxxxxxx"}}"#))
                .unwrap();
        }
        w.append(3, r#"{"seq":3}"#).unwrap(); // a replayed one is not written twice
        drop(w);
        // A torn line, as after a kill in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":6,"pa"#).unwrap();
        drop(f);
        let w = JsonlWriter::open(&path, 60, 3).unwrap();
        assert_eq!(w.last_seq(), 5);
        let mut seqs = Vec::new();
        for p in [
            rotated(&path, 3),
            rotated(&path, 2),
            rotated(&path, 1),
            path.clone(),
        ] {
            if let Ok(text) = std::fs::read_to_string(&p) {
                for l in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    seqs.push(v["seq"].as_i64().unwrap());
                }
            }
        }
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}
