//! `[acl] v311_denied_publish`: what happens to a refused MQTT 3.1.1 PUBLISH, which has no
//! way to be told no.

/// What the broker or the gateway does with a refused MQTT 3.1.1 PUBLISH (`[acl] v311_denied_publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum DeniedPublish {
    /// Acknowledge it as if delivered and drop it (what mosquitto does).
    #[default]
    Drop,
    /// Close the session.
    Disconnect,
}

impl TryFrom<String> for DeniedPublish {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "drop" => Ok(Self::Drop),
            "disconnect" => Ok(Self::Disconnect),
            _ => Err(format!(
                "invalid `v311_denied_publish` = {value:?}: use \"drop\" (acknowledge and drop, as mosquitto does) or \"disconnect\" (close the session)"
            )),
        }
    }
}
