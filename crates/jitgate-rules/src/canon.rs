//! Canonical request targets (SPEC section 5): the one view of a request's host and path
//! that matching, tickets, fingerprints, logs and forwarding all use.
//!
//! The rules, in the order they apply to a path:
//! 1. The query is split off at the first `?` before any decoding (hyper's `Uri` has already
//!    done this, and dropped any `#fragment`, when the target came off the wire).
//! 2. Every byte is checked: raw control characters, space, non-ASCII, `\`, `#` and `?` are
//!    refused; `%` must start a two-hex-digit escape.
//! 3. Escapes are decoded exactly once: unreserved characters (`A-Z a-z 0-9 - . _ ~`) become
//!    themselves; `%2F %5C %00 %25 %3B %3F %23` and encoded control characters are refused
//!    (`%2F` may be kept opaque when a route opts in); other ASCII stays encoded with uppercase
//!    hex; encoded non-ASCII must be well-formed, shortest-form UTF-8 and stays encoded
//!    (uppercase hex).
//! 4. Spellings that a lenient upstream reads as another path are refused:
//!    - a segment whose name (without `;` parameters) starts or ends with encoded whitespace:
//!      `%20`, or Unicode White_Space such as `%C2%85` or `%E2%80%A8`. Trimming matchers drop
//!      it (Spring's `trimTokens`, CVE-2016-5007; Java's `String.trim` drops every char up to
//!      U+0020, `strip` and most other languages' trims Unicode whitespace), so `/admin%20/x`
//!      reaches them as `/admin/x`. Whitespace inside a name (`/my%20file`) is kept.
//!    - an encoded character whose NFKC form or Unicode case mapping contains ASCII: fullwidth
//!      forms (`%EF%BC%8F` is `/`, `%EF%BD%81` is `a`), one and two dot leaders (`.`, `..`),
//!      ligatures, super- and subscripts, circled and mathematical letters, spaces such as
//!      `%C2%A0`, and the case-mapping cases `ſ` (`S`), Kelvin sign (`k`), `ı` (`I`), `ß`
//!      (`SS`). NFKC-normalising and case-insensitive servers read them as ASCII.
//!    - an encoded invisible (default-ignorable) character: soft hyphen, zero-width characters,
//!      bidi controls, variation selectors, tags. NFKC_Casefold deletes them, so `ad%C2%ADmin`
//!      reads as `admin`.
//!
//!    Other non-ASCII (`%C3%A9`, CJK, Cyrillic look-alikes, U+2215 division slash) is accepted
//!    and stays opaque. These are refused rather than given more readings (as `%2F` and `;`
//!    are) because the readings multiply (trim, NFKC and case folding, in any order and
//!    combined with the other rules) and every one would have to be matched, while clients do
//!    not put such characters in the paths of the APIs this gateway guards: one spelling per
//!    resource keeps matching, tickets and logs simple, and a refused request fails closed.
//! 5. `;` parameters are refused, or, when a route opts in, stripped from each segment for
//!    matching (Tomcat semantics: `..;x` is `..`) and kept on the forwarded path.
//! 6. Only then are `.` and `..` segments resolved (a `..` above the root is refused) and
//!    repeated slashes merged. A trailing slash is kept.
//!
//! An already-canonical path (nearly every request) is returned borrowed, without allocating.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue, Method, Uri};
use unicode_normalization::UnicodeNormalization;

#[cfg(test)]
mod tests;

/// Route opt-ins that relax canonicalisation; the gateway passes the union over the table,
/// then refuses a request whose matched route did not opt in to what the request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanonOptions {
    /// Some route has `allow_encoded_slash = true`: keep `%2F` opaque instead of refusing it.
    pub allow_encoded_slash: bool,
    /// Some route has `allow_path_params = true`: strip `;` parameters for matching.
    pub allow_path_params: bool,
}

