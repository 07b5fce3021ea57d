//! Client tokens: JWT verification with the algorithm pinned by config, the
//! claims Herald reads, and minting of development tokens.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, pattern_matches};
use crate::protocol::ErrorCode;

/// The signature algorithms Herald accepts; one is chosen by config and
/// every token must use exactly that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

impl JwtAlgorithm {
    fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        }
    }
}

/// Why a token was refused. Each cause is its own variant so logs and
/// clients can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("token is signed with {found}, but this server accepts only {expected}")]
    AlgorithmNotAllowed {
        found: String,
        expected: &'static str,
    },
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("token claim is invalid: {0}")]
    BadClaim(String),
}

impl TokenError {
    /// The protocol error code a client gets for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// A key that cannot be used for the configured algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The claims Herald reads from a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Channel patterns the user may subscribe to (`*` as a suffix wildcard).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channel patterns the user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// Claims as they arrive, so a missing `sub` or `exp` is reported as such
/// rather than as a parse error.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<i64>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl RawClaims {
    fn into_claims(self) -> Result<Claims, TokenError> {
        let sub = self
            .sub
            .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        if sub.is_empty() {
            return Err(TokenError::BadClaim("`sub` is empty".into()));
        }
        let exp = self
            .exp
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        Ok(Claims {
            sub,
            exp,
            channels: self.channels,
            publish: self.publish,
        })
    }
}

impl Claims {
    /// Subscribing is allowed when the channel's `#` boundary lists the user,
    /// or, for channels without a boundary, when a `channels` pattern matches.
    /// A boundary is a hard limit: no pattern opens a channel to users it
    /// does not list.
    pub fn may_subscribe(&self, channel: &Channel) -> bool {
        allowed(&self.sub, &self.channels, channel)
    }

    /// Publishing follows the same rule with the `publish` patterns.
    pub fn may_publish(&self, channel: &Channel) -> bool {
        allowed(&self.sub, &self.publish, channel)
    }
}

/// The permission rule shared by subscribe and publish (and by routing,
/// which checks publishes forwarded by edges).
pub fn allowed(user: &str, patterns: &[String], channel: &Channel) -> bool {
    if channel.has_user_boundary() {
        channel.boundary_admits(user)
    } else {
        patterns.iter().any(|p| pattern_matches(p, channel))
    }
}

/// Verifies client tokens against one key and one algorithm.
#[derive(Clone)]
pub struct TokenVerifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// `key` is the shared secret for HS256, or a PEM public key for RS256
    /// and ES256. `leeway` is the clock skew tolerated on `exp` and `nbf`.
    pub fn new(algorithm: JwtAlgorithm, key: &[u8], leeway: Duration) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::HS256 => {
                if key.len() < 16 {
                    return Err(KeyError(
                        "the HS256 secret must be at least 16 bytes long".into(),
                    ));
                }
                DecodingKey::from_secret(key)
            }
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(key),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(key),
        }
        .map_err(|e| KeyError(format!("not a usable {} key: {e}", algorithm.name())))?;
        let mut validation = Validation::new(algorithm.jsonwebtoken());
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Ok(TokenVerifier {
            algorithm,
            key,
            validation,
        })
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header is read by us first so that a token naming another
        // algorithm (or `none`, which the library cannot even parse) gets
        // its own clear error; the library then checks it again.
        let found = header_algorithm(token)?;
        if found != self.algorithm.name() {
            return Err(TokenError::AlgorithmNotAllowed {
                found,
                expected: self.algorithm.name(),
            });
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                    ErrorKind::InvalidClaimFormat(c) => TokenError::BadClaim(c.clone()),
                    ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed {
                        found: "another algorithm".into(),
                        expected: self.algorithm.name(),
                    },
                    ErrorKind::Json(e) => TokenError::BadClaim(e.to_string()),
                    _ => TokenError::Malformed(e.to_string()),
                }
            })?;
        data.claims.into_claims()
    }
}

