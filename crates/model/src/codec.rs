//! The state-record codec: a small, deterministic, fixed-width binary encoding.
//!
//! State records are what a state transfer sends and what the state digest hashes, so their
//! encoding must be canonical (one value, one byte string) and cheap to size. Integers are
//! little-endian and fixed width; `Option<T>` always takes `1 + T`'s bytes (zeros when `None`), so
//! a row made only of fixed-width fields has a length known at compile time. That is what lets the
//! router keep `state_size_now` exact while paying nothing per update.
//!
//! Decoding never panics: every read is bounds-checked, every length is limited, and an unknown
//! enum tag is an error.

use thiserror::Error;

/// The longest string a state record may hold. Configuration strings are far shorter; this bound
/// stops a corrupt length prefix from allocating gigabytes.
pub const STRING_BYTES_MAX: usize = 64 * 1024;
/// The longest vector a state record may hold (script nodes, call variables, ...).
pub const VEC_LEN_MAX: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("record truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("invalid tag {tag} for {type_name}")]
    InvalidTag { type_name: &'static str, tag: u32 },
    #[error("length {len} exceeds the limit {max} for {what}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{trailing} trailing bytes after the record")]
    Trailing { trailing: usize },
}

/// A bounds-checked cursor over a byte slice.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                needed: n - self.remaining(),
            });
        }
        let slice = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(slice)
    }

    #[inline]
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    /// Fails unless every byte was consumed: a record with trailing garbage is corrupt.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(DecodeError::Trailing { trailing }),
        }
    }
}

/// A value with a canonical state-record encoding.
pub trait Encode: Sized {
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// The exact number of bytes `encode` appends.
    fn encoded_len(&self) -> usize;
    /// Reads one value; never panics on any input.
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Encodes a value into a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes a value that must span `bytes` exactly.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = Self::decode(&mut reader)?;
        reader.finish()?;
        Ok(value)
    }
}

/// A value whose encoding always has the same length. `Option<T>` of such a value does too.
pub trait FixedLen: Encode {
    const LEN: usize;
}

macro_rules! impl_int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            #[inline]
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(reader.take_array()?))
            }
        }
        impl FixedLen for $t {
            const LEN: usize = std::mem::size_of::<$t>();
        }
    )*};
}
impl_int!(u8, u16, u32, u64, i32, i64);

impl Encode for bool {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.take_array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag {
                type_name: "bool",
                tag: tag as u32,
            }),
        }
    }
}
impl FixedLen for bool {
    const LEN: usize = 1;
}

impl Encode for String {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.len() <= STRING_BYTES_MAX);
        (self.len() as u32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::decode(reader)? as usize;
        if len > STRING_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "string",
                len,
                max: STRING_BYTES_MAX,
            });
        }
        let bytes = reader.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }
}

impl<T: Encode> Encode for Vec<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.len() <= VEC_LEN_MAX);
        (self.len() as u32).encode(out);
        for item in self {
            item.encode(out);
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        4 + self.iter().map(Encode::encoded_len).sum::<usize>()
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::decode(reader)? as usize;
        if len > VEC_LEN_MAX || len > reader.remaining() {
            // Every element takes at least one byte, so a length beyond what remains is corrupt.
            return Err(DecodeError::TooLong {
                what: "vector",
                len,
                max: VEC_LEN_MAX.min(reader.remaining()),
            });
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(T::decode(reader)?);
        }
        Ok(items)
    }
}

impl<T: Encode + Clone> Encode for std::sync::Arc<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(std::sync::Arc::new(T::decode(reader)?))
    }
}

/// `Option<T>` is a tag byte followed by `T`; a fixed-width `T` is written as zeros when `None`
/// so that the option's length does not depend on its value.
impl<T: Encode + FixedLen + Default> Encode for Option<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => {
                out.push(1);
                value.encode(out);
            }
            None => {
                out.push(0);
                out.resize(out.len() + T::LEN, 0);
            }
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1 + T::LEN
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.take_array::<1>()?[0] {
            0 => {
                // The padding must be zeros, or two byte strings would decode to one value.
                if reader.take(T::LEN)?.iter().any(|&b| b != 0) {
                    return Err(DecodeError::Invalid("non-zero padding in an absent option"));
                }
                Ok(None)
            }
            1 => Ok(Some(T::decode(reader)?)),
            tag => Err(DecodeError::InvalidTag {
                type_name: "Option",
                tag: tag as u32,
            }),
        }
    }
}
impl<T: Encode + FixedLen + Default> FixedLen for Option<T> {
    const LEN: usize = 1 + T::LEN;
}

/// An optional variable-length value: a tag byte, then the value when present. (`Option<T>` is
/// reserved for fixed-width values, whose absent form is padded to the same length.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nullable<T>(pub Option<T>);

impl<T: Encode> Encode for Nullable<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Some(value) => {
                out.push(1);
                value.encode(out);
            }
            None => out.push(0),
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1 + self.0.as_ref().map_or(0, Encode::encoded_len)
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.take_array::<1>()?[0] {
            0 => Ok(Nullable(None)),
            1 => Ok(Nullable(Some(T::decode(reader)?))),
            tag => Err(DecodeError::InvalidTag {
                type_name: "Nullable",
                tag: tag as u32,
            }),
        }
    }
}