/// Why a request target was refused (answered with 400).
///
/// Every variant is a client error; the messages name the offending construct so a client
/// can fix its request. They never echo request bytes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// The request target or path was empty.
    #[error("empty request target")]
    Empty,
    /// The path does not start with `/` (and is not the `*` of an OPTIONS request).
    #[error("request target must be an absolute path starting with '/'")]
    NotOriginForm,
    /// The asterisk-form target `*` was used with a method other than OPTIONS.
    #[error("request target '*' is only allowed with OPTIONS")]
    AsteriskNotOptions,
    /// An absolute-form target with a scheme other than http or https.
    #[error("unsupported scheme in request target (only http and https)")]
    UnsupportedScheme,
    /// A raw control character (0x00-0x1F or 0x7F) in the path or query.
    #[error("control character in request target")]
    ControlChar,
    /// A raw space in the path or query.
    #[error("space in request target (encode it as %20)")]
    Space,
    /// A raw non-ASCII byte in the path or query.
    #[error("non-ASCII byte in request target (percent-encode it as UTF-8)")]
    NonAscii,
    /// A raw backslash in the path.
    #[error("backslash in path")]
    Backslash,
    /// A raw `#` in the path or query: fragments are not sent to servers.
    #[error("fragment ('#') in request target")]
    Fragment,
    /// A raw `?` in a path handed to [`canonicalize_path`] (the query must be split off first).
    #[error("'?' in path (split off the query first)")]
    QuestionMarkInPath,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-escape in path ('%' must be followed by two hex digits)")]
    MalformedEscape,
    /// `%2F` (encoded slash) without a route opting in to it.
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    /// `%5C` (encoded backslash).
    #[error("encoded backslash (%5C) in path")]
    EncodedBackslash,
    /// `%00` (encoded NUL).
    #[error("encoded NUL (%00) in path")]
    EncodedNul,
    /// `%25` (encoded percent sign): double encoding is refused.
    #[error("encoded percent sign (%25) in path: double encoding is not accepted")]
    EncodedPercent,
    /// `%3B` (encoded semicolon).
    #[error("encoded semicolon (%3B) in path")]
    EncodedSemicolon,
    /// `%3F` (encoded question mark).
    #[error("encoded question mark (%3F) in path")]
    EncodedQuestionMark,
    /// `%23` (encoded hash).
    #[error("encoded hash (%23) in path")]
    EncodedHash,
    /// An encoded control character other than NUL (`%01`-`%1F`, `%7F`), e.g. `%0A`.
    #[error("encoded control character (%01-%1F or %7F) in path")]
    EncodedControl,
    /// Encoded bytes that are not well-formed UTF-8: overlong forms (`%C0%AE`), surrogates,
    /// stray continuation bytes, truncated sequences.
    #[error("percent-encoded bytes in path are not valid UTF-8 (overlong or malformed)")]
    InvalidUtf8,
    /// A path segment whose name (without `;` parameters) starts or ends with encoded
    /// whitespace: `%20` or Unicode White_Space such as `%C2%85` or `%E2%80%A8`. Trimming
    /// matchers drop it (Spring's `trimTokens`, CVE-2016-5007): `/admin%20/x` reads as
    /// `/admin/x` to them.
    #[error("path segment starts or ends with encoded whitespace")]
    SegmentEdgeWhitespace,
    /// A percent-encoded character whose NFKC form or Unicode case mapping contains ASCII:
    /// fullwidth forms (`%EF%BC%8F` is `/`), dot leaders, ligatures, super- and subscripts,
    /// circled and mathematical letters, `ſ`, the Kelvin sign. NFKC-normalising and
    /// case-insensitive servers read them as the ASCII they fold to.
    #[error("percent-encoded compatibility form of an ASCII character in path")]
    EncodedCompatibilityForm,
    /// A percent-encoded invisible (default-ignorable) character: soft hyphen, zero-width
    /// characters, bidi controls, variation selectors, tags. NFKC_Casefold deletes them.
    #[error("percent-encoded invisible character in path")]
    EncodedInvisible,
    /// `;` path parameters without a route opting in to them.
    #[error("path parameters (';') are not allowed")]
    PathParams,
    /// Both `%2F` and `;` parameters in one path: too many ways to read it.
    #[error("encoded slash (%2F) and path parameters (';') in the same path")]
    EncodedSlashWithPathParams,
    /// A `..` segment that would climb above the root.
    #[error("path climbs above the root ('..')")]
    AboveRoot,
    /// An empty host (or one that is only a port or a dot).
    #[error("empty host")]
    HostEmpty,
    /// An empty label in a host name, e.g. `a..b` or `.a`.
    #[error("empty label in host")]
    HostEmptyLabel,
    /// A host name with a character other than letters, digits, `-`, `_` and `.`.
    #[error("invalid character in host")]
    HostInvalidChar,
    /// A host name or one of its labels is too long (253 / 63 octets).
    #[error("host name too long")]
    HostTooLong,
    /// A numeric host that is not a canonical dotted-quad IPv4 address (e.g. `127.1`, `0x7f.1`).
    #[error("numeric host is not a dotted-quad IPv4 address")]
    HostInvalidIpv4,
    /// A bracketed IPv6 literal that does not parse (zone ids and IPvFuture included).
    #[error("invalid IPv6 literal in host")]
    HostInvalidIpv6,
    /// Userinfo (`user@`) in the host or authority.
    #[error("userinfo ('@') in host")]
    HostUserinfo,
    /// A port that is empty, not decimal, zero or above 65535.
    #[error("invalid port in host")]
    HostInvalidPort,
    /// The authority of the request target and the Host header name different hosts.
    #[error("request target authority and Host header disagree")]
    HostConflict,
    /// A method-override header or `_method` parameter that is not a valid method token.
    #[error("invalid method override (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override or _method)")]
    InvalidMethodOverride,
}

// === impl CanonPath ===

