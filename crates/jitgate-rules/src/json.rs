//! A small, non-recursive JSON scanner: the members of every object in a text, with the byte
//! span of each value, at any depth. Two things need JSON read the way the most lenient
//! server reads it, not the way `serde_json` builds values: finding `_method` in a body
//! however deeply the rest nests (PHP decodes 512 levels, `serde_json` stops at 128), and
//! redacting secret fields in a body preview without re-printing it (re-printing hides
//! duplicate keys and rounds large numbers, so approvers would see other values than the
//! upstream).

use std::ops::Range;

/// One object member found by [`members`].
pub(crate) struct Member<'t> {
    /// How many containers (objects and arrays) enclose the value: 1 in the top-level object.
    pub depth: usize,
    /// The key as written, quotes included (decode with [`decode_string`]).
    pub raw_key: &'t str,
    /// The value's byte span in the text (a whole object or array for nested values).
    pub value: Range<usize>,
}

/// What may come next inside a container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Just opened: a first key (object), a first value (array), or the close.
    FirstOrClose,
    /// After a comma: a key (object) or a value (array).
    Next,
    /// Object only: the colon after a key.
    Colon,
    /// Object only: the value after the colon.
    Value,
    /// After a value: a comma or the close.
    CommaOrClose,
}

struct Frame {
    object: bool,
    start: usize,
    expect: Expect,
    /// Object only: the span of the key whose value comes next.
    key: Option<Range<usize>>,
}

/// Calls `each` for every object member of `text`, in order; `Err(())` when `text` is not
/// one valid JSON value (members seen before the error were reported).
pub(crate) fn members<'t>(text: &'t str, mut each: impl FnMut(Member<'t>)) -> Result<(), ()> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut stack: Vec<Frame> = Vec::new();
    let mut done = false;
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        if i == b.len() {
            return if done && stack.is_empty() {
                Ok(())
            } else {
                Err(())
            };
        }
        if done {
            return Err(());
        }
        let c = b[i];
        if let Some(top) = stack.last_mut() {
            match (top.object, top.expect, c) {
                (true, Expect::FirstOrClose | Expect::Next, b'"') => {
                    let end = string_end(b, i)?;
                    top.key = Some(i..end);
                    top.expect = Expect::Colon;
                    i = end;
                    continue;
                }
                (true, Expect::Colon, b':') => {
                    top.expect = Expect::Value;
                    i += 1;
                    continue;
                }
                (_, Expect::CommaOrClose, b',') => {
                    top.expect = Expect::Next;
                    i += 1;
                    continue;
                }
                (true, Expect::FirstOrClose | Expect::CommaOrClose, b'}')
                | (false, Expect::FirstOrClose | Expect::CommaOrClose, b']') => {
                    let start = top.start;
                    stack.pop();
                    i += 1;
                    // The container is a value of its parent.
                    complete(&mut stack, text, start..i, &mut each, &mut done)?;
                    continue;
                }
                (true, Expect::Value, _) | (false, Expect::FirstOrClose | Expect::Next, _) => {}
                _ => return Err(()),
            }
        }
        // A value.
        let value_start = i;
        let value_end = match c {
            b'{' | b'[' => {
                stack.push(Frame {
                    object: c == b'{',
                    start: i,
                    expect: Expect::FirstOrClose,
                    key: None,
                });
                i += 1;
                continue;
            }
            b'"' => string_end(b, i)?,
            b'-' | b'0'..=b'9' => number_end(b, i)?,
            b't' if b[i..].starts_with(b"true") => i + 4,
            b'f' if b[i..].starts_with(b"false") => i + 5,
            b'n' if b[i..].starts_with(b"null") => i + 4,
            // Not JSON, but Python writes and reads them: accepted, so a body that carries
            // them is still scanned (for `_method`, and for secrets in its preview).
            b'N' if b[i..].starts_with(b"NaN") => i + 3,
            b'I' if b[i..].starts_with(b"Infinity") => i + 8,
            _ => return Err(()),
        };
        i = value_end;
        complete(
            &mut stack,
            text,
            value_start..value_end,
            &mut each,
            &mut done,
        )?;
    }
}

/// A value ended at `span`: report it as a member of its object, or finish the document.
fn complete<'t>(
    stack: &mut [Frame],
    text: &'t str,
    span: Range<usize>,
    each: &mut impl FnMut(Member<'t>),
    done: &mut bool,
) -> Result<(), ()> {
    let depth = stack.len();
    let Some(top) = stack.last_mut() else {
        *done = true;
        return Ok(());
    };
    top.expect = Expect::CommaOrClose;
    if top.object {
        let k = top.key.take().ok_or(())?;
        each(Member {
            depth,
            raw_key: text.get(k).ok_or(())?,
            value: span,
        });
    }
    Ok(())
}

/// The end (exclusive) of the string starting at `b[i] == b'"'`.
fn string_end(b: &[u8], i: usize) -> Result<usize, ()> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' => return Ok(j + 1),
            b'\\' => j += 2,
            0x00..=0x1F => return Err(()),
            _ => j += 1,
        }
    }
    Err(())
}

fn number_end(b: &[u8], i: usize) -> Result<usize, ()> {
    if b[i..].starts_with(b"-Infinity") {
        return Ok(i + 9);
    }
    let mut j = i;
    while j < b.len() && matches!(b[j], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
        j += 1;
    }
    // Let serde_json judge the spelling of this one number (no nesting involved).
    let text = std::str::from_utf8(&b[i..j]).map_err(|_| ())?;
    serde_json::from_str::<serde_json::Number>(text)
        .map(|_| j)
        .or_else(|_| {
            // Beyond f64's range: still a JSON number if it has the shape of one.
            let shape = text.trim_start_matches('-');
            (shape.bytes().next().is_some_and(|c| c.is_ascii_digit()))
                .then_some(j)
                .ok_or(())
        })
}

/// Decodes a JSON string token (quotes included); `None` when it is not one.
pub(crate) fn decode_string(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

#[cfg(test)]
mod tests;
