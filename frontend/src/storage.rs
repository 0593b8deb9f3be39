//! The browser's `localStorage`, as the app uses it: profiles, each profile's outbox and
//! sent history. Failures (storage disabled, quota exceeded) come back as text to show.

/// Where the profiles are kept.
pub const PROFILES: &str = "kite.profiles";

/// The profiles that were connected, space-separated: connected again after a reload.
pub const CONNECTED: &str = "kite.connected";

/// Where the store caps are kept.
pub const CAPS: &str = "kite.caps";

/// Where a profile's outbox is kept (base64 of `Session::export_outbox`).
pub fn outbox_key(profile: &str) -> String {
    format!("kite.outbox.{profile}")
}

/// Where a profile's sent history is kept.
pub fn sent_key(profile: &str) -> String {
    format!("kite.sent.{profile}")
}

fn storage() -> Result<web_sys::Storage, String> {
    web_sys::window()
        .ok_or("no browser window")?
        .local_storage()
        .map_err(crate::api::describe)?
        .ok_or_else(|| "this browser keeps no local storage (private mode?)".to_owned())
}

/// The value under `key`, if any.
pub fn get(key: &str) -> Result<Option<String>, String> {
    storage()?.get_item(key).map_err(crate::api::describe)
}

/// Keeps `value` under `key`.
pub fn set(key: &str, value: &str) -> Result<(), String> {
    storage()?
        .set_item(key, value)
        .map_err(|e| format!("could not save {key}: {}", crate::api::describe(e)))
}

/// Forgets `key`.
pub fn remove(key: &str) -> Result<(), String> {
    storage()?.remove_item(key).map_err(crate::api::describe)
}
