//! The one place that encodes and decodes bytes with bincode.
//!
//! bincode is frozen upstream (RUSTSEC-2025-0141; its 3.0.0 release is a
//! deliberate compile error), so it is pinned to `=2.0.1` and no other module
//! names it. Every encoding starts with a format tag and a version byte, so a
//! future codec can read old data and refuse unknown versions with a clear error.
//! Decoding is bounded: no allocation larger than [`MAX_DECODE`] is attempted,
//! whatever a length prefix claims.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The upper bound on any one decoded value, in bytes (64 MiB).
pub(crate) const MAX_DECODE: usize = 64 << 20;

/// What a codec call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a value of the expected kind (truncated, corrupt, or written
    /// by something else). Nothing was decoded.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The value was written by a newer or unknown format version.
    #[error("{what} has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The value could not be encoded (should not happen for fieldsync's types).
    #[error("could not encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE>()
}

fn config_limited<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// [`decode`] for untrusted input with a tighter allocation bound: no container
/// larger than `LIMIT` bytes in total is allocated (network messages).
pub(crate) fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    what: &'static str,
    tag: u8,
    version: u8,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let (value, rest) = decode_with(what, tag, version, bytes, config_limited::<LIMIT>())?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed {
            what,
            message: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// Encode `value` as `[tag, version, bincode...]`.
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    tag: u8,
    version: u8,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    encode_reserving(what, tag, version, value, 0)
}

/// [`encode`], with room for `extra` bytes the caller appends after the value
/// (so that appending does not move what is encoded).
pub(crate) fn encode_reserving<T: Serialize>(
    what: &'static str,
    tag: u8,
    version: u8,
    value: &T,
    extra: usize,
) -> Result<Vec<u8>, CodecError> {
    // Most values are a few hundred bytes: start there, not at 2.
    let mut out = Vec::with_capacity(256 + extra);
    out.extend_from_slice(&[tag, version]);
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| {
        CodecError::Encode {
            what,
            message: e.to_string(),
        }
    })?;
    Ok(out)
}

/// Decode a value written by [`encode`] with the same `tag` and `version`.
/// Trailing bytes are refused, so a concatenation or a truncation is caught.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    tag: u8,
    version: u8,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let (value, rest) = decode_prefix(what, tag, version, bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed {
            what,
            message: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// Decode a value written by [`encode`] at the start of `bytes`; returns it and
/// the bytes that follow it (for formats that append raw data after a header).
pub(crate) fn decode_prefix<'b, T: DeserializeOwned>(
    what: &'static str,
    tag: u8,
    version: u8,
    bytes: &'b [u8],
) -> Result<(T, &'b [u8]), CodecError> {
    decode_with(what, tag, version, bytes, config())
}

fn decode_with<'b, T: DeserializeOwned>(
    what: &'static str,
    tag: u8,
    version: u8,
    bytes: &'b [u8],
    config: impl bincode::config::Config,
) -> Result<(T, &'b [u8]), CodecError> {
    let malformed = |message: String| CodecError::Malformed { what, message };
    match bytes {
        [t, v, body @ ..] if *t == tag => {
            if *v != version {
                return Err(CodecError::UnsupportedVersion {
                    what,
                    found: *v,
                    supported: version,
                });
            }
            let (value, used) = bincode::serde::decode_from_slice(body, config)
                .map_err(|e| malformed(e.to_string()))?;
            Ok((value, &body[used..]))
        }
        [t, ..] => Err(malformed(format!("tag {t:#04x}, expected {tag:#04x}"))),
        [] => Err(malformed("empty input".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = (String::from("x"), vec![1u64, 2, 3]);
        let bytes = encode("test", 7, 1, &v).unwrap();
        let back: (String, Vec<u64>) = decode("test", 7, 1, &bytes).unwrap();
        assert_eq!(back, v);
        assert!(matches!(
            decode::<(String, Vec<u64>)>("test", 7, 2, &bytes),
            Err(CodecError::UnsupportedVersion { found: 1, .. })
        ));
        assert!(matches!(
            decode::<(String, Vec<u64>)>("test", 8, 1, &bytes),
            Err(CodecError::Malformed { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(String, Vec<u64>)>("test", 7, 1, &longer).is_err());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_without_allocating_it() {
        // tag, version, then a varint length of u64::MAX for a Vec<u8>.
        let mut bytes = vec![7, 1, 0xff];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let r = decode::<Vec<u8>>("test", 7, 1, &bytes);
        assert!(matches!(r, Err(CodecError::Malformed { .. })), "{r:?}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<(String, Vec<u64>, Option<bool>)>("test", 7, 1, &bytes);
        }
    }
}
