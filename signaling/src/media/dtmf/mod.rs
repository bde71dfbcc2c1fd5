//! DTMF: the keypad's sixteen keys, each a pair of tones (one of four "row" frequencies, one
//! of four "column" frequencies). Keys reach the edge three ways: RFC 4733 telephone-events
//! (`rfc4733`), SIP INFO bodies (`info`) and tones in the audio itself (`inband`); `keys` makes
//! one stream of them per leg.

pub mod inband;
pub mod info;
pub mod keys;
pub mod rfc4733;

/// The row (low group) frequencies, Hz.
pub const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// The column (high group) frequencies, Hz.
pub const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keys by row, then column.
pub const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// The key's row and column frequencies, or None for a character that is not a key.
pub fn tones_of(key: char) -> Option<(f32, f32)> {
    KEYS.iter().enumerate().find_map(|(r, row)| {
        row.iter()
            .position(|k| *k == key.to_ascii_uppercase())
            .map(|c| (ROWS[r], COLUMNS[c]))
    })
}
