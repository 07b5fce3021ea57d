//! Client tokens: the claims Herald reads and the permission rule every
//! service applies; with the `jwt` feature (the edge, the binary) also JWT
//! verification with the algorithm pinned by config and minting of
//! development tokens.

#[cfg(feature = "jwt")]
use std::collections::HashSet;
#[cfg(feature = "jwt")]
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "jwt")]
use base64::Engine;
#[cfg(feature = "jwt")]
use jsonwebtoken::errors::ErrorKind;
#[cfg(feature = "jwt")]
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use herald_protocol::channel::{Channel, pattern_matches};
use herald_protocol::{ErrorCode, UserId};

/// The signature algorithms Herald accepts; one is chosen by config and
/// every token must use exactly that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    #[default]
    HS256,
    /// RSA signatures (PKCS#1 v1.5) with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl JwtAlgorithm {
    #[cfg(feature = "jwt")]
    fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    /// The name tokens carry in their `alg` header.
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
    /// Not three base64url parts with a JSON header, or otherwise unreadable.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than the configured one.
    #[error("token is signed with {found}, but this server accepts only {expected}")]
    AlgorithmNotAllowed {
        /// The algorithm the token names.
        found: String,
        /// The one the server accepts.
        expected: &'static str,
    },
    /// The signature does not match the key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    /// A claim Herald needs (`sub`, `exp`) is absent: its name.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    /// A claim has the wrong type or an invalid value (a `sub` that is no
    /// user id): what is wrong.
    #[error("token claim is invalid: {0}")]
    BadClaim(String),
    /// The token's `kid` is in no key of the JWKS file.
    #[error("token is signed with key `{0}`, which this server does not know")]
    UnknownKey(String),
    /// The token has no `kid`, and the JWKS file holds more than one usable key.
    #[error("token names no key (`kid`), and this server has several")]
    MissingKeyId,
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
    pub sub: UserId,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Channel patterns the user may subscribe to (`*` as a suffix wildcard).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channel patterns the user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
}

#[cfg(feature = "jwt")]
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

