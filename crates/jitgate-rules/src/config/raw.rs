//! The serde side of the config model: each section is a derived struct (`Raw*`) whose fields
//! are [`Field`]s, so every value keeps its span (`serde_spanned`, as Cargo does) and a value
//! of the wrong type is kept as an error on its field instead of ending the read. The
//! validation pass in the section modules then turns the raw structs into the compiled model,
//! reporting every problem of a file in one `check`, each at `file:line:column`.
//!
//! Unknown keys are not refused by serde (`deny_unknown_fields` stops at the first one and
//! cannot suggest): a [`Table`] records the keys it was given, with their spans, beside the
//! fields its struct declares, and [`Cx::keys`] reports the rest with a suggestion.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, Range};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};
use serde::Deserialize;
use toml::Spanned;

use super::{suggest, Cx};

/// The key toml gives the one entry of a datetime read as a map.
const TOML_DATETIME: &str = "$__toml_private_datetime";

/// One value as the file wrote it: where, and either the value or why it is not one.
#[derive(Debug)]
pub(crate) struct Field<T> {
    pub(crate) span: Range<usize>,
    pub(crate) value: Result<T, Wrong>,
}

/// Why a [`Field`] holds no value.
#[derive(Debug)]
pub(crate) enum Wrong {
    /// A value of another TOML type; the type found (`"string"`, `"array"`...).
    Type(&'static str),
    /// An integer beyond 64 bits.
    Range,
    /// The reader's own complaint.
    Invalid(String),
}

/// The span of an optional field.
pub(crate) fn span_of<T>(f: &Option<Field<T>>) -> Option<Range<usize>> {
    f.as_ref().map(|f| f.span.clone())
}

/// A scalar as TOML spells it.
pub(crate) enum Scalar {
    Str(String),
    Int(i64),
    /// An integer beyond `i64`.
    BigInt,
    Float,
    Bool(bool),
}

impl Scalar {
    fn type_str(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "string",
            Scalar::Int(_) | Scalar::BigInt => "integer",
            Scalar::Float => "float",
            Scalar::Bool(_) => "boolean",
        }
    }
}

/// What a [`Field`] may hold: how to read it from each kind of TOML value. A kind it does not
/// take becomes [`Wrong::Type`].
pub(crate) trait Leaf: Sized {
    /// What the field must be, for "`key` in [section] must be WANT, not ...".
    const WANT: &'static str;

    fn scalar(s: Scalar) -> Result<Self, Wrong> {
        Err(Wrong::Type(s.type_str()))
    }

    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Result<Self, Wrong>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(Wrong::Type("array")))
    }

    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Wrong>, A::Error> {
        Ok(Err(Wrong::Type(skip_map(map)?)))
    }
}

/// Reads past a map; `"datetime"` when it was toml's wrapping of one, else `"table"`.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<&'static str, A::Error> {
    let mut found = "table";
    while let Some(k) = map.next_key::<String>()? {
        if k == TOML_DATETIME {
            found = "datetime";
        }
        map.next_value::<IgnoredAny>()?;
    }
    Ok(found)
}

impl Leaf for String {
    const WANT: &'static str = "a string";
    fn scalar(s: Scalar) -> Result<Self, Wrong> {
        match s {
            Scalar::Str(s) => Ok(s),
            other => Err(Wrong::Type(other.type_str())),
        }
    }
}

impl Leaf for bool {
    const WANT: &'static str = "true or false";
    fn scalar(s: Scalar) -> Result<Self, Wrong> {
        match s {
            Scalar::Bool(b) => Ok(b),
            other => Err(Wrong::Type(other.type_str())),
        }
    }
}

impl Leaf for i64 {
    const WANT: &'static str = "an integer";
    fn scalar(s: Scalar) -> Result<Self, Wrong> {
        match s {
            Scalar::Int(n) => Ok(n),
            Scalar::BigInt => Err(Wrong::Range),
            other => Err(Wrong::Type(other.type_str())),
        }
    }
}

/// A size: a string such as `"1MiB"` or a number of bytes.
#[derive(Debug)]
pub(crate) enum Size {
    Text(String),
    Bytes(i64),
}

impl Leaf for Size {
    const WANT: &'static str = "a size (\"1MiB\") or a number of bytes";
    fn scalar(s: Scalar) -> Result<Self, Wrong> {
        match s {
            Scalar::Str(s) => Ok(Size::Text(s)),
            Scalar::Int(n) => Ok(Size::Bytes(n)),
            Scalar::BigInt => Err(Wrong::Range),
            other => Err(Wrong::Type(other.type_str())),
        }
    }
}