/// A canonical path and its alternative readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonPath<'a> {
    /// The canonical path used for matching, tickets, logs — and forwarding unless `forward`
    /// is Some. Borrowed (no allocation) when the input was already canonical (the common case).
    pub path: Cow<'a, str>,
    /// When `;` path parameters were allowed and present: the canonical path WITH the
    /// parameters kept (this is what is forwarded); `path` has them stripped. None otherwise.
    ///
    /// It has exactly the segments of `path`, in order, each with its own parameters; dot
    /// segments (`..;x`) and empty middle segments (`/;x/`) lose theirs, since they are resolved
    /// or merged away. So an upstream that strips parameters sees `path`, and one that does not
    /// sees this string, which matching also checks (see [`CanonPath::readings`]).
    pub forward: Option<String>,
    /// When `%2F` was allowed and present: the reading with `%2F` decoded to `/` and
    /// canonicalised again (an upstream that decodes %2F sees this). None otherwise.
    pub decoded_slash: Option<String>,
    /// The path contained %2F (only possible with opts.allow_encoded_slash) that survived
    /// dot-segment resolution: `path` holds an opaque `%2F`.
    pub encoded_slash: bool,
    /// The path contained `;` parameters (only possible with opts.allow_path_params) that
    /// survived resolution: `forward` holds them. Parameters on dot segments or on empty middle
    /// segments are dropped with those segments and do not count.
    pub path_params: bool,
}

impl<'a> CanonPath<'a> {
    /// Every reading of the path, canonical first: `[path, decoded_slash?, forward?]`.
    /// Fill `buf` and return the used prefix so callers need not allocate. A reading equal to
    /// `path` is not repeated.
    pub fn readings<'b>(&'b self, buf: &'b mut [&'b str; 3]) -> &'b [&'b str] {
        buf[0] = &self.path;
        let mut n = 1;
        for extra in [&self.decoded_slash, &self.forward].into_iter().flatten() {
            if extra.as_str() != self.path.as_ref() {
                buf[n] = extra;
                n += 1;
            }
        }
        let buf: &'b [&'b str; 3] = buf;
        &buf[..n]
    }

    /// The path to forward upstream: `forward` if Some, else `path`.
    pub fn forward_path(&self) -> &str {
        self.forward.as_deref().unwrap_or(&self.path)
    }
}

// === canonicalize_path ===

/// Canonicalise an origin-form path (without its query). See the module documentation for the
/// rules; the result holds the canonical path and, when a route opt-in was used, the other
/// readings an upstream might act on.
pub fn canonicalize_path(raw: &str, opts: CanonOptions) -> Result<CanonPath<'_>, CanonError> {
    if is_canonical(raw) {
        return Ok(CanonPath {
            path: Cow::Borrowed(raw),
            forward: None,
            decoded_slash: None,
            encoded_slash: false,
            path_params: false,
        });
    }
    canonicalize_slow(raw, opts)
}

/// The slow path of [`canonicalize_path`], kept out of line so that the fast path stays small
/// enough to be inlined into its callers (the Unicode checks made the slow path large enough
/// to stop that: about 5 ns per already-canonical path).
#[inline(never)]
fn canonicalize_slow(raw: &str, opts: CanonOptions) -> Result<CanonPath<'_>, CanonError> {
    let built = build(raw, opts)?;
    let decoded_slash = if built.encoded_slash {
        // `%` only ever starts a whole escape in canonical text, so this replaces escapes only.
        let decoded = built.path.replace("%2F", "/");
        Some(build(&decoded, CanonOptions::default())?.path)
    } else {
        None
    };
    Ok(CanonPath {
        path: Cow::Owned(built.path),
        forward: built.forward,
        decoded_slash,
        encoded_slash: built.encoded_slash,
        path_params: built.path_params,
    })
}

/// Whether `raw` is certainly canonical under any options: the fast path. Conservative: it
/// answers false for some canonical paths (those holding encoded non-ASCII), which then take
/// the slow path and come out unchanged, and for `%20` at a segment's edge, which the slow
/// path refuses. A property test checks that whatever it accepts, [`build`] returns unchanged.
fn is_canonical(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut seg_start = 1;
    let mut i = 1;
    while i <= b.len() {
        if i == b.len() || b[i] == b'/' {
            let seg = &b[seg_start..i];
            if seg == b"." || seg == b".." || (seg.is_empty() && i != b.len()) {
                return false;
            }
            seg_start = i + 1;
            i += 1;
            continue;
        }
        let c = b[i];
        if c == b'%' {
            let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                return false;
            };
            let (Some(h), Some(l)) = (upper_hex_val(h), upper_hex_val(l)) else {
                return false;
            };
            let v = h << 4 | l;
            if is_unreserved(v)
                || !(0x20..0x7F).contains(&v)
                || matches!(v, b'/' | b'\\' | b'%' | b';' | b'?' | b'#')
                || (v == b' ' && (i == seg_start || matches!(b.get(i + 3), None | Some(b'/'))))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !(0x21..0x7F).contains(&c) || matches!(c, b'\\' | b'#' | b'?' | b';') {
            return false;
        }
        i += 1;
    }
    true
}

/// The slow path's result.
struct Built {
    path: String,
    forward: Option<String>,
    encoded_slash: bool,
    path_params: bool,
}

/// One decoded segment: `text` is the canonical segment with its parameters, the first
/// `name_len` bytes of which are the segment without them.
struct Segment {
    text: String,
    name_len: usize,
}

impl Segment {
    fn name(&self) -> &str {
        &self.text[..self.name_len]
    }
}

