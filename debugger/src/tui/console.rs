//! The guest's COM1 output as the lines a terminal would show: carriage
//! return, line feed, backspace and tab move the cursor; ANSI escape
//! sequences are skipped (the pane shows text, it is not a VT100).

use ringside_core::hostio::SharedBuffer;

/// How much of the end of the output is rendered: enough for any pane.
const TAIL_BYTES: usize = 64 * 1024;

/// Where the renderer is inside an escape sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC [: until a final byte (0x40..=0x7e).
    Csi,
}

/// The last `rows` lines of the output in `buffer`.
pub fn tail(buffer: &SharedBuffer, rows: usize) -> Vec<String> {
    let bytes: Vec<u8> = match buffer.0.lock() {
        Ok(b) => b[b.len().saturating_sub(TAIL_BYTES)..].to_vec(),
        Err(_) => Vec::new(),
    };
    let mut lines = screen_lines(&bytes);
    // A guest usually ends with a newline: the empty line after it is
    // where its cursor is, not output.
    if lines.len() > 1 && lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let skip = lines.len().saturating_sub(rows);
    lines.split_off(skip)
}

/// Bytes written to a terminal, as its lines.
pub fn screen_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let mut col = 0usize;
    let mut escape = Escape::None;
    for &b in bytes {
        match escape {
            Escape::Start => {
                escape = if b == b'[' { Escape::Csi } else { Escape::None };
                continue;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    escape = Escape::None;
                }
                continue;
            }
            Escape::None => {}
        }
        let line = lines.last_mut().expect("there is always a current line");
        match b {
            b'\n' => {
                lines.push(Vec::new());
                col = 0;
            }
            b'\r' => col = 0,
            0x08 => col = col.saturating_sub(1),
            b'\t' => col = (col / 8 + 1) * 8,
            0x1b => escape = Escape::Start,
            0x20..=0x7e | 0x80..=0xff => {
                let c = if b < 0x80 { b as char } else { '.' };
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
            _ => {}
        }
    }
    lines.into_iter().map(|l| l.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_return_and_backspace_overwrite_like_a_terminal() {
        // The demo shell erases a character with "\b \b".
        let lines = screen_lines(b"ringside$ rnu\x08 \x08\x08 \x08un\r\nhello\r\n");
        assert_eq!(lines, ["ringside$ run", "hello", ""]);
    }

    #[test]
    fn escape_sequences_are_skipped() {
        let lines = screen_lines(b"\x1b[2J\x1b[1;1Hok\x1bc!");
        assert_eq!(lines, ["ok!"]);
    }
}
