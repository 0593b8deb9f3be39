//! Config-file keys set from the environment: `KITE_<SECTION>__<KEY>=value`.
//!
//! `KITE_LIMITS__MAX_CONNECTIONS=500` is `[limits] max_connections = 500`. The value is read
//! as a TOML value (`true`, `500`, `["https://a.example"]`, `"text"`); anything that is not
//! TOML, or that the key does not take as such, is taken as a string, so paths and names need
//! no quotes. Order: command-line flags over the environment over the file. The arrays of
//! tables (`[[upstream]]`, `[[user]]`, `[[role]]`, `[[bridge]]`) are only in the file (`--upstream` adds
//! upstreams). The double underscore keeps these apart from the flags' own variables
//! (`KITE_HTTP` is `--http`).

use serde::de::DeserializeOwned;

/// Why a variable cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// One variable is not usable as it is.
    #[error("environment variable {var}: {message}")]
    Var {
        /// The variable's name.
        var: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The variables left a section incomplete or inconsistent.
    #[error("[{section}] as set by the environment ({vars}) and the config file: {message}")]
    Section {
        /// The section.
        section: String,
        /// The variables that set keys in it.
        vars: String,
        /// What is wrong.
        message: String,
    },
}

/// The environment variables that set config-file keys (`KITE_…__…`), in name order.
pub fn config_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut found: Vec<_> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("KITE_") && name.contains("__"))
        .collect();
    found.sort();
    found
}

/// This process's `KITE_…__…` variables (not `std::env::vars()`, which panics on a variable
/// that is not UTF-8; such a value is taken lossily and then reported if it is unusable).
pub fn from_process() -> Vec<(String, String)> {
    config_vars(std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    }))
}

/// Sections that are arrays of tables: file only.
const FILE_ONLY: [&str; 4] = ["upstream", "user", "role", "bridge"];

/// What the environment set: the `(section, key, variable)` of each key it set, and each
/// variable it could not use.
#[derive(Debug, Default)]
pub struct Applied {
    /// The keys set, so that a problem with one names its variable rather than a file line.
    pub set: Vec<(String, String, String)>,
    /// The variables that could not be used, each with why.
    pub errors: Vec<EnvError>,
}

