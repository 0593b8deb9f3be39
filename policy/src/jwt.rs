//! JSON Web Tokens as logins: a browser (or a device, or a script calling the publish API)
//! presents a token its own identity provider issued, instead of a password from Kite's
//! config.
//!
//! ```toml
//! [jwt]
//! algorithm = "RS256"                  # or "HS256"
//! key_file = "/etc/kite/issuer.pem"    # RS256: the issuer's public key (PEM); HS256: the secret
//! issuer = "https://auth.example.com"  # optional: `iss` must be this
//! audience = "kite"                    # optional: `aud` must name this
//! role_claim = "role"                  # the claim naming the token holder's [[role]]
//! leeway_secs = 30                     # clock skew allowed on `exp` and `nbf`
//! ```
//!
//! The token goes in CONNECT's password (MQTT 3.1.1 also needs a user name: it must be the
//! token's `sub`), or in `Authorization: Bearer` for `POST /api/v1/publish`. The signature
//! must verify with the configured algorithm — the token's own `alg` header is never trusted
//! (no `none`, no HS256-with-the-public-key confusion) — `exp` and `sub` must be present,
//! `exp`/`nbf` hold (with the leeway), `iss`/`aud` match when configured. `sub` is the user
//! name (`%u` in topic rules); the role claim, when present, must name a `[[role]]`.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// `[jwt]` as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// `HS256` or `RS256`.
    pub algorithm: String,
    /// The secret (HS256) or the issuer's public key in PEM (RS256).
    pub key_file: PathBuf,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// The claim naming the role (default `role`).
    pub role_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    pub leeway_secs: Option<u64>,
}

impl JwtSettings {
    /// The algorithm named, if it is one Kite verifies.
    pub fn algorithm(&self) -> Result<Algorithm, JwtConfigError> {
        match self.algorithm.as_str() {
            "HS256" => Ok(Algorithm::HS256),
            "RS256" => Ok(Algorithm::RS256),
            other => Err(JwtConfigError::Algorithm(other.to_owned())),
        }
    }
}

/// Why `[jwt]` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    /// Not a supported algorithm.
    #[error(
        "invalid [jwt] algorithm = {0:?}: use \"HS256\" (shared secret) or \"RS256\" (RSA public key)"
    )]
    Algorithm(String),
    /// The key file cannot be read.
    #[error("cannot read [jwt] key_file {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The key is not usable.
    #[error("[jwt] key_file {path}: {detail}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The leeway is out of range.
    #[error("invalid [jwt] leeway_secs = {0}: use 0 to 3600 seconds")]
    Leeway(u64),
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET: usize = 32;

/// A checked `[jwt]`: the key loaded, the validation rules set.
#[derive(Clone)]
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.validation.algorithms)
            .field("role_claim", &self.role_claim)
            .finish_non_exhaustive()
    }
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the user name.
    pub subject: String,
    /// The role claim, if present.
    pub role: Option<String>,
}