#[derive(Default)]
struct Flags {
    encoded_slash: bool,
    path_params: bool,
}

fn build(raw: &str, opts: CanonOptions) -> Result<Built, CanonError> {
    if raw.is_empty() {
        return Err(CanonError::Empty);
    }
    let Some(body) = raw.strip_prefix('/') else {
        return Err(CanonError::NotOriginForm);
    };
    let mut flags = Flags::default();
    let mut out: Vec<Segment> = Vec::new();
    let mut trailing_slash = false;
    let mut trailing_params: Option<String> = None;
    let mut parts = body.split('/').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        let seg = decode_segment(part, opts, &mut flags)?;
        match seg.name() {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(CanonError::AboveRoot);
                }
            }
            "" => {
                if last && seg.text.len() > seg.name_len {
                    trailing_params = Some(seg.text);
                }
            }
            _ => {
                out.push(seg);
                continue;
            }
        }
        if last {
            trailing_slash = true;
        }
    }
    // What counts is what survives resolution: a `%2F` or `;x` in a segment that `..` removed
    // (or, for parameters, on a dot segment or an empty middle segment) is not forwarded, so
    // no upstream can read it.
    let encoded_slash = flags.encoded_slash && out.iter().any(|s| s.name().contains("%2F"));
    let path_params = flags.path_params
        && (trailing_params.is_some() || out.iter().any(|s| s.text.len() > s.name_len));
    if encoded_slash && path_params {
        return Err(CanonError::EncodedSlashWithPathParams);
    }
    let trailing = if trailing_slash && !out.is_empty() {
        "/"
    } else {
        ""
    };
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg.name());
    }
    if out.is_empty() {
        path.push('/');
    }
    path.push_str(trailing);
    let forward = if path_params {
        let mut fwd = String::with_capacity(raw.len());
        for seg in &out {
            fwd.push('/');
            fwd.push_str(&seg.text);
        }
        if out.is_empty() {
            fwd.push('/');
        }
        fwd.push_str(trailing);
        if let Some(params) = &trailing_params {
            fwd.push_str(params);
        }
        Some(fwd)
    } else {
        None
    };
    Ok(Built {
        path,
        forward,
        encoded_slash,
        path_params,
    })
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(text: &mut String, v: u8) {
    text.push('%');
    text.push(char::from(UPPER_HEX[usize::from(v >> 4)]));
    text.push(char::from(UPPER_HEX[usize::from(v & 0xF)]));
}

fn decode_segment(
    part: &str,
    opts: CanonOptions,
    flags: &mut Flags,
) -> Result<Segment, CanonError> {
    let b = part.as_bytes();
    let mut text = String::with_capacity(b.len());
    let mut name_len: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let v = escape_at(b, i)?;
                match v {
                    _ if is_unreserved(v) => text.push(char::from(v)),
                    b'/' if opts.allow_encoded_slash => {
                        flags.encoded_slash = true;
                        text.push_str("%2F");
                    }
                    b'/' => return Err(CanonError::EncodedSlash),
                    b'\\' => return Err(CanonError::EncodedBackslash),
                    0x00 => return Err(CanonError::EncodedNul),
                    b'%' => return Err(CanonError::EncodedPercent),
                    b';' => return Err(CanonError::EncodedSemicolon),
                    b'?' => return Err(CanonError::EncodedQuestionMark),
                    b'#' => return Err(CanonError::EncodedHash),
                    0x01..=0x1F | 0x7F => return Err(CanonError::EncodedControl),
                    b' ' if name_len.is_none() && (text.is_empty() || name_ends(b, i + 3)) => {
                        return Err(CanonError::SegmentEdgeWhitespace)
                    }
                    0x20..=0x7E => push_escape(&mut text, v),
                    0x80..=0xFF => {
                        let (ch, len) = encoded_utf8_char(b, i, v)?;
                        let at_edge =
                            name_len.is_none() && (text.is_empty() || name_ends(b, i + 3 * len));
                        check_non_ascii(ch, at_edge)?;
                        for k in 0..len {
                            push_escape(&mut text, escape_at(b, i + 3 * k)?);
                        }
                        i += 3 * len;
                        continue;
                    }
                }
                i += 3;
                continue;
            }
            b';' if opts.allow_path_params => {
                flags.path_params = true;
                if name_len.is_none() {
                    name_len = Some(text.len());
                }
                text.push(';');
            }
            b';' => return Err(CanonError::PathParams),
            b'\\' => return Err(CanonError::Backslash),
            b'#' => return Err(CanonError::Fragment),
            b'?' => return Err(CanonError::QuestionMarkInPath),
            b' ' => return Err(CanonError::Space),
            0x00..=0x1F | 0x7F => return Err(CanonError::ControlChar),
            0x80..=0xFF => return Err(CanonError::NonAscii),
            _ => text.push(char::from(c)),
        }
        i += 1;
    }
    let name_len = name_len.unwrap_or(text.len());
    Ok(Segment { text, name_len })
}