/// An array: each element a [`Field`] of its own.
impl<T: Leaf> Leaf for Vec<Field<T>> {
    const WANT: &'static str = "an array";
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Result<Self, Wrong>, A::Error> {
        let mut out = Vec::new();
        while let Some(f) = seq.next_element::<Field<T>>()? {
            out.push(f);
        }
        Ok(Ok(out))
    }
}

/// A string of the file with its span.
pub(crate) type SpannedStr<'a> = (&'a str, Range<usize>);

/// An array of strings, each with its span.
pub(crate) type Strings = Vec<Field<String>>;

/// An array of tables (`[[routes]]`), each with its span.
pub(crate) type Tables<R> = Vec<Field<Table<R>>>;

/// A table whose keys are data (header names, methods, user ids), in file order.
pub(crate) type Map<V> = Vec<(Spanned<String>, Field<V>)>;

impl<T: Leaf> Leaf for Vec<(Spanned<String>, Field<T>)> {
    const WANT: &'static str = "a table";
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, Wrong>, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            if k.get_ref() == TOML_DATETIME {
                map.next_value::<IgnoredAny>()?;
                return Ok(Err(Wrong::Type("datetime")));
            }
            out.push((k, map.next_value::<Field<T>>()?));
        }
        Ok(Ok(out))
    }
}

/// A section: the derived struct `R` plus the keys the file gave it, so unknown ones can be
/// reported with a suggestion.
#[derive(Debug)]
pub(crate) struct Table<R> {
    raw: R,
    /// Every key given, with the span of the key.
    keys: Vec<(String, Range<usize>)>,
    /// The keys `R` declares.
    known: &'static [&'static str],
}

impl<R> Deref for Table<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.raw
    }
}

impl<R> Table<R> {
    /// Whether the file gave `key`, whatever its value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }
}

impl<R: Default> Table<R> {
    /// A section the file leaves out.
    pub(crate) fn empty() -> Self {
        Table {
            raw: R::default(),
            keys: Vec::new(),
            known: &[],
        }
    }
}

impl<R: DeserializeOwned> Leaf for Table<R> {
    const WANT: &'static str = "a table";
    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Wrong>, A::Error> {
        let mut keys = Vec::new();
        let mut known: &'static [&'static str] = &[];
        let raw = R::deserialize(Recording {
            map,
            keys: &mut keys,
            known: &mut known,
        })?;
        if keys.len() == 1 && keys[0].0 == TOML_DATETIME {
            return Ok(Err(Wrong::Type("datetime")));
        }
        Ok(Ok(Table { raw, keys, known }))
    }
}

/// Hands a map to a derived struct, noting each key with its span and the fields the struct
/// declares (serde passes them to `deserialize_struct`).
struct Recording<'k, A> {
    map: A,
    keys: &'k mut Vec<(String, Range<usize>)>,
    known: &'k mut &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Recording<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        *self.known = fields;
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Recording<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.map.next_key::<Spanned<String>>()? else {
            return Ok(None);
        };
        let span = key.span();
        let key = key.into_inner();
        self.keys.push((key.clone(), span));
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl<'de, T: Leaf> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Probe<T>>::deserialize(d)?;
        let span = s.span();
        Ok(Field {
            span,
            value: s.into_inner().0,
        })
    }
}

/// A value read by kind, never failing the read around it.
struct Probe<T>(Result<T, Wrong>);

impl<'de, T: Leaf> Deserialize<'de> for Probe<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Probe(
            d.deserialize_any(ProbeVisitor(PhantomData))
                .unwrap_or_else(|e: D::Error| unreadable::<T>(&e.to_string())),
        ))
    }
}

/// A value toml could not hand over. toml says why only in words: numbers beyond what
/// Rust's types hold are still numbers of a type, and a datetime read as a table (its one
/// key, toml's private marker, has no span) is a datetime.
fn unreadable<T: Leaf>(message: &str) -> Result<T, Wrong> {
    if message.contains("integer number overflowed") {
        T::scalar(Scalar::BigInt)
    } else if message.contains("floating-point number overflowed") {
        T::scalar(Scalar::Float)
    } else if message.contains(TOML_DATETIME) {
        Err(Wrong::Type("datetime"))
    } else {
        Err(Wrong::Invalid(message.trim().to_string()))
    }
}

struct ProbeVisitor<T>(PhantomData<T>);

