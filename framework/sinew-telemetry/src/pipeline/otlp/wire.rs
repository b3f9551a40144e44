//! Protocol buffers wire primitives: just what OTLP trace messages need.
//!
//! Every field is a key (the field number and a wire type, as a varint)
//! then a value: a varint, 8 or 4 little-endian bytes, or a varint length
//! and that many bytes (strings, bytes and nested messages alike). A
//! nested message's length comes before its bytes: [`put_nested`] writes
//! the message first and its length in front of it after.

use bytes::{Buf, BufMut};

/// How a field's value is laid out after its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireType {
    /// A varint: integers, bools and enums.
    Varint = 0,
    /// Eight little-endian bytes: `fixed64`, `double`.
    Fixed64 = 1,
    /// A varint length, then that many bytes: strings, bytes, messages.
    Len = 2,
    /// Four little-endian bytes: `fixed32`, `float`.
    Fixed32 = 5,
}

/// A response that does not parse as protocol buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protocol buffers message")]
pub(crate) struct Malformed;

/// The size of `value` as a varint: one byte per started group of 7 bits.
pub(crate) const fn varint_len(value: u64) -> usize {
    // `| 1` so that zero, which has no significant bit, takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `value` as a varint: 7 bits a byte, least significant first,
/// the high bit set on every byte but the last.
#[inline]
pub(crate) fn put_varint(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Writes the key of field `tag`.
#[inline]
pub(crate) fn put_key(buf: &mut impl BufMut, tag: u32, wire_type: WireType) {
    put_varint(buf, ((tag as u64) << 3) | wire_type as u64);
}

/// Writes the key and length of a length-delimited field; its `len` bytes
/// must follow.
#[inline]
pub(crate) fn put_len_prefix(buf: &mut impl BufMut, tag: u32, len: usize) {
    put_key(buf, tag, WireType::Len);
    put_varint(buf, len as u64);
}

/// Writes a length-delimited field whose bytes `write` appends to `buf`,
/// with their length in front of them.
///
/// `room` bytes are set aside for the length before `write` runs: the
/// size its varint usually takes for this field. When the length turns out
/// to need another size, the bytes written are moved to fit it, so the
/// varint is always the shortest one, as prost writes it. One pass, where
/// measuring every nested message before writing it would take two.
#[inline]
pub(crate) fn put_nested(
    buf: &mut Vec<u8>,
    tag: u32,
    room: usize,
    write: impl FnOnce(&mut Vec<u8>),
) {
    put_key(buf, tag, WireType::Len);
    let at = buf.len();
    let start = at + room;
    for _ in 0..room {
        buf.push(0);
    }
    write(buf);
    let end = buf.len();
    let len = end - start;
    if len < 0x80 && room == 1 {
        // The usual case for small messages: the room is right.
        buf[at] = len as u8;
        return;
    }
    let size = varint_len(len as u64);
    if size > room {
        buf.resize(end + size - room, 0);
        buf.copy_within(start..end, at + size);
    } else if size < room {
        buf.copy_within(start..end, at + size);
        buf.truncate(end - (room - size));
    }
    put_varint(&mut &mut buf[at..at + size], len as u64);
}

/// Writes a length-delimited field holding `bytes`.
#[inline]
pub(crate) fn put_bytes(buf: &mut impl BufMut, tag: u32, bytes: &[u8]) {
    put_len_prefix(buf, tag, bytes.len());
    buf.put_slice(bytes);
}

/// Writes a varint field.
#[inline]
pub(crate) fn put_varint_field(buf: &mut impl BufMut, tag: u32, value: u64) {
    put_key(buf, tag, WireType::Varint);
    put_varint(buf, value);
}

/// Writes a `fixed64` field (a `double` is its bits).
#[inline]
pub(crate) fn put_fixed64_field(buf: &mut impl BufMut, tag: u32, value: u64) {
    put_key(buf, tag, WireType::Fixed64);
    buf.put_u64_le(value);
}

/// Writes a `fixed32` field.
#[inline]
pub(crate) fn put_fixed32_field(buf: &mut impl BufMut, tag: u32, value: u32) {
    put_key(buf, tag, WireType::Fixed32);
    buf.put_u32_le(value);
}

/// Reads a varint.
pub(crate) fn get_varint(buf: &mut impl Buf) -> Result<u64, Malformed> {
    let mut value = 0u64;
    // A u64 takes at most 10 groups of 7 bits.
    for shift in (0..70).step_by(7) {
        if !buf.has_remaining() {
            return Err(Malformed);
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// Reads a key: the field number and its wire type.
pub(crate) fn get_key(buf: &mut impl Buf) -> Result<(u32, WireType), Malformed> {
    let key = get_varint(buf)?;
    let wire_type = match key & 0x7 {
        0 => WireType::Varint,
        1 => WireType::Fixed64,
        2 => WireType::Len,
        5 => WireType::Fixed32,
        // Groups (3, 4) are long deprecated; OTLP has none.
        _ => return Err(Malformed),
    };
    let tag = u32::try_from(key >> 3).map_err(|_| Malformed)?;
    Ok((tag, wire_type))
}

/// Reads the length of a length-delimited value, checking that many bytes
/// are there.
pub(crate) fn get_len(buf: &mut impl Buf) -> Result<usize, Malformed> {
    let len = usize::try_from(get_varint(buf)?).map_err(|_| Malformed)?;
    if len > buf.remaining() {
        return Err(Malformed);
    }
    Ok(len)
}

/// Skips the value of a field of `wire_type`, whose key was just read.
pub(crate) fn skip(buf: &mut impl Buf, wire_type: WireType) -> Result<(), Malformed> {
    let len = match wire_type {
        WireType::Varint => return get_varint(buf).map(drop),
        WireType::Fixed64 => 8,
        WireType::Fixed32 => 4,
        WireType::Len => get_len(buf)?,
    };
    if len > buf.remaining() {
        return Err(Malformed);
    }
    buf.advance(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::encoding::encoded_len_varint;

    use super::*;

    #[test]
    fn varints_round_trip_at_every_size() {
        let mut values = vec![0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX];
        values.extend((0..64).map(|bit| 1u64 << bit));
        values.extend((1..64).map(|bit| (1u64 << bit) - 1));
        // Negative int64 values are sent as their two's complement.
        values.push(-1i64 as u64);
        for value in values {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            // prost is the reference for the size.
            assert_eq!(varint_len(value), encoded_len_varint(value), "{value}");
            let mut read = buf.as_slice();
            assert_eq!(get_varint(&mut read), Ok(value));
            assert!(read.is_empty());
        }
    }

    #[test]
    fn nested_lengths_are_the_shortest_varint_whatever_the_room() {
        // Lengths on either side of each varint size, written with too
        // little, just enough and too much room.
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 70_000] {
            let content = vec![7u8; len];
            let mut expected = Vec::new();
            put_bytes(&mut expected, 9, &content);
            for room in 0..=4 {
                let mut buf = vec![1, 2, 3];
                put_nested(&mut buf, 9, room, |buf| buf.extend_from_slice(&content));
                assert_eq!(&buf[..3], &[1, 2, 3], "len {len}, room {room}");
                assert!(buf[3..] == expected[..], "len {len}, room {room}");
            }
        }
    }

    #[test]
    fn keys_are_read_back_with_their_tag_and_wire_type() {
        for tag in [1, 15, 16, 2047, 2048, 536_870_911] {
            let mut buf = Vec::new();
            put_fixed32_field(&mut buf, tag, 7);
            let mut read = buf.as_slice();
            assert_eq!(get_key(&mut read), Ok((tag, WireType::Fixed32)));
            assert_eq!(read, 7u32.to_le_bytes());
        }
    }

    #[test]
    fn fields_are_skipped_whole() {
        let mut buf = Vec::new();
        put_varint_field(&mut buf, 1, 1 << 40);
        put_fixed64_field(&mut buf, 2, 1);
        put_bytes(&mut buf, 3, b"hello");
        put_fixed32_field(&mut buf, 4, 1);
        put_varint_field(&mut buf, 5, 42);
        let mut read = buf.as_slice();
        for expected in 1..=4 {
            let (tag, wire_type) = get_key(&mut read).unwrap();
            assert_eq!(tag, expected);
            skip(&mut read, wire_type).unwrap();
        }
        assert_eq!(get_key(&mut read), Ok((5, WireType::Varint)));
        assert_eq!(get_varint(&mut read), Ok(42));
    }

    #[test]
    fn truncated_input_is_malformed() {
        assert_eq!(get_varint(&mut &[0x80u8, 0x80][..]), Err(Malformed));
        assert_eq!(get_varint(&mut &[0xffu8; 11][..]), Err(Malformed));
        let mut buf = Vec::new();
        put_bytes(&mut buf, 1, b"hello");
        buf.truncate(4);
        let mut read = buf.as_slice();
        let (_, wire_type) = get_key(&mut read).unwrap();
        assert_eq!(skip(&mut read, wire_type), Err(Malformed));
        // Wire types 3 and 4 (groups) and 6, 7 do not exist here.
        assert_eq!(get_key(&mut &[0x0bu8][..]), Err(Malformed));
    }
}