/// Whether the segment's name ends at byte `j` of the raw segment: at its end or at `;`.
fn name_ends(b: &[u8], j: usize) -> bool {
    matches!(b.get(j), None | Some(b';'))
}

/// Refuse an encoded non-ASCII character that a lenient upstream reads as something else that
/// matters to matching (module documentation, rule 4). `at_edge`: it is the first or last
/// character of a segment's name.
fn check_non_ascii(c: char, at_edge: bool) -> Result<(), CanonError> {
    // `char::is_whitespace` is Unicode's White_Space property, what `strip`-style trims drop.
    if at_edge && c.is_whitespace() {
        return Err(CanonError::SegmentEdgeWhitespace);
    }
    if is_default_ignorable(c) {
        return Err(CanonError::EncodedInvisible);
    }
    if folds_to_ascii(c, FOLD_STEPS) {
        return Err(CanonError::EncodedCompatibilityForm);
    }
    Ok(())
}

/// How many NFKC or case-mapping steps [`folds_to_ascii`] follows. The longest chain to ASCII
/// takes two (`ẞ` lowercases to `ß`, which uppercases to `SS`); a test over every character
/// checks that a fourth step finds nothing the first three did not.
const FOLD_STEPS: u8 = 3;

/// Whether NFKC or full Unicode case mapping (lower or upper, as Rust, Java and Python apply
/// them to strings), applied up to `steps` times in any order, turns `c` into text holding
/// ASCII. Mapping to ASCII is what lets a compatibility form stand for a route's spelling; a
/// character that folds only to other non-ASCII (`Ω` OHM SIGN to `Ω`) cannot match an ASCII
/// route.
fn folds_to_ascii(c: char, steps: u8) -> bool {
    fold_reaches_ascii(c, c, steps)
}

/// [`folds_to_ascii`] for `c`, reached by one step from `from`. Going back to `from` (`é` to
/// `É` to `é`) is skipped: it was followed already, with more steps left.
fn fold_reaches_ascii(c: char, from: char, steps: u8) -> bool {
    if steps == 0 {
        return false;
    }
    let next =
        |d: char| d.is_ascii() || (d != c && d != from && fold_reaches_ascii(d, c, steps - 1));
    // Most non-ASCII characters are their own NFKC form: the quick check tells so from a table,
    // without running the normaliser.
    let nfkc_changes = unicode_normalization::is_nfkc_quick(std::iter::once(c))
        != unicode_normalization::IsNormalized::Yes;
    (nfkc_changes && std::iter::once(c).nfkc().any(next))
        || c.to_lowercase().chain(c.to_uppercase()).any(next)
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt of Unicode 16,
/// the same ranges as regex-syntax's table): invisible characters that NFKC_Casefold and IDNA
/// mapping delete. Reserved code points in these ranges are included, as in the property.
const DEFAULT_IGNORABLE: &[(char, char)] = &[
    ('\u{AD}', '\u{AD}'),
    ('\u{34F}', '\u{34F}'),
    ('\u{61C}', '\u{61C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

fn is_default_ignorable(c: char) -> bool {
    DEFAULT_IGNORABLE
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The byte encoded by the escape starting at `b[i] == b'%'`.
fn escape_at(b: &[u8], i: usize) -> Result<u8, CanonError> {
    match (
        b.get(i),
        b.get(i + 1).copied().and_then(hex_val),
        b.get(i + 2).copied().and_then(hex_val),
    ) {
        (Some(b'%'), Some(h), Some(l)) => Ok(h << 4 | l),
        _ => Err(CanonError::MalformedEscape),
    }
}

/// Check that the escapes starting at `b[i]` (whose first byte is `lead` >= 0x80) encode one
/// well-formed UTF-8 character, and return it and its length in bytes. Overlong forms,
/// surrogates, code points above U+10FFFF, stray continuation bytes and truncated sequences
/// are refused.
fn encoded_utf8_char(b: &[u8], i: usize, lead: u8) -> Result<(char, usize), CanonError> {
    let len = match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return Err(CanonError::InvalidUtf8),
    };
    let mut buf = [0u8; 4];
    buf[0] = lead;
    for (k, slot) in buf.iter_mut().enumerate().take(len).skip(1) {
        let at = i + 3 * k;
        if b.get(at) != Some(&b'%') {
            return Err(CanonError::InvalidUtf8);
        }
        *slot = escape_at(b, at)?;
    }
    match std::str::from_utf8(&buf[..len]).map(|s| s.chars().next()) {
        Ok(Some(c)) => Ok((c, len)),
        _ => Err(CanonError::InvalidUtf8),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn upper_hex_val(c: u8) -> Option<u8> {
    if c.is_ascii_lowercase() {
        None
    } else {
        hex_val(c)
    }
}

/// RFC 3986 unreserved characters: decoding them never changes a URI's meaning.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Check a raw query (after `?`): it is forwarded as it is, so only bytes that cannot be
/// forwarded safely are refused. Malformed escapes are left to the upstream.
pub fn validate_query(query: &str) -> Result<(), CanonError> {
    for &c in query.as_bytes() {
        match c {
            b' ' => return Err(CanonError::Space),
            b'#' => return Err(CanonError::Fragment),
            0x00..=0x1F | 0x7F => return Err(CanonError::ControlChar),
            0x80..=0xFF => return Err(CanonError::NonAscii),
            _ => {}
        }
    }
    Ok(())
}

// === canonical_host ===

/// Host from Host header or :authority: lowercase, one trailing dot removed, the default port
/// (80 for http, 443 for https, given as `default_port`) removed; IPv6 literals kept in
/// brackets (in RFC 5952 form). Reject empty labels, invalid characters, userinfo, bad ports.
///
/// Names are letters, digits, `-` and `_` in dot-separated labels (no percent-encoding). A
/// name whose last label is numeric (decimal, or `0x` hex) must be a dotted-quad IPv4 address
/// without leading zeros, so `127.1` or `2130706433` cannot stand for `127.0.0.1`.
pub fn canonical_host(raw: &str, default_port: u16) -> Result<Cow<'_, str>, CanonError> {
    if raw.is_empty() {
        return Err(CanonError::HostEmpty);
    }
    if raw.contains('@') {
        return Err(CanonError::HostUserinfo);
    }
    let (host_part, port_str) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(CanonError::HostInvalidIpv6)?;
        let rest = &raw[end + 1..];
        let port = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(':').ok_or(CanonError::HostInvalidChar)?)
        };
        (&raw[..=end], port)
    } else {
        match raw.rfind(':') {
            // More than one colon outside brackets: a bare IPv6 address or garbage.
            Some(i) if raw[..i].contains(':') => return Err(CanonError::HostInvalidChar),
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        }
    };
    let port = port_str.map(parse_port).transpose()?;
    let name = if host_part.starts_with('[') {
        ipv6_literal(host_part)?
    } else {
        reg_name(host_part)?
    };
    match port.filter(|p| *p != default_port) {
        None => Ok(name),
        Some(p) => match name {
            // Unchanged name and canonical port spelling: the input itself.
            Cow::Borrowed(n)
                if n.len() == host_part.len() && port_str.is_some_and(|s| !s.starts_with('0')) =>
            {
                Ok(Cow::Borrowed(raw))
            }
            n => Ok(Cow::Owned(format!("{n}:{p}"))),
        },
    }
}

fn parse_port(s: &str) -> Result<u16, CanonError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(CanonError::HostInvalidPort);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(CanonError::HostInvalidPort),
        Ok(p) => Ok(p),
    }
}