impl Jwt {
    /// Checks the settings with the key file's content `bytes` (`path`: where it was read,
    /// for the errors).
    pub fn new(
        settings: &JwtSettings,
        bytes: &[u8],
        path: PathBuf,
    ) -> Result<Self, JwtConfigError> {
        let algorithm = settings.algorithm()?;
        let key = match algorithm {
            Algorithm::HS256 => {
                // A secret written by `echo` ends with a newline that is not part of it.
                let secret = bytes
                    .strip_suffix(b"\r\n")
                    .or_else(|| bytes.strip_suffix(b"\n"))
                    .unwrap_or(bytes);
                if secret.len() < MIN_SECRET {
                    return Err(JwtConfigError::Key {
                        path,
                        detail: format!(
                            "an HS256 secret of {} bytes is too short: use at least {MIN_SECRET} random bytes (e.g. `openssl rand -hex 32`)",
                            secret.len()
                        ),
                    });
                }
                DecodingKey::from_secret(secret)
            }
            _ => DecodingKey::from_rsa_pem(bytes).map_err(|e| JwtConfigError::Key {
                path,
                detail: format!(
                    "not an RSA public key in PEM (\"-----BEGIN PUBLIC KEY-----\"): {e}"
                ),
            })?,
        };
        let leeway = settings.leeway_secs.unwrap_or(30);
        if leeway > 3600 {
            return Err(JwtConfigError::Leeway(leeway));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            role_claim: settings
                .role_claim
                .clone()
                .unwrap_or_else(|| "role".to_owned()),
        })
    }

    /// Whether `password` has the shape of a JWT (three base64url parts), so that it is worth
    /// verifying as one.
    pub fn looks_like_token(password: &[u8]) -> bool {
        password.split(|&b| b == b'.').count() == 3
            && password
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// Verifies a token; `Err` says why it is refused (for the log and the v5 reason string).
    pub fn verify(&self, token: &[u8]) -> Result<Claims, String> {
        let token = std::str::from_utf8(token).map_err(|_| "the token is not text".to_owned())?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| describe(&e))?;
        let subject = match data.claims.get("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("the token's `sub` is not a non-empty string".to_owned()),
        };
        let role = match data.claims.get(&self.role_claim) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(r)) => Some(r.clone()),
            Some(_) => {
                return Err(format!(
                    "the token's `{}` claim is not a string",
                    self.role_claim
                ));
            }
        };
        Ok(Claims { subject, role })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired (`exp`)".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
        K::InvalidSignature => "the token's signature does not verify".to_owned(),
        K::InvalidAlgorithm => "the token is signed with another algorithm".to_owned(),
        K::InvalidIssuer => "the token's issuer (`iss`) is not the configured one".to_owned(),
        K::InvalidAudience => "the token's audience (`aud`) does not name this gateway".to_owned(),
        K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
        _ => format!("the token is invalid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(issuer: Option<&str>) -> Jwt {
        Jwt::new(
            &JwtSettings {
                algorithm: "HS256".into(),
                key_file: "secret".into(),
                issuer: issuer.map(Into::into),
                audience: None,
                role_claim: None,
                leeway_secs: Some(0),
            },
            &[SECRET, b"\n"].concat(),
            "secret".into(),
        )
        .unwrap()
    }

    fn token(claims: serde_json::Value, alg: Algorithm, key: &EncodingKey) -> Vec<u8> {
        encode(&Header::new(alg), &claims, key)
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn checks_signature_expiry_issuer_and_algorithm() {
        let jwt = hs256(Some("idp"));
        let key = EncodingKey::from_secret(SECRET);
        let good = serde_json::json!({"sub": "alice", "exp": now() + 60, "iss": "idp", "role": "operator"});
        let t = token(good.clone(), Algorithm::HS256, &key);
        assert!(Jwt::looks_like_token(&t));
        assert_eq!(
            jwt.verify(&t),
            Ok(Claims {
                subject: "alice".into(),
                role: Some("operator".into())
            })
        );
        let expired = serde_json::json!({"sub": "alice", "exp": now() - 10, "iss": "idp"});
        assert!(
            jwt.verify(&token(expired, Algorithm::HS256, &key))
                .unwrap_err()
                .contains("expired")
        );
        let other = token(
            good.clone(),
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!"),
        );
        assert!(jwt.verify(&other).unwrap_err().contains("signature"));
        let wrong_alg = token(good.clone(), Algorithm::HS384, &key);
        assert!(jwt.verify(&wrong_alg).unwrap_err().contains("algorithm"));
        let no_exp = serde_json::json!({"sub": "alice", "iss": "idp"});
        assert!(
            jwt.verify(&token(no_exp, Algorithm::HS256, &key))
                .unwrap_err()
                .contains("`exp`")
        );
        let bad_iss = serde_json::json!({"sub": "alice", "exp": now() + 60, "iss": "evil"});
        assert!(
            jwt.verify(&token(bad_iss, Algorithm::HS256, &key))
                .unwrap_err()
                .contains("issuer")
        );
        // An unsigned token ("alg": "none") never passes.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            base64_url(good.to_string().as_bytes())
        );
        assert!(jwt.verify(none.as_bytes()).is_err());
        assert!(!Jwt::looks_like_token(b"a plain password"));
    }

    #[test]
    fn config_errors_name_the_file_and_the_fix() {
        let settings = |alg: &str, file: &str| JwtSettings {
            algorithm: alg.into(),
            key_file: file.into(),
            issuer: None,
            audience: None,
            role_claim: None,
            leeway_secs: None,
        };
        let e = Jwt::new(&settings("HS256", "short"), b"tiny\n", "short".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("too short") && e.contains("short"), "{e}");
        let e = Jwt::new(&settings("RS256", "short"), b"tiny\n", "short".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("PEM"), "{e}");
        let e = Jwt::new(&settings("ES256", "short"), b"tiny\n", "short".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("HS256") && e.contains("RS256"), "{e}");
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
