//! Everything `vmxtool` reads and writes: bounded reads of regular files or standard input,
//! text decoding that locates what is wrong, one number syntax for the command line, and
//! writes to standard output that report a failure instead of aborting.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// The most a text input (MSR dump, VMCS snapshot) may hold. A capability dump is about 1 KiB
/// and a full VMCS snapshot about 10 KiB.
pub const TEXT_LIMIT: u64 = 4 << 20;

/// The most a memory image (`check --memory`) may hold.
pub const MEMORY_LIMIT: u64 = 64 << 20;

/// The path that names standard input.
const STDIN: &str = "-";

/// How `path` is shown in messages.
pub fn shown(path: &Path) -> String {
    if path.as_os_str() == STDIN {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads at most `limit` bytes from `path` (`-` for standard input). Anything but a regular
/// file or standard input is refused before it is read: a FIFO or a device such as
/// `/dev/zero` or `/dev/urandom` could block for ever or never end.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let name = shown(path);
    let source: Box<dyn Read> = if path.as_os_str() == STDIN {
        Box::new(io::stdin().lock())
    } else {
        // Checked before opening (opening a FIFO blocks until a writer appears), and again on
        // what was opened, in case the path changed in between.
        let refuse = |kind: std::fs::FileType| {
            format!(
                "{name}: not a regular file ({}); give a file, or `-` for standard input",
                describe(kind)
            )
        };
        let kind = std::fs::metadata(path)
            .map_err(|e| format!("{name}: {e}"))?
            .file_type();
        if !kind.is_file() {
            return Err(refuse(kind));
        }
        let file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
        let kind = file
            .metadata()
            .map_err(|e| format!("{name}: {e}"))?
            .file_type();
        if !kind.is_file() {
            return Err(refuse(kind));
        }
        Box::new(file)
    };
    let mut bytes = Vec::new();
    source
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{name}: larger than {} MiB, the most this input may hold",
            limit >> 20
        ));
    }
    Ok(bytes)
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads a text input: bounded as [`read_bounded`], UTF-8 (a non-UTF-8 byte is located by line,
/// column and byte offset), with a leading byte-order mark removed.
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, TEXT_LIMIT)?;
    let text = decode_utf8(bytes).map_err(|e| format!("{}: {e}", shown(path)))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// `bytes` as UTF-8, or where it stops being UTF-8.
fn decode_utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = &bytes[..offset];
        // Lines end with LF, CR LF or a lone CR, as the MSR-dump parser reads them.
        let mut line = 1;
        let mut line_start = 0;
        for (i, b) in before.iter().enumerate() {
            let ends_line =
                *b == b'\n' || (*b == b'\r' && before.get(i + 1).is_none_or(|n| *n != b'\n'));
            if ends_line {
                line += 1;
                line_start = i + 1;
            }
        }
        // `before` is valid UTF-8, so the column counts characters.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        format!(
            "not UTF-8 text: byte {:#04x} at line {line}, column {column} (byte offset {offset})",
            bytes[offset]
        )
    })
}

/// Writes `text` to standard output. A reader that closed the pipe (`vmxtool ... | head -1`)
/// ends the output quietly; any other failure (`>/dev/full`) is an error.
pub fn write_stdout(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}

/// Writes a message line to standard error. Where standard error itself cannot be written
/// there is nowhere left to report to; the exit status still tells the outcome.
pub fn write_stderr(message: &str) {
    let mut err = io::stderr().lock();
    if writeln!(err, "{message}").is_err() {
        // Deliberately nothing: see above.
    }
}

/// A command-line number by [`vmx_caps::number`]'s syntax (decimal, or hexadecimal with `0x`).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    vmx_caps::number::parse_u64(text, vmx_caps::number::Radix::Decimal)
        .map_err(|e| format!("cannot read {text:?} as a number: {e}"))
}

/// A command-line 32-bit number, as [`parse_u64`].
pub fn parse_u32(text: &str) -> Result<u32, String> {
    vmx_caps::number::parse_u32(text, vmx_caps::number::Radix::Decimal)
        .map_err(|e| format!("cannot read {text:?} as a number: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_errors_are_located() {
        let err = decode_utf8(b"0x480 1\n0x481 \xff\n".to_vec()).unwrap_err();
        assert_eq!(
            err,
            "not UTF-8 text: byte 0xff at line 2, column 7 (byte offset 14)"
        );
        let err = decode_utf8(b"a\rb\r\nc\xe2\x82".to_vec()).unwrap_err();
        assert_eq!(
            err,
            "not UTF-8 text: byte 0xe2 at line 3, column 2 (byte offset 6)"
        );
        assert_eq!(decode_utf8("é\n".as_bytes().to_vec()).unwrap(), "é\n");
    }
}