fn ipv6_literal(host_part: &str) -> Result<Cow<'_, str>, CanonError> {
    let inner = host_part
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(CanonError::HostInvalidIpv6)?;
    let addr: Ipv6Addr = inner.parse().map_err(|_| CanonError::HostInvalidIpv6)?;
    // Render RFC 5952 text on the stack: an IPv6 literal is at most 45 bytes.
    let mut buf = StackText {
        buf: [0; 48],
        len: 0,
    };
    write!(buf, "[{addr}]").map_err(|_| CanonError::HostInvalidIpv6)?;
    let canonical = buf.as_bytes();
    if canonical == host_part.as_bytes() {
        Ok(Cow::Borrowed(host_part))
    } else {
        Ok(Cow::Owned(String::from_utf8_lossy(canonical).into_owned()))
    }
}

/// A short text written with `write!` without touching the heap.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn reg_name(host_part: &str) -> Result<Cow<'_, str>, CanonError> {
    let name = host_part.strip_suffix('.').unwrap_or(host_part);
    if name.is_empty() {
        return Err(CanonError::HostEmpty);
    }
    if name.len() > 253 {
        return Err(CanonError::HostTooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(CanonError::HostEmptyLabel);
        }
        if label.len() > 63 {
            return Err(CanonError::HostTooLong);
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(CanonError::HostInvalidChar);
        }
        last = label;
    }
    let numeric = last.bytes().all(|c| c.is_ascii_digit())
        || (last.len() >= 2
            && last[..2].eq_ignore_ascii_case("0x")
            && last[2..].bytes().all(|c| c.is_ascii_hexdigit()));
    if numeric && name.parse::<Ipv4Addr>().is_err() {
        return Err(CanonError::HostInvalidIpv4);
    }
    if name.bytes().any(|c| c.is_ascii_uppercase()) {
        Ok(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(name))
    }
}

// === canonicalize_target ===

/// The whole target of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonTarget<'a> {
    /// Canonical host ("" when the request carried none, e.g. HTTP/1.0 without Host).
    pub host: Cow<'a, str>,
    /// The canonical path and its readings.
    pub path: CanonPath<'a>,
    /// The raw query (after `?`, without it), validated but not rewritten; None when absent.
    pub query: Option<&'a str>,
}