impl<'de, T: Leaf> Visitor<'de> for ProbeVisitor<T> {
    type Value = Result<T, Wrong>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::WANT)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::scalar(
            i64::try_from(v).map_or(Scalar::BigInt, Scalar::Int),
        ))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::BigInt))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::BigInt))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::Float))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::Str(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(T::scalar(Scalar::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::map(map)
    }
}

/// Reads the whole document into the top-level section.
pub(crate) fn read<R: DeserializeOwned>(
    doc: Spanned<toml::de::DeTable<'_>>,
) -> Result<Field<Table<R>>, toml::de::Error> {
    Field::<Table<R>>::deserialize(doc.into_deserializer())
}

// === the accessors the validation pass reads fields with ===

impl Cx<'_> {
    /// The value of `f`, or `None` (reported) when it has none.
    pub(crate) fn get<'a, T: Leaf>(
        &mut self,
        f: &'a Option<Field<T>>,
        key: &str,
        section: &str,
    ) -> Option<(&'a T, Range<usize>)> {
        self.value(f.as_ref()?, key, section)
    }

    /// The value of `f`, or `None` (reported) when it has none.
    pub(crate) fn value<'a, T: Leaf>(
        &mut self,
        f: &'a Field<T>,
        key: &str,
        section: &str,
    ) -> Option<(&'a T, Range<usize>)> {
        match &f.value {
            Ok(v) => Some((v, f.span.clone())),
            Err(w) => {
                self.wrong(w, f.span.clone(), key, section, T::WANT);
                None
            }
        }
    }

    fn wrong(&mut self, w: &Wrong, span: Range<usize>, key: &str, section: &str, want: &str) {
        let msg = match w {
            Wrong::Type(found) => format!("`{key}` in {section} must be {want}, not {found}"),
            Wrong::Range => format!("`{key}` in {section} is out of range"),
            Wrong::Invalid(e) => format!("`{key}` in {section}: {e}"),
        };
        self.error(span, msg);
    }

    /// Unknown keys of `t`, refused with the closest known one as a suggestion.
    pub(crate) fn keys<R>(&mut self, t: &Table<R>, section: &str) {
        for (key, span) in &t.keys {
            if !t.known.contains(&key.as_str()) {
                let hint = suggest(key, t.known)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.error(
                    span.clone(),
                    format!("unknown key `{key}` in {section}{hint}"),
                );
            }
        }
    }

    pub(crate) fn string<'a>(
        &mut self,
        f: &'a Option<Field<String>>,
        key: &str,
        section: &str,
    ) -> Option<(&'a str, Range<usize>)> {
        self.get(f, key, section).map(|(s, sp)| (s.as_str(), sp))
    }

    pub(crate) fn flag(
        &mut self,
        f: &Option<Field<bool>>,
        key: &str,
        section: &str,
    ) -> Option<(bool, Range<usize>)> {
        self.get(f, key, section).map(|(b, sp)| (*b, sp))
    }

    pub(crate) fn integer(
        &mut self,
        f: &Option<Field<i64>>,
        key: &str,
        section: &str,
    ) -> Option<(i64, Range<usize>)> {
        self.get(f, key, section).map(|(n, sp)| (*n, sp))
    }

    /// Each string of an array of strings, with its span; elements of another type are
    /// reported as `key[..]`.
    pub(crate) fn strings<'a>(
        &mut self,
        f: &'a Option<Field<Vec<Field<String>>>>,
        key: &str,
        section: &str,
    ) -> Option<(Vec<SpannedStr<'a>>, Range<usize>)> {
        let (items, span) = self.get(f, key, section)?;
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Ok(s) => out.push((s.as_str(), item.span.clone())),
                Err(w) => self.wrong(
                    w,
                    item.span.clone(),
                    &format!("{key}[..]"),
                    section,
                    String::WANT,
                ),
            }
        }
        Some((out, span))
    }

    /// The tables of an array of tables; elements that are not tables are reported.
    pub(crate) fn tables<'a, R: DeserializeOwned>(
        &mut self,
        f: &'a Option<Field<Vec<Field<Table<R>>>>>,
        key: &str,
        section: &str,
    ) -> Vec<(&'a Table<R>, Range<usize>)> {
        let Some((items, _)) = self.get(f, key, section) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Ok(t) => out.push((t, item.span.clone())),
                Err(w) => self.wrong(w, item.span.clone(), key, section, "an array of tables"),
            }
        }
        out
    }
}
