//! RTP packets (RFC 3550 §5.1) as far as a leg the edge terminates needs them: the fixed
//! header read (version 2, CSRCs, header extension and padding skipped) to find the payload,
//! and a plain header written for the frames the edge sends.

/// The fixed header's length.
pub const HEADER: usize = 12;

/// One packet's header fields and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The packet in `bytes`, or None when it is not RTP version 2 or its lengths do not add
    /// up (RTCP arrives on its own port; a stray here is dropped).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < HEADER || bytes[0] >> 6 != 2 {
            return None;
        }
        let csrcs = usize::from(bytes[0] & 0x0F);
        let mut start = HEADER + 4 * csrcs;
        if bytes[0] & 0x10 != 0 {
            // Header extension: a 4-byte head whose second half counts 32-bit words.
            let head = bytes.get(start..start + 4)?;
            let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
            start += 4 + 4 * words;
        }
        let mut end = bytes.len();
        if bytes[0] & 0x20 != 0 {
            // Padding: the last byte counts the padding bytes, itself included.
            let padding = usize::from(*bytes.last()?);
            end = end.checked_sub(padding)?;
        }
        Some(Self {
            marker: bytes[1] & 0x80 != 0,
            payload_type: bytes[1] & 0x7F,
            sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
            timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            payload: bytes.get(start..end)?,
        })
    }
}

/// Writes a fixed header (no CSRC, extension or padding) into `out[..HEADER]`.
pub fn write_header(
    out: &mut [u8],
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (payload_type & 0x7F);
    out[2..4].copy_from_slice(&sequence.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_reads_back_and_its_payload_follows() {
        let mut bytes = vec![0u8; HEADER + 3];
        write_header(&mut bytes, true, 101, 65_535, 0xDEAD_BEEF, 42);
        bytes[HEADER..].copy_from_slice(&[1, 2, 3]);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(
            (
                p.marker,
                p.payload_type,
                p.sequence,
                p.timestamp,
                p.ssrc,
                p.payload
            ),
            (true, 101, 65_535, 0xDEAD_BEEF, 42, &[1u8, 2, 3][..])
        );
    }

    #[test]
    fn csrcs_extensions_and_padding_are_skipped_and_bad_lengths_refused() {
        // Two CSRCs, an extension of one word, 2 bytes of payload, 3 of padding.
        let mut bytes = vec![0xB2, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0u8; 8]); // CSRCs
        bytes.extend([0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension
        bytes.extend([7, 8]); // payload
        bytes.extend([0, 0, 3]); // padding
        assert_eq!(Packet::parse(&bytes).unwrap().payload, &[7, 8]);
        // Version 1, too short, padding longer than the packet, extension past the end.
        assert_eq!(Packet::parse(&[0x40; 20]), None);
        assert_eq!(Packet::parse(&[0x80; 11]), None);
        let mut padded = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        padded.push(200);
        assert_eq!(Packet::parse(&padded), None);
        assert_eq!(
            Packet::parse(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