/// Canonicalise one request's target.
///
/// `uri` is the request-target as hyper parsed it (origin-form "/p?q", absolute-form
/// "http://h/p", HTTP/2 requests also carry scheme+authority in the uri, or "*").
/// `host_header` is the raw Host header value if present. `tls` tells the default port (443,
/// else 80), used for both the authority and the Host header.
///
/// Absolute-form/authority is reduced to its path after checking its authority agrees with
/// Host (after [`canonical_host`] on both; disagreement is [`CanonError::HostConflict`]); `*`
/// only for OPTIONS (then path is "*"); a missing Host on HTTP/1.1 is the caller's business.
/// Authority-form (CONNECT `host:port`) has no path and is refused as not origin-form.
pub fn canonicalize_target<'a>(
    method: &Method,
    uri: &'a Uri,
    host_header: Option<&'a HeaderValue>,
    tls: bool,
    opts: CanonOptions,
) -> Result<CanonTarget<'a>, CanonError> {
    let default_port = if tls { 443 } else { 80 };
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(CanonError::UnsupportedScheme);
        }
    }
    let header_host = match host_header {
        Some(v) => {
            let s = v.to_str().map_err(|_| CanonError::HostInvalidChar)?;
            Some(canonical_host(s, default_port)?)
        }
        None => None,
    };
    let authority_host = match uri.authority() {
        Some(a) => Some(canonical_host(a.as_str(), default_port)?),
        None => None,
    };
    let host = match (authority_host, header_host) {
        (Some(a), Some(h)) if a != h => return Err(CanonError::HostConflict),
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => Cow::Borrowed(""),
    };
    let raw_path = uri.path();
    let path = if raw_path == "*" {
        if method != Method::OPTIONS {
            return Err(CanonError::AsteriskNotOptions);
        }
        CanonPath {
            path: Cow::Borrowed(raw_path),
            forward: None,
            decoded_slash: None,
            encoded_slash: false,
            path_params: false,
        }
    } else {
        canonicalize_path(raw_path, opts)?
    };
    let query = uri.query();
    if let Some(q) = query {
        validate_query(q)?;
    }
    Ok(CanonTarget { host, path, query })
}

// === method overrides ===

/// Headers whose value some frameworks take as the request method.
pub const METHOD_OVERRIDE_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-http-method-override"),
    http::HeaderName::from_static("x-http-method"),
    http::HeaderName::from_static("x-method-override"),
];

/// Method-override spellings that count as the method for matching: headers
/// X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override (every value, comma-separated lists
/// too) and the `_method` query parameter (every occurrence, percent-decoded). Uppercased.
/// An override value that is not a valid method token is an error (400). Returns an empty Vec
/// (no allocation) when there are none.
///
/// Empty list items are skipped. Duplicates are removed. The query is split on `&` and `;`
/// (older Rack and CGI split on both); a parameter name counts as `_method` after
/// percent-decoding and `+` as space, ASCII case-insensitively, and with PHP's renaming (leading
/// spaces dropped, a leading `.`, space or `[` read as `_`), so `%5Fmethod` and `.method` count.
/// Over-matching only makes a route apply to more requests, never fewer.
///
/// `headers` is `None` when the request has no override header (the edge knows from its one
/// pass over the headers), which skips their lookups.
pub fn method_overrides(
    headers: Option<&HeaderMap>,
    query: Option<&str>,
) -> Result<Vec<Method>, CanonError> {
    let mut out = Vec::new();
    if let Some(headers) = headers {
        for name in &METHOD_OVERRIDE_HEADERS {
            for value in headers.get_all(name) {
                let s = value
                    .to_str()
                    .map_err(|_| CanonError::InvalidMethodOverride)?;
                for item in s.split(',') {
                    push_method(&mut out, item.as_bytes())?;
                }
            }
        }
    }
    if let Some(q) = query {
        form_method_overrides(q, &mut out, true)?;
    }
    Ok(out)
}