impl Applied {
    /// The variable that set `[section] key`, if one did.
    pub fn var(&self, section: &str, key: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// The variables that set keys of `[section]`, joined with ", " (empty: none).
    pub fn vars_of(&self, section: &str) -> String {
        let vars: Vec<&str> = self
            .set
            .iter()
            .filter(|(s, _, _)| s == section)
            .map(|(_, _, v)| v.as_str())
            .collect();
        vars.join(", ")
    }
}

/// Sets each variable's key in `table` (the config file's, or empty), checking each one on its
/// own as a key of `F` (the config file's shape). The sections as a whole are checked with the
/// rest of the config ([`super::check`]), which names these variables for what they set.
pub fn apply<F: DeserializeOwned>(table: &mut toml::Table, vars: &[(String, String)]) -> Applied {
    let mut applied = Applied::default();
    for (var, raw) in vars {
        let invalid = |message: String| EnvError::Var {
            var: var.clone(),
            message,
        };
        let rest = var.strip_prefix("KITE_").unwrap_or(var);
        let Some((section, key)) = rest.split_once("__") else {
            applied
                .errors
                .push(invalid("expected KITE_<SECTION>__<KEY>".into()));
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() || key.contains("__") {
            applied.errors.push(invalid(
                "expected KITE_<SECTION>__<KEY>, e.g. KITE_LIMITS__MAX_CONNECTIONS".into(),
            ));
            continue;
        }
        if FILE_ONLY.contains(&section.as_str()) {
            applied.errors.push(invalid(format!(
                "[[{section}]] entries can only be written in the config file{}",
                if section == "upstream" {
                    " (or added with --upstream)"
                } else {
                    ""
                }
            )));
            continue;
        }
        let value = match accepted::<F>(&section, &key, raw) {
            Ok(v) => v,
            Err(message) => {
                applied.errors.push(invalid(message));
                continue;
            }
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = entry else {
            applied
                .errors
                .push(invalid(format!("[{section}] is not a table in the file")));
            continue;
        };
        inner.insert(key.clone(), value);
        applied.set.push((section, key, var.clone()));
    }
    applied
}

/// The value `raw` sets `[section] key` to: as TOML if the key takes it so, else as a string;
/// or why neither works.
fn accepted<F: DeserializeOwned>(
    section: &str,
    key: &str,
    raw: &str,
) -> Result<toml::Value, String> {
    let as_string = toml::Value::String(raw.to_owned());
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let mut tried = Vec::new();
    for value in parsed.into_iter().chain([as_string]) {
        match check_key::<F>(section, key, &value) {
            Ok(()) => return Ok(value),
            Err(e) => tried.push(e),
        }
    }
    // The first reason: the TOML reading's, when there is one.
    Err(tried
        .into_iter()
        .next()
        .unwrap_or_default()
        .replace("\n", " "))
}

/// Whether `[section] key = value` deserializes. The section's other required keys may be
/// missing here (they may come from the file or another variable): serde reports a missing
/// field only after every present one was read without error.
fn check_key<F: DeserializeOwned>(
    section: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(), String> {
    let mut inner = toml::Table::new();
    inner.insert(key.to_owned(), value.clone());
    let mut outer = toml::Table::new();
    outer.insert(section.to_owned(), toml::Value::Table(inner));
    match F::deserialize(toml::Value::Table(outer)) {
        Ok(_) => Ok(()),
        Err(e) if e.message().starts_with("missing field") => Ok(()),
        Err(e) => Err(format!("[{section}] {key}: {}", e.message().trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        config_vars(list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    fn applied(file: &str, list: &[(&str, &str)]) -> Result<toml::Table, String> {
        let mut table: toml::Table = toml::from_str(file).unwrap();
        let applied = apply::<crate::config::FileConfig>(&mut table, &vars(list));
        match applied.errors.first() {
            Some(e) => Err(e.to_string()),
            None => Ok(table),
        }
    }

    #[test]
    fn only_double_underscore_kite_vars_are_config_keys() {
        let found = vars(&[
            ("KITE_HTTP", "127.0.0.1:1"),
            ("KITE_MOSQUITTO", "/usr/sbin/mosquitto"),
            ("PATH", "/bin"),
            ("KITE_LIMITS__MAX_CONNECTIONS", "5"),
        ]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "KITE_LIMITS__MAX_CONNECTIONS");
    }

    #[test]
    fn values_are_toml_or_strings() {
        let t = applied(
            "[limits]\nmax_connections = 10\n",
            &[
                ("KITE_LIMITS__MAX_CONNECTIONS", "500"),
                ("KITE_BROKER__ALLOW_ANONYMOUS", "true"),
                ("KITE_BROKER__DATA_DIR", "/var/lib/kite data"),
                ("KITE_HTTP__ALLOWED_ORIGINS", r#"["https://a.example"]"#),
                // A string key given something TOML reads as a number stays a string.
                ("KITE_JWT__ISSUER", "1234"),
                ("KITE_JWT__ALGORITHM", "HS256"),
                ("KITE_JWT__KEY_FILE", "secret.key"),
            ],
        )
        .unwrap();
        assert_eq!(t["limits"]["max_connections"].as_integer(), Some(500));
        assert_eq!(t["broker"]["allow_anonymous"].as_bool(), Some(true));
        assert_eq!(t["broker"]["data_dir"].as_str(), Some("/var/lib/kite data"));
        assert_eq!(
            t["http"]["allowed_origins"][0].as_str(),
            Some("https://a.example")
        );
        assert_eq!(t["jwt"]["issuer"].as_str(), Some("1234"));
    }

    #[test]
    fn bad_variables_say_which_and_why() {
        let e = applied("", &[("KITE_LIMITS__MAX_CONNECTIONS", "lots")]).unwrap_err();
        assert!(e.contains("KITE_LIMITS__MAX_CONNECTIONS"), "{e}");
        assert!(e.contains("[limits] max_connections"), "{e}");
        let e = applied("", &[("KITE_LIMITS__MAX_CONECTIONS", "5")]).unwrap_err();
        assert!(e.contains("unknown field `max_conections`"), "{e}");
        let e = applied("", &[("KITE_NOPE__X", "5")]).unwrap_err();
        assert!(e.contains("unknown field `nope`"), "{e}");
        let e = applied("", &[("KITE_USER__NAME", "x")]).unwrap_err();
        assert!(e.contains("[[user]]") && e.contains("config file"), "{e}");
        let e = applied("", &[("KITE_LIMITS__", "5")]).unwrap_err();
        assert!(e.contains("KITE_<SECTION>__<KEY>"), "{e}");
        // Every bad variable, not only the first.
        let mut table = toml::Table::new();
        let all = apply::<crate::config::FileConfig>(
            &mut table,
            &vars(&[
                ("KITE_LIMITS__MAX_CONNECTIONS", "lots"),
                ("KITE_BROKER__MAX_INFLIGHT", "many"),
                ("KITE_HTTP__LISTEN", "127.0.0.1:1"),
            ]),
        );
        assert_eq!(all.errors.len(), 2, "{:?}", all.errors);
        assert_eq!(all.var("http", "listen"), Some("KITE_HTTP__LISTEN"));
    }
}
