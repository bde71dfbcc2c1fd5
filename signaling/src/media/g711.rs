//! ITU-T G.711: the 8-bit companded codes of PCMU (µ-law, payload type 0) and PCMA (A-law,
//! payload type 8) to 16-bit linear samples and back. The edge decodes to detect tones in the
//! audio and encodes the tones it plays.

/// The peak of a 0 dBm0 sine on the decoded scale (±32,124 µ-law is +3.17 dBm0): the level
/// reference for tones the edge plays and detects.
pub const DBM0_PEAK: f32 = 22_656.0;

/// µ-law's bias, added before the segment is found (the code's zero is the bias).
const ULAW_BIAS: i32 = 0x84;
/// The largest magnitude µ-law can encode once biased.
const ULAW_CLIP: i32 = 32_635;

/// A PCMU code to a linear sample (±32,124).
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    let sample = if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    };
    sample as i16
}

/// A linear sample to its PCMU code.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let sign: u8 = if sample < 0 { 0x80 } else { 0 };
    let magnitude = sample.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // The segment: where the highest set bit is, counted from bit 7 (the bias makes
    // `magnitude >> 7` at least 1, and the clip at most 255).
    let exponent = (31 - ((magnitude >> 7) as u32).leading_zeros()) as u8;
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// A PCMA code to a linear sample (±32,256).
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0F);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    // In A-law a set sign bit is a positive sample.
    let sample = if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    };
    sample as i16
}

/// A linear sample to its PCMA code.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // 13 significant bits; negative samples are coded on their one's complement.
    let value = i32::from(sample) >> 3;
    let (mask, magnitude) = if value >= 0 {
        (0xD5u8, value)
    } else {
        (0x55u8, -value - 1)
    };
    let segment = (0..8u8).find(|s| magnitude < (0x20 << s)).unwrap_or(8);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let step = if segment < 2 { 1 } else { segment };
    let code = (segment << 4) | ((magnitude >> step) & 0x0F) as u8;
    code ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            let ulaw = ulaw_to_linear(code);
            assert_eq!(
                ulaw_to_linear(linear_to_ulaw(ulaw)),
                ulaw,
                "µ-law {code:#04x}"
            );
            let alaw = alaw_to_linear(code);
            assert_eq!(linear_to_alaw(alaw), code, "A-law {code:#04x}");
        }
    }

    #[test]
    fn known_codes() {
        // Silence, the extremes, and a mid-scale value of each law.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn quantisation_error_stays_within_the_segment_step() {
        // Below the clipping level, steps double per segment: the error is at most a sixteenth
        // of the magnitude plus the smallest step.
        for sample in (-32_000..=32_000i16).step_by(7) {
            let s = i32::from(sample);
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            let bound = s.abs() / 16 + 16;
            assert!((u - s).abs() <= bound, "µ-law {s} -> {u}");
            assert!((a - s).abs() <= bound, "A-law {s} -> {a}");
        }
    }
}
