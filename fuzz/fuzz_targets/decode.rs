//! Feeds arbitrary bytes to the decoder as MQTT 3.1.1 and 5.0, in arbitrary chunks.
//! Invariants: no panic; errors and incomplete input consume nothing; every decoded packet
//! re-encodes to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use kite_mqtt::{EncodeError, Limits, Version, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let version = if control & 1 == 0 { Version::V3_1_1 } else { Version::V5 };
    let limits = if control & 2 == 0 { Limits::default() } else { Limits { max_packet_size: 128, max_user_properties: 2 } };
    let chunk = usize::from(control >> 2).max(1);
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decode(&mut buf, version, &limits) {
                Ok(Some(packet)) => {
                    let mut again = BytesMut::new();
                    match packet.encode(version, &mut again) {
                        Ok(()) => assert_eq!(decode(&mut again, version, &Limits::default()).unwrap(), Some(packet)),
                        Err(EncodeError::EmptyClientIdNeedsCleanStart) => {}
                        Err(e) => panic!("decoded but cannot re-encode: {e}"),
                    }
                }
                Ok(None) => {
                    assert_eq!(buf, before);
                    break;
                }
                Err(_) => {
                    assert_eq!(buf, before);
                    return;
                }
            }
        }
    }
});
