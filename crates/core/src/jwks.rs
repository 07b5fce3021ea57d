//! Token keys from a JWKS file (`{"keys":[…]}`, what identity providers
//! publish): keys are chosen by the token's `kid`, and the file is read again
//! when it changes, so keys rotate without a restart. Only keys that suit
//! the configured algorithm are used: the algorithm stays pinned by config.

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};

use crate::auth::{JwtAlgorithm, KeyError, TokenError};

/// The keys of one JWKS file, and which version of the file they are.
pub(crate) struct JwksKeys {
    path: PathBuf,
    algorithm: JwtAlgorithm,
    loaded: RwLock<Loaded>,
}

struct Loaded {
    keys: Vec<(Option<String>, DecodingKey)>,
    /// Modification time and length of the file when read.
    version: Option<(SystemTime, u64)>,
}

impl JwksKeys {
    pub(crate) fn open(path: &Path, algorithm: JwtAlgorithm) -> Result<Self, KeyError> {
        let (keys, version) = read(path, algorithm)?;
        Ok(JwksKeys {
            path: path.to_owned(),
            algorithm,
            loaded: RwLock::new(Loaded { keys, version }),
        })
    }

    /// The key for a token naming `kid` (or none: allowed when the file
    /// holds one usable key). An unknown `kid` reads the file again if it
    /// changed: that is how a rotated key arrives.
    pub(crate) fn key(&self, kid: Option<&str>) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.find(kid)? {
            return Ok(key);
        }
        if self.reload_if_changed()
            && let Some(key) = self.find(kid)?
        {
            return Ok(key);
        }
        Err(TokenError::UnknownKey(kid.unwrap_or_default().to_owned()))
    }

    fn find(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, TokenError> {
        let loaded = self.loaded.read();
        match kid {
            Some(kid) => Ok(loaded
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key.clone())),
            None if loaded.keys.len() == 1 => Ok(Some(loaded.keys[0].1.clone())),
            None => Err(TokenError::MissingKeyId),
        }
    }

    /// Reads the file again when its modification time or length changed;
    /// true when new keys were loaded. A file that became unreadable or
    /// invalid keeps the keys already loaded.
    fn reload_if_changed(&self) -> bool {
        let now = version(&self.path);
        {
            let loaded = self.loaded.read();
            if now.is_none() || now == loaded.version {
                return false;
            }
        }
        match read(&self.path, self.algorithm) {
            Ok((keys, version)) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "JWKS file read again");
                *self.loaded.write() = Loaded { keys, version };
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "JWKS file changed but is not usable; keeping the keys I have");
                false
            }
        }
    }
}

fn version(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

type Keys = Vec<(Option<String>, DecodingKey)>;

fn read(
    path: &Path,
    algorithm: JwtAlgorithm,
) -> Result<(Keys, Option<(SystemTime, u64)>), KeyError> {
    let version = version(path);
    let text = std::fs::read(path)
        .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| KeyError(format!("{} is not a JWKS file: {e}", path.display())))?;
    let keys: Keys = set
        .keys
        .iter()
        .filter(|jwk| suits(jwk, algorithm))
        .filter_map(|jwk| match DecodingKey::from_jwk(jwk) {
            Ok(key) => Some((jwk.common.key_id.clone(), key)),
            Err(e) => {
                tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped");
                None
            }
        })
        .collect();
    if keys.is_empty() {
        return Err(KeyError(format!(
            "{} holds no {} signing key",
            path.display(),
            algorithm.name()
        )));
    }
    Ok((keys, version))
}

/// A signing key of the configured algorithm's kind (other keys — for
/// encryption, or of another type — are ignored).
fn suits(jwk: &Jwk, algorithm: JwtAlgorithm) -> bool {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    if let Some(alg) = jwk.common.key_algorithm
        && format!("{alg:?}") != algorithm.name()
    {
        return false;
    }
    match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), JwtAlgorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), JwtAlgorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    }
}