fn header_algorithm(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let header = token
        .split('.')
        .next()
        .filter(|_| token.split('.').count() == 3)
        .ok_or_else(|| TokenError::Malformed("expected three dot-separated parts".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
    let header: AlgOnly = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("header is not a JWT header: {e}")))?;
    Ok(header.alg)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Signs tokens: `herald token` for development, and the tests.
pub struct TokenSigner {
    algorithm: JwtAlgorithm,
    key: EncodingKey,
}

impl TokenSigner {
    /// `key` is the shared secret for HS256, or a PEM (PKCS#8) private key.
    pub fn new(algorithm: JwtAlgorithm, key: &[u8]) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::HS256 => EncodingKey::from_secret(key),
            JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(key),
            JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(key),
        }
        .map_err(|e| {
            KeyError(format!(
                "not a usable {} signing key: {e}",
                algorithm.name()
            ))
        })?;
        Ok(TokenSigner { algorithm, key })
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        jsonwebtoken::encode(
            &Header::new(self.algorithm.jsonwebtoken()),
            claims,
            &self.key,
        )
        .map_err(|e| KeyError(e.to_string()))
    }

    /// A token for `user` valid for `ttl`.
    pub fn mint(
        &self,
        user: &str,
        channels: &[String],
        publish: &[String],
        ttl: Duration,
    ) -> Result<String, KeyError> {
        self.sign(&Claims {
            sub: user.to_owned(),
            exp: unix_now() + ttl.as_secs() as i64,
            channels: channels.to_vec(),
            publish: publish.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/keys/ec_public.pem");

    fn hs() -> TokenVerifier {
        TokenVerifier::new(JwtAlgorithm::HS256, SECRET, Duration::from_secs(5)).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn claims(exp_in: i64) -> serde_json::Value {
        serde_json::json!({"sub": "alice", "exp": unix_now() + exp_in, "channels": ["chat:*"], "publish": ["chat:room:1"]})
    }

    #[test]
    fn each_algorithm_verifies_its_own_tokens() {
        for (alg, private, public) in [
            (JwtAlgorithm::HS256, SECRET, SECRET),
            (JwtAlgorithm::RS256, RSA_PRIVATE, RSA_PUBLIC),
            (JwtAlgorithm::ES256, EC_PRIVATE, EC_PUBLIC),
        ] {
            let token = TokenSigner::new(alg, private)
                .unwrap()
                .sign(&claims(60))
                .unwrap();
            let verifier = TokenVerifier::new(alg, public, Duration::ZERO).unwrap();
            let c = verifier
                .verify(&token)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(c.sub, "alice");
            assert_eq!(c.channels, vec!["chat:*"]);
            assert_eq!(c.publish, vec!["chat:room:1"]);
        }
    }

    #[test]
    fn algorithm_is_pinned_by_config() {
        // An RS256 token shown to an HS256 server, and the reverse.
        let rs = TokenSigner::new(JwtAlgorithm::RS256, RSA_PRIVATE)
            .unwrap()
            .sign(&claims(60))
            .unwrap();
        assert_eq!(
            hs().verify(&rs),
            Err(TokenError::AlgorithmNotAllowed {
                found: "RS256".into(),
                expected: "HS256"
            })
        );
        // The classic confusion attack: an HS256 token "signed" with the RSA
        // public key as the secret must not pass an RS256 verifier.
        let confused = TokenSigner::new(JwtAlgorithm::HS256, RSA_PUBLIC)
            .unwrap()
            .sign(&claims(60))
            .unwrap();
        let rs_verifier =
            TokenVerifier::new(JwtAlgorithm::RS256, RSA_PUBLIC, Duration::ZERO).unwrap();
        assert!(matches!(
            rs_verifier.verify(&confused),
            Err(TokenError::AlgorithmNotAllowed { .. })
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(claims(60).to_string().as_bytes());
        for token in [format!("{header}.{body}."), format!("{header}.{body}.AAAA")] {
            assert_eq!(
                hs().verify(&token),
                Err(TokenError::AlgorithmNotAllowed {
                    found: "none".into(),
                    expected: "HS256"
                })
            );
        }
    }

    #[test]
    fn forged_signature_is_rejected() {
        let token = TokenSigner::new(JwtAlgorithm::HS256, b"another-secret-of-enough-length")
            .unwrap()
            .sign(&claims(60))
            .unwrap();
        assert_eq!(hs().verify(&token), Err(TokenError::BadSignature));

        // Tampering with the claims of a genuine token breaks the signature.
        let genuine = TokenSigner::new(JwtAlgorithm::HS256, SECRET)
            .unwrap()
            .sign(&claims(60))
            .unwrap();
        let parts: Vec<&str> = genuine.split('.').collect();
        let mut evil = claims(60);
        evil["sub"] = "mallory".into();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(evil.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(hs().verify(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn expiry_and_required_claims() {
        let signer = TokenSigner::new(JwtAlgorithm::HS256, SECRET).unwrap();
        let expired = signer.sign(&claims(-60)).unwrap();
        assert_eq!(hs().verify(&expired), Err(TokenError::Expired));
        assert_eq!(TokenError::Expired.code(), ErrorCode::TokenExpired);
        // within the leeway it still passes
        assert!(hs().verify(&signer.sign(&claims(-2)).unwrap()).is_ok());

        let no_exp = signer.sign(&serde_json::json!({"sub": "a"})).unwrap();
        assert_eq!(
            hs().verify(&no_exp),
            Err(TokenError::MissingClaim("exp".into()))
        );
        let no_sub = signer
            .sign(&serde_json::json!({"exp": unix_now() + 60}))
            .unwrap();
        assert_eq!(
            hs().verify(&no_sub),
            Err(TokenError::MissingClaim("sub".into()))
        );
        let bad_channels = signer
            .sign(&serde_json::json!({"sub": "a", "exp": unix_now() + 60, "channels": "chat:*"}))
            .unwrap();
        assert!(matches!(
            hs().verify(&bad_channels),
            Err(TokenError::BadClaim(_))
        ));
        let future = signer
            .sign(
                &serde_json::json!({"sub": "a", "exp": unix_now() + 600, "nbf": unix_now() + 300}),
            )
            .unwrap();
        assert_eq!(hs().verify(&future), Err(TokenError::NotYetValid));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "abc", "a.b", "a.b.c", "...", "x.y.z.w"] {
            assert!(
                matches!(hs().verify(bad), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn weak_or_wrong_keys_fail_at_start_up() {
        assert!(TokenVerifier::new(JwtAlgorithm::HS256, b"short", Duration::ZERO).is_err());
        assert!(TokenVerifier::new(JwtAlgorithm::RS256, b"not a pem", Duration::ZERO).is_err());
        assert!(TokenVerifier::new(JwtAlgorithm::ES256, RSA_PUBLIC, Duration::ZERO).is_err());
    }

    #[test]
    fn permissions() {
        let c = Claims {
            sub: "alice".into(),
            exp: 0,
            channels: vec!["chat:*".into(), "news".into()],
            publish: vec!["chat:room:1".into()],
        };
        let ch = |s| Channel::new(s).unwrap();
        assert!(c.may_subscribe(&ch("chat:room:1")));
        assert!(c.may_subscribe(&ch("news")));
        assert!(!c.may_subscribe(&ch("news:x")));
        assert!(c.may_publish(&ch("chat:room:1")));
        assert!(!c.may_publish(&ch("chat:room:2")));
        // the # boundary admits listed users without a pattern …
        assert!(c.may_subscribe(&ch("dm:#alice,bob")));
        assert!(c.may_subscribe(&ch("#alice")));
        // … and no pattern admits others
        assert!(!c.may_subscribe(&ch("chat:#bob,carol")));
        assert!(!c.may_subscribe(&ch("#bob")));
    }
}
