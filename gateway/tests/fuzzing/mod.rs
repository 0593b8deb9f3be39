//! The gateway's browser side fed arbitrary bytes, for fuzzing: the cargo-fuzz target
//! `inbound` (`cargo xtask fuzz`, open-ended) and the bounded, seeded run of
//! `gateway/tests/fuzz_inbound.rs` in every `cargo xtask test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use bytes::{Bytes, BytesMut};
use kite_mqtt::{Limits, Version};

/// The gateway's browser side: arbitrary bytes (in chunks) into [`kite_gateway::proxy::Inbound`],
/// with a role's topic rules set after the CONNECT, or handing out typed packets for the
/// embedded broker, or neither. Checked: nothing panics, and every
/// packet it forwards to the broker or answers the browser with is one whole, well-formed
/// packet — the gateway never passes on bytes it has not decoded.
pub fn inbound_script(data: &[u8]) {
    use std::sync::Arc;

    use kite_gateway::proxy::Inbound;
    use kite_gateway::rules::{Step, TopicRules};
    use kite_policy::DeniedPublish;

    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let metrics = Arc::new(kite_gateway::metrics::Metrics::default());
    let mut inbound = Inbound::new(if control & 1 == 0 { 4096 } else { 64 }, metrics.clone());
    let with_rules = control & 2 != 0;
    // Without rules, half the inputs go to the embedded broker's in-process link (packets).
    let typed = !with_rules && control & 1 != 0;
    let chunk = usize::from(control >> 2).max(1);
    let mut steps = Vec::new();
    let whole = |bytes: &Bytes, version: Version| {
        let mut buf = BytesMut::from(&bytes[..]);
        match kite_mqtt::decode(&mut buf, version, &Limits::default()) {
            Ok(Some(_)) if buf.is_empty() => {}
            other => panic!("the gateway passed on {bytes:?}, which is not one packet: {other:?}"),
        }
    };
    for piece in input.chunks(chunk) {
        let mut fed = inbound.feed(piece, &mut steps);
        if let Some(connect) = inbound.take_connect() {
            if with_rules {
                let acl = kite_policy::acl::Acl {
                    publish: Some(vec!["a/#".into()]),
                    subscribe: Some(vec!["a/+".into(), "b/#".into()]),
                    deny_publish: vec!["a/x".into()],
                    deny_subscribe: vec!["b/x".into()],
                };
                inbound.set_rules(TopicRules::new(
                    acl,
                    "u",
                    &connect,
                    DeniedPublish::Drop,
                    metrics.clone(),
                ));
            }
            if typed {
                inbound.set_typed();
            }
            // `feed` stops after the CONNECT; what followed it in the chunk comes now.
            if fed.is_ok() {
                fed = inbound.feed(&[], &mut steps);
            }
        }
        let version = inbound.version().unwrap_or(Version::V5);
        for step in steps.drain(..) {
            match step {
                Step::Up(bytes) | Step::Answer(bytes) => whole(&bytes, version),
                Step::Splice(_) => {}
                // A packet for the in-process link is one the broker could have decoded.
                Step::Typed(p) => {
                    let mut bytes = BytesMut::new();
                    p.encode(version, &mut bytes).unwrap_or_else(|e| {
                        panic!("the gateway passed on {p:?}, not encodable: {e}")
                    });
                    whole(&bytes.freeze(), version);
                }
            }
        }
        if fed.is_err() {
            return;
        }
    }
}