impl<T: Encode + FixedLen + Default + Copy, const N: usize> Encode for [T; N] {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(N * T::LEN);
        for item in self {
            item.encode(out);
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        N * T::LEN
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut items = [T::default(); N];
        for item in items.iter_mut() {
            *item = T::decode(reader)?;
        }
        Ok(items)
    }
}
impl<T: Encode + FixedLen + Default + Copy, const N: usize> FixedLen for [T; N] {
    const LEN: usize = N * T::LEN;
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        self.0.encoded_len() + self.1.encoded_len()
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok((A::decode(reader)?, B::decode(reader)?))
    }
}
impl<A: FixedLen, B: FixedLen> FixedLen for (A, B) {
    const LEN: usize = A::LEN + B::LEN;
}

impl<A: Encode, B: Encode, C: Encode> Encode for (A, B, C) {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
        self.2.encode(out);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        self.0.encoded_len() + self.1.encoded_len() + self.2.encoded_len()
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok((A::decode(reader)?, B::decode(reader)?, C::decode(reader)?))
    }
}
impl<A: FixedLen, B: FixedLen, C: FixedLen> FixedLen for (A, B, C) {
    const LEN: usize = A::LEN + B::LEN + C::LEN;
}

impl Encode for () {
    #[inline]
    fn encode(&self, _out: &mut Vec<u8>) {}
    #[inline]
    fn encoded_len(&self) -> usize {
        0
    }
    #[inline]
    fn decode(_reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}
impl FixedLen for () {
    const LEN: usize = 0;
}

/// Implements [`Encode`] for a struct by encoding its fields in the order listed.
/// `fixed` also implements [`FixedLen`]; list every field, or the encoding silently loses one
/// (the round-trip tests would catch that).
#[macro_export]
macro_rules! encode_struct {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl $crate::codec::Encode for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                $( $crate::codec::Encode::encode(&self.$field, out); )*
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                0 $( + $crate::codec::Encode::encoded_len(&self.$field) )*
            }
            #[inline]
            fn decode(reader: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::DecodeError> {
                Ok($name { $( $field: $crate::codec::Encode::decode(reader)?, )* })
            }
        }
    };
    // A fixed-width struct reserves and takes its whole width at once, so that its fields'
    // bounds checks fold into one.
    (fixed $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        impl $crate::codec::Encode for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.reserve(<$name as $crate::codec::FixedLen>::LEN);
                $( $crate::codec::Encode::encode(&self.$field, out); )*
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                <$name as $crate::codec::FixedLen>::LEN
            }
            #[inline]
            fn decode(reader: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::DecodeError> {
                let bytes = reader.take(<$name as $crate::codec::FixedLen>::LEN)?;
                let mut fields = $crate::codec::Reader::new(bytes);
                Ok($name { $( $field: <$ty as $crate::codec::Encode>::decode(&mut fields)?, )* })
            }
        }
        impl $crate::codec::FixedLen for $name {
            const LEN: usize = 0 $( + <$ty as $crate::codec::FixedLen>::LEN )*;
        }
    };
}

/// Implements [`Encode`] and [`FixedLen`] for a field-less enum with explicit `u8` discriminants.
#[macro_export]
macro_rules! encode_unit_enum {
    ($name:ident { $($variant:ident),* $(,)? }) => {
        impl $crate::codec::Encode for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.push(*self as u8);
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                1
            }
            #[inline]
            fn decode(reader: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::DecodeError> {
                let tag = reader.take_array::<1>()?[0];
                $( if tag == $name::$variant as u8 { return Ok($name::$variant); } )*
                Err($crate::codec::DecodeError::InvalidTag { type_name: stringify!($name), tag: tag as u32 })
            }
        }
        impl $crate::codec::FixedLen for $name {
            const LEN: usize = 1;
        }
    };
}

/// Implements [`Encode`] and [`FixedLen`] for a `u32`/`u64` newtype.
#[macro_export]
macro_rules! encode_newtype {
    ($name:ident($inner:ty)) => {
        impl $crate::codec::Encode for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out)
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                <$inner as $crate::codec::FixedLen>::LEN
            }
            #[inline]
            fn decode(
                reader: &mut $crate::codec::Reader<'_>,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok($name(<$inner as $crate::codec::Encode>::decode(reader)?))
            }
        }
        impl $crate::codec::FixedLen for $name {
            const LEN: usize = <$inner as $crate::codec::FixedLen>::LEN;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Sample {
        id: u32,
        name: String,
        maybe: Option<u64>,
        list: Vec<u16>,
        flag: bool,
    }
    encode_struct!(Sample {
        id,
        name,
        maybe,
        list,
        flag
    });

    proptest! {
        #[test]
        fn round_trip(id: u32, name in "\\PC{0,40}", maybe: Option<u64>, list: Vec<u16>, flag: bool) {
            let sample = Sample { id, name, maybe, list, flag };
            let bytes = sample.to_bytes();
            prop_assert_eq!(bytes.len(), sample.encoded_len());
            prop_assert_eq!(Sample::from_bytes(&bytes).unwrap(), sample);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = Sample::from_bytes(&bytes);
        }
    }

    #[test]
    fn option_length_is_fixed() {
        assert_eq!(Some(7u64).encoded_len(), None::<u64>.encoded_len());
        assert_eq!(<Option<u64> as FixedLen>::LEN, 9);
    }

    #[test]
    fn non_canonical_none_is_rejected() {
        let bytes = [0u8, 1, 0, 0, 0];
        assert!(Option::<u32>::from_bytes(&bytes).is_err());
    }

    #[test]
    fn oversized_length_prefix_is_rejected_without_allocating() {
        let mut bytes = Vec::new();
        u32::MAX.encode(&mut bytes);
        assert!(matches!(
            Vec::<u64>::from_bytes(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            String::from_bytes(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert_eq!(
            u8::from_bytes(&[1, 2]),
            Err(DecodeError::Trailing { trailing: 1 })
        );
    }
}
