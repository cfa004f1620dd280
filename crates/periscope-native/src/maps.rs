//! `/proc/PID/maps`, parsed in one place.

use crate::error::NativeError;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `r-xp` and the like.
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// The file, `[stack]`-style name, or empty for an anonymous mapping.
    pub path: String,
}

impl Mapping {
    /// An anonymous mapping (no file, no special name).
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && self.path.is_empty()
    }
}

/// The mappings of a process.
pub fn read(pid: u32) -> Result<Vec<Mapping>, NativeError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NativeError::NoSuchProcess { pid },
            std::io::ErrorKind::PermissionDenied => NativeError::Permission {
                pid,
                reason: "cannot read /proc/PID/maps; run as the process's user or root".into(),
            },
            _ => NativeError::Io {
                what: format!("read /proc/{pid}/maps"),
                source: e,
            },
        })?;
    Ok(parse(&text))
}

/// Parses the text of a maps file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut parts = line.split_whitespace();
    let (lo, hi) = parts.next()?.split_once('-')?;
    let perms = parts.next()?.to_string();
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let _dev = parts.next()?;
    let inode = parts.next()?.parse().ok()?;
    let path = parts.collect::<Vec<_>>().join(" ");
    Some(Mapping {
        start: u64::from_str_radix(lo, 16).ok()?,
        end: u64::from_str_radix(hi, 16).ok()?,
        perms,
        offset,
        inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anonymous_and_named_mappings() {
        let m = parse(
            "55d0c0a00000-55d0c0a01000 r-xp 00001000 fd:01 1234 /usr/bin/my prog\n\
             7f0000000000-7f0000010000 r-xp 00000000 00:00 0 \n\
             7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n\
             garbage\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/usr/bin/my prog");
        assert_eq!((m[0].start, m[0].offset), (0x55d0c0a00000, 0x1000));
        assert!(m[1].is_anonymous());
        assert!(!m[2].is_anonymous());
    }
}
