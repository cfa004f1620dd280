//! A debuginfod client, configured as elfutils' is: `DEBUGINFOD_URLS` (servers, space-separated,
//! tried in order), `DEBUGINFOD_CACHE_PATH` (else `$XDG_CACHE_HOME/debuginfod_client`, else
//! `~/.cache/debuginfod_client`), laid out as `CACHE/BUILDID/debuginfo`, so a cache filled by
//! gdb or `debuginfod-find` serves Periscope and the other way round. `DEBUGINFOD_TIMEOUT`
//! (seconds, default 90) bounds the connection and every read of a download (a stalled server
//! is given up), `DEBUGINFOD_MAXTIME` the whole download, `DEBUGINFOD_MAXSIZE` its size.
//! A server that has nothing is remembered for `cache_miss_s` seconds (the cache's own file,
//! else 600) with an empty file, as elfutils does, so a missing build is not asked for again and
//! again.
//!
//! Downloads happen while a target is indexed, before anything is attached, never on a hit.

use super::debugfile::DebugSearch;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub struct Client {
    urls: Vec<String>,
    cache: PathBuf,
    timeout: Duration,
    max_time: Option<Duration>,
    max_size: Option<u64>,
}

/// elfutils' defaults.
const DEFAULT_TIMEOUT_S: u64 = 90;
const DEFAULT_CACHE_MISS_S: u64 = 600;
/// How often a download says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Set when the process is asked to stop: a download in progress ends at its next read, and
/// none starts.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Ends downloads in progress and refuses new ones, for the rest of the process (the agent
/// calls it on SIGTERM, so indexing a new process never holds up its exit).
pub fn cancel_downloads() {
    CANCELLED.store(true, Ordering::SeqCst);
}

impl Client {
    /// The client `DEBUGINFOD_URLS` asks for; `None` when it is unset or empty.
    pub fn from_env() -> Option<Client> {
        let urls: Vec<String> = std::env::var("DEBUGINFOD_URLS")
            .ok()?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let secs = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Client {
            urls,
            cache: cache_dir(),
            timeout: Duration::from_secs(secs("DEBUGINFOD_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT_S)),
            max_time: secs("DEBUGINFOD_MAXTIME")
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_size: secs("DEBUGINFOD_MAXSIZE").filter(|s| *s > 0),
        })
    }

    /// The debug file of build `id` (for `binary`, named in messages): from the cache, else
    /// downloaded into it. `Err` says why there is none.
    pub(super) fn fetch(
        &self,
        id: &str,
        binary: &Path,
        search: &DebugSearch,
    ) -> Result<PathBuf, String> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("build id {id:?} is not hexadecimal"));
        }
        let dir = self.cache.join(id);
        let file = dir.join("debuginfo");
        if let Ok(meta) = std::fs::metadata(&file) {
            if meta.len() > 0 {
                return Ok(file);
            }
            // An empty file: a server had nothing for this build, not long ago.
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            let miss = self.cache_miss();
            if age < miss {
                return Err(format!(
                    "the debuginfod servers had no debug info for build {id} ({}) {} s ago; asked again after {} s (remembered in {})",
                    binary.display(),
                    age.as_secs(),
                    miss.as_secs(),
                    file.display()
                ));
            }
        }
        let mut why = Vec::new();
        let mut missing = 0;
        for base in &self.urls {
            let url = format!("{base}/buildid/{id}/debuginfo");
            match self.download(&url, id, binary, &dir, &file, search) {
                Ok(()) => return Ok(file),
                Err(Failure::NotFound) => {
                    missing += 1;
                    why.push(format!("{base} has no debug info for build {id}"));
                }
                Err(Failure::Other(e)) => why.push(e),
            }
        }
        if missing == self.urls.len() {
            // Every server answered that it has nothing: remember that, as elfutils does.
            let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&file));
        }
        let text = format!("debuginfod: {} ({})", why.join("; "), binary.display());
        search.say(&format!("periscope: {text}"));
        Err(text)
    }

    fn cache_miss(&self) -> Duration {
        let s = std::fs::read_to_string(self.cache.join("cache_miss_s"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_CACHE_MISS_S);
        Duration::from_secs(s)
    }

    fn download(
        &self,
        url: &str,
        id: &str,
        binary: &Path,
        dir: &Path,
        file: &Path,
        search: &DebugSearch,
    ) -> Result<(), Failure> {
        let cancelled = || Failure::Other(format!("the download of {url} was cancelled"));
        if CANCELLED.load(Ordering::SeqCst) {
            return Err(cancelled());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .timeout_global(self.max_time)
            .build()
            .into();
        let started = Instant::now();
        let mut resp = agent
            .get(url)
            .call()
            .map_err(|e| Failure::Other(format!("cannot fetch {url}: {e}")))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(Failure::NotFound),
            s => return Err(Failure::Other(format!("{url} answered HTTP {s}"))),
        }
        let total = resp.body().content_length();
        if let (Some(max), Some(t)) = (self.max_size, total) {
            if t > max {
                return Err(Failure::Other(format!(
                    "{url} is {t} bytes, more than DEBUGINFOD_MAXSIZE={max}"
                )));
            }
        }
        let io = |what: &str, e: std::io::Error| Failure::Other(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
        let tmp = dir.join(format!(".debuginfo.{}.tmp", std::process::id()));
        let mut out =
            std::fs::File::create(&tmp).map_err(|e| io(&format!("create {}", tmp.display()), e))?;
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        let mut said = started;
        let mut announced = false;
        let result = loop {
            if CANCELLED.load(Ordering::SeqCst) {
                break Err(cancelled());
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(io(&format!("download {url}"), e)),
            };
            got += n as u64;
            if self.max_size.is_some_and(|m| got > m) {
                break Err(Failure::Other(format!(
                    "{url} is larger than DEBUGINFOD_MAXSIZE"
                )));
            }
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(io(&format!("write {}", tmp.display()), e));
            }
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                if !announced {
                    announced = true;
                    search.say(&format!(
                        "periscope: downloading debug info for {} (build {id}) from {url}",
                        binary.display()
                    ));
                }
                search.say(&format!("periscope: … {}", progress(got, total)));
            }
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, file).map_err(|e| io(&format!("move into {}", file.display()), e))?;
        if announced {
            search.say(&format!(
                "periscope: downloaded {} in {:.1} s into {}",
                progress(got, None),
                started.elapsed().as_secs_f64(),
                file.display()
            ));
        }
        Ok(())
    }
}

enum Failure {
    /// HTTP 404: the server does not have it.
    NotFound,
    Other(String),
}

fn progress(got: u64, total: Option<u64>) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    match total {
        Some(t) if t > 0 => format!(
            "{:.1} of {:.1} MiB ({:.0}%)",
            mb(got),
            mb(t),
            got as f64 * 100.0 / t as f64
        ),
        _ => format!("{:.1} MiB", mb(got)),
    }
}

/// elfutils' cache directory.
fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("debuginfod_client");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".cache/debuginfod_client")
}