#[cfg(feature = "jwt")]
impl RawClaims {
    fn into_claims(self, leeway: u64) -> Result<Claims, TokenError> {
        let sub = self
            .sub
            .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        if sub.is_empty() {
            return Err(TokenError::BadClaim("`sub` is empty".into()));
        }
        let sub = UserId::parse(&sub).map_err(|e| TokenError::BadClaim(format!("`sub`: {e}")))?;
        let exp = self
            .exp
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if exp.saturating_add(i64::try_from(leeway).unwrap_or(i64::MAX)) < unix_now() {
            return Err(TokenError::Expired);
        }
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

#[cfg(feature = "jwt")]
/// Verifies client tokens against one algorithm and one key, or the keys
/// of a JWKS file.
#[derive(Clone)]
pub struct TokenVerifier {
    algorithm: JwtAlgorithm,
    keys: VerifierKeys,
    validation: Validation,
}

#[cfg(feature = "jwt")]
#[derive(Clone)]
enum VerifierKeys {
    One(DecodingKey),
    Jwks(std::sync::Arc<crate::jwks::JwksKeys>),
}

#[cfg(feature = "jwt")]
impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Shortest HS256 secret: as long as the hash (RFC 7518, 3.2), so the key
/// is not the weak part.
pub const MIN_SECRET_LEN: usize = 32;

#[cfg(feature = "jwt")]
fn check_secret(key: &[u8]) -> Result<(), KeyError> {
    if key.len() < MIN_SECRET_LEN {
        return Err(KeyError(format!(
            "the HS256 secret must be at least {MIN_SECRET_LEN} bytes long (it is {})",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(feature = "jwt")]
impl TokenVerifier {
    /// `key` is the shared secret for HS256, or a PEM public key for RS256
    /// and ES256. `leeway` is the clock skew tolerated on `exp` and `nbf`.
    pub fn new(algorithm: JwtAlgorithm, key: &[u8], leeway: Duration) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::HS256 => {
                check_secret(key)?;
                DecodingKey::from_secret(key)
            }
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(key),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(key),
        }
        .map_err(|e| KeyError(format!("not a usable {} key: {e}", algorithm.name())))?;
        Ok(TokenVerifier {
            algorithm,
            keys: VerifierKeys::One(key),
            validation: validation(algorithm, leeway),
        })
    }

    /// Keys from a JWKS file (RS256 or ES256), chosen by the token's `kid`
    /// and read again when the file changes.
    pub fn from_jwks_file(
        algorithm: JwtAlgorithm,
        path: &std::path::Path,
        leeway: Duration,
    ) -> Result<Self, KeyError> {
        if algorithm == JwtAlgorithm::HS256 {
            return Err(KeyError(
                "a JWKS file holds public keys: use RS256 or ES256".into(),
            ));
        }
        let keys = crate::jwks::JwksKeys::open(path, algorithm)?;
        Ok(TokenVerifier {
            algorithm,
            keys: VerifierKeys::Jwks(std::sync::Arc::new(keys)),
            validation: validation(algorithm, leeway),
        })
    }

    /// The one algorithm tokens must be signed with.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Checks a token's algorithm, signature, `nbf`, `exp` and `sub`, and
    /// returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header is read by us first so that a token naming another
        // algorithm (or `none`, which the library cannot even parse) gets
        // its own clear error; the library then checks it again.
        let header = read_header(token)?;
        if header.alg != self.algorithm.name() {
            return Err(TokenError::AlgorithmNotAllowed {
                found: header.alg,
                expected: self.algorithm.name(),
            });
        }
        let from_jwks;
        let key = match &self.keys {
            VerifierKeys::One(key) => key,
            VerifierKeys::Jwks(keys) => {
                from_jwks = keys.key(header.kid.as_deref())?;
                &from_jwks
            }
        };
        let data =
            jsonwebtoken::decode::<RawClaims>(token, key, &self.validation).map_err(|e| match e
                .kind()
            {
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
            })?;
        data.claims.into_claims(self.validation.leeway)
    }
}

#[cfg(feature = "jwt")]
fn validation(algorithm: JwtAlgorithm, leeway: Duration) -> Validation {
    let mut validation = Validation::new(algorithm.jsonwebtoken());
    // `exp` and `sub` are checked by `into_claims`, so a negative or
    // missing `exp` gets its own answer (expired; missing).
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.leeway = leeway.as_secs();
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation
}

#[cfg(feature = "jwt")]
/// The parts of a JWT header Herald reads itself.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[cfg(feature = "jwt")]
fn read_header(token: &str) -> Result<TokenHeader, TokenError> {
    let header = token
        .split('.')
        .next()
        .filter(|_| token.split('.').count() == 3)
        .ok_or_else(|| TokenError::Malformed("expected three dot-separated parts".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("header is not a JWT header: {e}")))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(feature = "jwt")]
/// Signs tokens: `herald token` for development, and the tests.
pub struct TokenSigner {
    algorithm: JwtAlgorithm,
    key: EncodingKey,
    kid: Option<String>,
}

#[cfg(feature = "jwt")]
impl TokenSigner {
    /// `key` is the shared secret for HS256, or a PEM (PKCS#8) private key.
    pub fn new(algorithm: JwtAlgorithm, key: &[u8]) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::HS256 => {
                check_secret(key)?;
                EncodingKey::from_secret(key)
            }
            JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(key),
            JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(key),
        }
        .map_err(|e| {
            KeyError(format!(
                "not a usable {} signing key: {e}",
                algorithm.name()
            ))
        })?;
        Ok(TokenSigner {
            algorithm,
            key,
            kid: None,
        })
    }

    /// Names the key in every token's header (`kid`), as a JWKS needs.
    pub fn with_key_id(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// The public half of the signing key as a JWK (RS256, ES256), named by
    /// the key id: what goes into a JWKS file.
    pub fn public_jwk(&self) -> Result<jsonwebtoken::jwk::Jwk, KeyError> {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.algorithm.jsonwebtoken())
                .map_err(|e| KeyError(e.to_string()))?;
        jwk.common.key_id = self.kid.clone();
        Ok(jwk)
    }

    /// Signs any claims as a JWT (with the key id, when set).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm.jsonwebtoken());
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| KeyError(e.to_string()))
    }

    /// A token for `user` valid for `ttl`.
    pub fn mint(
        &self,
        user: &UserId,
        channels: &[String],
        publish: &[String],
        ttl: Duration,
    ) -> Result<String, KeyError> {
        self.sign(&Claims {
            sub: user.clone(),
            exp: unix_now() + ttl.as_secs() as i64,
            channels: channels.to_vec(),
            publish: publish.to_vec(),
        })
    }
}