/// The `_method` parameters of an application/x-www-form-urlencoded string (a query, or a
/// form body), appended to `out`; see [`method_overrides`] for the spellings that count. A
/// value that is not a method token is an error when `strict` (the query: 400), and is skipped
/// otherwise (a body read as a form whatever its type: frameworks ignore or refuse such values,
/// so they override nothing).
pub(crate) fn form_method_overrides(
    form: &str,
    out: &mut Vec<Method>,
    strict: bool,
) -> Result<(), CanonError> {
    for pair in form.split(['&', ';']) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_method_param(key) {
            continue;
        }
        let Some(decoded) = form_decode(value) else {
            if strict {
                return Err(CanonError::InvalidMethodOverride);
            }
            continue;
        };
        for item in decoded.split(|&c| c == b',') {
            match push_method(out, item) {
                Err(e) if strict => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Appends the override method spelled by `item` (optional whitespace trimmed, case folded).
pub(crate) fn push_method(out: &mut Vec<Method>, item: &[u8]) -> Result<(), CanonError> {
    // Optional whitespace (space, tab) only: a CR or LF inside a value is refused below.
    let start = item.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let end = item.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    let item = match (start, end) {
        (Some(s), Some(e)) => &item[s..=e],
        _ => &[][..],
    };
    if item.is_empty() {
        return Ok(());
    }
    let upper = item.to_ascii_uppercase();
    let method = Method::from_bytes(&upper).map_err(|_| CanonError::InvalidMethodOverride)?;
    if !out.contains(&method) {
        out.push(method);
    }
    Ok(())
}

pub(crate) fn is_method_param(key: &str) -> bool {
    // Decoded on the fly: this runs for every query parameter of every request, so it must
    // not allocate.
    let mut decoded = FormDecoded {
        b: key.as_bytes(),
        i: 0,
    }
    .skip_while(|c| *c == Some(b' '));
    match decoded.next() {
        Some(Some(b'_' | b'.' | b'[')) => {}
        _ => return false,
    }
    let mut rest = b"method".iter();
    loop {
        match (decoded.next(), rest.next()) {
            (None, None) => return true,
            // PHP keeps a name only up to a NUL byte (`_method%00x` is `_method`), and reads
            // `_method[...]` as an array named `_method`.
            (Some(Some(0 | b'[')), None) => return true,
            (Some(Some(c)), Some(want)) if c.eq_ignore_ascii_case(want) => {}
            _ => return false,
        }
    }
}

/// The bytes of an application/x-www-form-urlencoded string, decoded one at a time; `None`
/// for a malformed escape.
struct FormDecoded<'a> {
    b: &'a [u8],
    i: usize,
}

impl Iterator for FormDecoded<'_> {
    type Item = Option<u8>;

    fn next(&mut self) -> Option<Option<u8>> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(match c {
            b'+' => Some(b' '),
            b'%' => {
                let h = self.b.get(self.i).copied().and_then(hex_val);
                let l = self.b.get(self.i + 1).copied().and_then(hex_val);
                match (h, l) {
                    (Some(h), Some(l)) => {
                        self.i += 2;
                        Some(h << 4 | l)
                    }
                    _ => None,
                }
            }
            c => Some(c),
        })
    }
}

/// application/x-www-form-urlencoded decoding: `+` is a space, `%XX` a byte. None on a
/// malformed escape.
fn form_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1).copied().and_then(hex_val)?;
                let l = b.get(i + 2).copied().and_then(hex_val)?;
                out.push(h << 4 | l);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

// === path-override headers ===

/// Path-override headers the gateway strips before forwarding (lowercase names). Frameworks,
/// IIS modules and proxies that trust them route on their value instead of the request line,
/// so one reaching an upstream would let a request be matched on one path and served on another.
///
/// Sources: the "X-Original-URL / X-Rewrite-URL" access-control bypass (IIS URL Rewrite,
/// Symfony, Zend); Envoy's `x-envoy-original-path`/`-url`; Traefik/ingress-nginx forward-auth
/// `x-forwarded-uri`/`-prefix`/`-path`; Spring's `ForwardedHeaderFilter` (`x-forwarded-prefix`);
/// WSGI `x-script-name`; Azure App Service's `x-waws-unencoded-url`; nginx's and
/// Apache/lighttpd's internal-redirect `x-accel-redirect` and `x-sendfile` (response headers,
/// but no client sends them, and an application that copies request headers into its response
/// would let a client pick the file served); and every path- or URL-carrying name in the header
/// lists of the public 403-bypass tools: nomore403 (`payloads/headers`, `payloads/simpleheaders`),
/// byp4xx (`templates/headers.txt`), 4-ZERO-3 (`403-bypass.sh`) and bypass-url-parser
/// (`payloads/header_urls.lst`).
///
/// Names in those lists left out on purpose, since they are no path override and clients or
/// other rules need them: `Referer` (and the `Referrer`, `X-Referer`, `X-Referrer`, `X-OReferrer`
/// spellings: the page a link was followed from; browsers send it, CSRF checks read it, routers
/// ignore it); `Destination` (WebDAV's MOVE and COPY target, which those methods need: it names
/// a second resource, not another path for this request, so a deployment that proxies WebDAV
/// puts MOVE and COPY behind an approve or deny route); `Origin`; `Profile` and `X-Wap-Profile`
/// (device-profile URLs); host overrides (`X-Host`, `X-HTTP-Host-Override`, `Proxy-Host`,
/// `X-Forwarded-Host`, `X-Forwarded-Server`) and client-address names, which are not about the
/// path.
pub const PATH_OVERRIDE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-original-path",
    "x-forwarded-uri",
    "x-forwarded-url",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-forwarded-script-name",
    "x-script-name",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-request-uri",
    "x-request-url",
    "x-rewrite-path",
    "x-rewrite-uri",
    "x-real-url",
    "x-real-uri",
    "x-proxy-url",
    "x-http-destinationurl",
    "x-original-request-uri",
    // nomore403, byp4xx, 4-ZERO-3 (path- and URL-carrying names).
    "base-url",
    "http-url",
    "proxy-url",
    "request-uri",
    "uri",
    "url",
    "redirect",
    // bypass-url-parser `header_urls.lst`.
    "original-path",
    "original-url",
    "path",
    "proxy-request-fulluri",
    "x-cf-url",
    "x-flx-redirect-url",
    "x-http-path-override",
    "x-ms-endpoint-absolute-path",
    "x-ning-request-uri",
    "x-path",
    "x-proxy-request",
    "x-route-request",
    "x-uri",
    "x-url",
    "x-waws-unencoded-url",
    "x-accel-redirect",
    "x-sendfile",
];
