//! Reading a user's input file whole, safely: a kernel, a ROM, an initrd,
//! a saved state or a machine configuration.
//!
//! Every such file may be hostile (docs/security.md): it may name a FIFO
//! that blocks `open` forever, a character device such as `/dev/zero` that
//! never ends, or a sparse file of many gigabytes. [`read_input`] reads a
//! file only if it is a regular file, and at most the limit of its
//! [`InputKind`], and says which file, which kind and which limit when it
//! refuses. The check is made twice: on the path before opening (so a FIFO
//! is never opened), and on the open descriptor (so a file swapped for a
//! FIFO in between is still refused; the open is non-blocking on unix, so
//! it cannot hang either). The read itself stops one byte past the limit,
//! so a file that grows while it is read costs no more than the limit.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use thiserror::Error;

const MIB: u64 = 1024 * 1024;

/// What an input file is, and so how large it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A Multiboot kernel or a disk image named as the image to boot.
    Image,
    /// A ROM given with `--bios`.
    Rom,
    /// A Multiboot module (`--initrd`).
    Initrd,
    /// A saved state.
    SavedState,
    /// A machine configuration (TOML).
    Config,
}

impl InputKind {
    /// The most bytes a file of this kind may hold. A kernel, a ROM or an
    /// initrd has to fit in guest RAM, which is at most 3 GiB, but none
    /// in practice comes near 256 MiB. A saved state holds all of RAM
    /// compressed (zlib can grow incompressible data by a few bytes per
    /// 16 KiB block) plus the device state as JSON: 3 GiB and 64 MiB.
    pub const fn limit(self) -> u64 {
        match self {
            InputKind::Image | InputKind::Rom | InputKind::Initrd => 256 * MIB,
            InputKind::SavedState => 3 * 1024 * MIB + 64 * MIB,
            InputKind::Config => MIB,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            InputKind::Image => "image",
            InputKind::Rom => "ROM image",
            InputKind::Initrd => "initrd",
            InputKind::SavedState => "saved state",
            InputKind::Config => "machine configuration",
        }
    }
}

/// Why an input file was not read.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot read {kind} {path}: {error}", kind = kind.name())]
    Io {
        path: String,
        kind: InputKind,
        error: std::io::Error,
    },
    #[error("cannot read {kind} {path}: it is {what}, not a regular file", kind = kind.name())]
    NotARegularFile {
        path: String,
        kind: InputKind,
        what: &'static str,
    },
    #[error(
        "cannot read {kind} {path}: it is larger than the limit of {limit} bytes for a {kind}",
        kind = kind.name()
    )]
    TooLarge {
        path: String,
        kind: InputKind,
        limit: u64,
    },
}

/// What a file that is not a regular file is, for the message.
pub fn file_type_name(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Open `path` for reading if it is a regular file: checked by path
/// (following symlinks) before the open, and on the descriptor after it.
/// On unix the open is non-blocking, so a FIFO swapped in between the
/// two checks does not hang it.
pub fn open_regular(
    path: &Path,
) -> Result<(File, Metadata), (std::io::Error, Option<&'static str>)> {
    let md = std::fs::metadata(path).map_err(|e| (e, None))?;
    if !md.is_file() {
        return Err((
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            Some(file_type_name(&md)),
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| (e, None))?;
    let md = file.metadata().map_err(|e| (e, None))?;
    if !md.is_file() {
        return Err((
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            Some(file_type_name(&md)),
        ));
    }
    Ok((file, md))
}

/// Read the regular file at `path` whole, if it holds at most
/// `kind.limit()` bytes.
pub fn read_input(path: &Path, kind: InputKind) -> Result<Vec<u8>, InputError> {
    read_input_limited(path, kind, kind.limit())
}

/// [`read_input`] with a limit of the caller's choosing (tests use a small
/// one).
pub fn read_input_limited(path: &Path, kind: InputKind, limit: u64) -> Result<Vec<u8>, InputError> {
    let name = path.display().to_string();
    let (file, md) = open_regular(path).map_err(|(error, what)| match what {
        Some(what) => InputError::NotARegularFile {
            path: name.clone(),
            kind,
            what,
        },
        None => InputError::Io {
            path: name.clone(),
            kind,
            error,
        },
    })?;
    let too_large = || InputError::TooLarge {
        path: name.clone(),
        kind,
        limit,
    };
    if md.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| InputError::Io {
            path: name.clone(),
            kind,
            error,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ringside-input-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_regular_file_within_the_limit_is_read_whole() {
        let d = temp_dir("regular");
        let p = d.join("k");
        std::fs::write(&p, b"kernel").unwrap();
        assert_eq!(read_input(&p, InputKind::Image).unwrap(), b"kernel");
    }

    #[test]
    fn a_sparse_file_over_the_limit_is_refused_without_reading_it() {
        let d = temp_dir("sparse");
        let p = d.join("big");
        let f = File::create(&p).unwrap();
        f.set_len(300 * MIB).unwrap();
        let err = read_input(&p, InputKind::Image).unwrap_err().to_string();
        assert!(
            err.contains("larger than the limit of 268435456 bytes"),
            "{err}"
        );
        assert!(err.contains(&p.display().to_string()), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn dev_zero_is_refused_as_a_character_device() {
        let err = read_input(Path::new("/dev/zero"), InputKind::Initrd)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("initrd /dev/zero: it is a character device"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = temp_dir("fifo");
        let p = d.join("fifo");
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_input(&p, InputKind::SavedState)
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is a FIFO"), "{err}");
    }

    #[test]
    fn a_file_longer_than_its_limit_is_refused_after_limit_bytes() {
        let d = temp_dir("limit");
        let p = d.join("c");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert!(matches!(
            read_input_limited(&p, InputKind::Config, 99),
            Err(InputError::TooLarge { limit: 99, .. })
        ));
        assert_eq!(
            read_input_limited(&p, InputKind::Config, 100)
                .unwrap()
                .len(),
            100
        );
    }
}
