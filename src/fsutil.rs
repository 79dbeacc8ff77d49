//! Small filesystem helpers shared by the modules that write secrets and durable files.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// chmod 0600: private keys, the API token, the settings store.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Write a secret file created with mode 0600 from the start (never world-readable, even for
/// a moment), then fsync it.
pub fn write_secret(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Replace `path` with `contents` so that a crash leaves the old file or the new one, never
/// a part: written to a temporary file beside it (0600), synced, renamed, directory synced.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Create a directory (and parents) with mode 0700; one that already exists with wider
/// rights is narrowed to 0700, saying so (the spool and logs hold other people's mail).
pub fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(target: "postern/master", "warning: {}: mode was {mode:04o}, now 0700 (only postern may read it)", path.display());
    }
    Ok(())
}

/// Raise the soft limit on open files to the hard one and return it, so that `need`
/// descriptors (the config's `Config::fd_budget`) can be checked against it.
pub fn raise_fd_limit() -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", io::Error::last_os_error()));
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(lim.rlim_cur)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An I/O error as Postfix words it: `Connection refused`, without Rust's ` (os error 111)`.
pub fn os_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// `pread` that never waits for the disk (`preadv2` with `RWF_NOWAIT`, Linux ≥ 4.14): the
/// bytes read when every page is in the page cache, `None` when the read would block (or
/// the kernel or file system does not support the flag); the caller then reads on a thread
/// that may block.
pub fn pread_nowait(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: the iovec points at `buf`, valid and exclusively borrowed for the call; the
    // descriptor is borrowed from a live `File`.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pread_nowait_reads_cached_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        // Just written: in the page cache.
        assert_eq!(pread_nowait(&file, &mut buf, 3), Some(4));
        assert_eq!(&buf, b"3456");
        assert_eq!(pread_nowait(&file, &mut buf, 10), Some(0), "at the end");
    }

    #[test]
    fn private_dir_narrows_an_existing_wide_directory() {
        let dir = tempfile::tempdir().unwrap();
        let wide = dir.path().join("data");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&wide).unwrap();
        let mode = std::fs::metadata(&wide).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let fresh = dir.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