#[cfg(all(test, feature = "jwt"))]
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
        let token = TokenSigner::new(JwtAlgorithm::HS256, b"another-secret-of-enough-length-0123")
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
        // a negative `exp` is long past, not malformed
        let negative = signer
            .sign(&serde_json::json!({"sub": "a", "exp": -1}))
            .unwrap();
        assert_eq!(hs().verify(&negative), Err(TokenError::Expired));
        // and a user id that is not one is refused (101)
        for sub in ["alice,bob", "a b", &"u".repeat(255)] {
            let token = signer
                .sign(&serde_json::json!({"sub": sub, "exp": unix_now() + 60}))
                .unwrap();
            let refused = hs().verify(&token);
            assert!(
                matches!(refused, Err(TokenError::BadClaim(_))),
                "{sub}: {refused:?}"
            );
            assert_eq!(refused.unwrap_err().code(), ErrorCode::Unauthorized);
        }

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
        assert!(
            TokenSigner::new(JwtAlgorithm::HS256, b"short").is_err(),
            "minting too"
        );
        assert!(TokenVerifier::new(JwtAlgorithm::HS256, &[b'x'; 31], Duration::ZERO).is_err());
        assert!(TokenVerifier::new(JwtAlgorithm::RS256, b"not a pem", Duration::ZERO).is_err());
        assert!(TokenVerifier::new(JwtAlgorithm::ES256, RSA_PUBLIC, Duration::ZERO).is_err());
    }

    #[test]
    fn permissions() {
        let c = Claims {
            sub: UserId::parse("alice").unwrap(),
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

    const RSA2_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa2_private.pem");

    fn signer(private: &[u8], alg: JwtAlgorithm, kid: &str) -> TokenSigner {
        TokenSigner::new(alg, private).unwrap().with_key_id(kid)
    }

    /// Writes a JWKS file of these signers' public keys.
    fn write_jwks(path: &std::path::Path, signers: &[&TokenSigner]) {
        let keys: Vec<_> = signers.iter().map(|s| s.public_jwk().unwrap()).collect();
        std::fs::write(
            path,
            serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap(),
        )
        .unwrap();
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("herald-{name}-{:016x}.json", rand::random::<u64>()))
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid_and_only_of_the_pinned_algorithm() {
        let k1 = signer(RSA_PRIVATE, JwtAlgorithm::RS256, "k1");
        let e1 = signer(EC_PRIVATE, JwtAlgorithm::ES256, "e1");
        let path = temp_path("jwks");
        write_jwks(&path, &[&k1, &e1]);
        let verifier =
            TokenVerifier::from_jwks_file(JwtAlgorithm::RS256, &path, Duration::ZERO).unwrap();
        assert_eq!(
            verifier.verify(&k1.sign(&claims(60)).unwrap()).unwrap().sub,
            "alice"
        );
        // one usable key: a token without `kid` uses it
        let anonymous = TokenSigner::new(JwtAlgorithm::RS256, RSA_PRIVATE).unwrap();
        assert!(
            verifier
                .verify(&anonymous.sign(&claims(60)).unwrap())
                .is_ok()
        );
        // the EC key is no RS256 key, whatever kid a token names
        let wrong = signer(RSA2_PRIVATE, JwtAlgorithm::RS256, "e1");
        assert_eq!(
            verifier.verify(&wrong.sign(&claims(60)).unwrap()),
            Err(TokenError::UnknownKey("e1".into()))
        );
        // another key claiming to be k1: its signature does not verify
        let forged = signer(RSA2_PRIVATE, JwtAlgorithm::RS256, "k1");
        assert_eq!(
            verifier.verify(&forged.sign(&claims(60)).unwrap()),
            Err(TokenError::BadSignature)
        );
        // expiry and claims are checked as with one key
        assert_eq!(
            verifier.verify(&k1.sign(&claims(-60)).unwrap()),
            Err(TokenError::Expired)
        );
        // a file without an RS256 key is refused at start
        let ec_only = temp_path("jwks-ec");
        write_jwks(&ec_only, &[&e1]);
        let refused = TokenVerifier::from_jwks_file(JwtAlgorithm::RS256, &ec_only, Duration::ZERO);
        assert!(refused.is_err());
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(ec_only);
    }

    #[test]
    fn a_rotated_key_is_taken_from_the_changed_file_without_restart() {
        let k1 = signer(RSA_PRIVATE, JwtAlgorithm::RS256, "k1");
        let k2 = signer(RSA2_PRIVATE, JwtAlgorithm::RS256, "k2");
        let path = temp_path("jwks-rotation");
        write_jwks(&path, &[&k1]);
        let verifier =
            TokenVerifier::from_jwks_file(JwtAlgorithm::RS256, &path, Duration::ZERO).unwrap();
        let new_token = k2.sign(&claims(60)).unwrap();
        assert_eq!(
            verifier.verify(&new_token),
            Err(TokenError::UnknownKey("k2".into()))
        );
        // the provider publishes k2 next to k1
        write_jwks(&path, &[&k1, &k2]);
        assert_eq!(verifier.verify(&new_token).unwrap().sub, "alice");
        assert!(verifier.verify(&k1.sign(&claims(60)).unwrap()).is_ok());
        // two keys now: a token must say which
        let anonymous = TokenSigner::new(JwtAlgorithm::RS256, RSA_PRIVATE).unwrap();
        assert_eq!(
            verifier.verify(&anonymous.sign(&claims(60)).unwrap()),
            Err(TokenError::MissingKeyId)
        );
        // a broken file keeps the keys already loaded
        std::fs::write(&path, b"{not json").unwrap();
        let k3 = signer(RSA2_PRIVATE, JwtAlgorithm::RS256, "k3");
        assert_eq!(
            verifier.verify(&k3.sign(&claims(60)).unwrap()),
            Err(TokenError::UnknownKey("k3".into()))
        );
        assert!(verifier.verify(&new_token).is_ok());
        let _ = std::fs::remove_file(path);
    }
}
