//! Who is calling: HS256 JWTs signed with the instance's key, and the key file itself.
//!
//! A token's claims are `sub` (a person's UUID, or a service name with scope `system`),
//! `district` (the tenant), `exp`, and an optional `scope`. [`Caller`] is the extractor
//! handlers take: every request it admits is bound to one district and one actor.

use crate::problem::ApiError;
use crate::state::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use homeroom_domain::{Actor, DistrictId, IdError, PersonId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The scope that makes a token's subject a service rather than a person.
pub const SYSTEM_SCOPE: &str = "system";
/// Bytes of randomness in a key the instance creates.
pub const KEY_BYTES: usize = 32;

/// The claims of a Homeroom token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The acting person's UUID, or a service name (with scope `system`).
    pub sub: String,
    /// The tenant every request of the token is scoped to.
    pub district: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// `system` for SIS sync and delivery workers (space-separated scopes are accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// Claims for `subject` in `district`, valid for `ttl` from now.
    pub fn new(district: &DistrictId, subject: &str, system: bool, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            sub: subject.to_owned(),
            district: district.as_str().to_owned(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            scope: system.then(|| SYSTEM_SCOPE.to_owned()),
        }
    }

    fn is_system(&self) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|s| s == SYSTEM_SCOPE))
    }
}

/// The identity a verified token grants: one district, one actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub district: DistrictId,
    /// The acting person or service.
    pub actor: Actor,
    /// When the token runs out (`exp`): a long-lived answer (the event stream) ends
    /// then, so a revoked or expired identity does not keep listening.
    pub expires_at: Option<SystemTime>,
}

impl Caller {
    /// The identity `claims` grant, checked.
    ///
    /// # Errors
    /// [`AuthError`] when the district is not a district id, or `sub` is not a UUID
    /// without scope `system`.
    pub fn from_claims(claims: &Claims) -> Result<Self, AuthError> {
        let district = DistrictId::parse(&claims.district).map_err(AuthError::BadDistrict)?;
        let actor = if claims.is_system() {
            if claims.sub.trim().is_empty() {
                return Err(AuthError::BadSubject {
                    sub: claims.sub.clone(),
                });
            }
            Actor::System(claims.sub.clone())
        } else {
            let id = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::BadSubject {
                sub: claims.sub.clone(),
            })?;
            Actor::Person(PersonId::new(id))
        };
        Ok(Self {
            district,
            actor,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
        })
    }
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("send an Authorization: Bearer <token> header (homeroom token prints one)")]
    Missing,
    /// An `Authorization` header of another scheme.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    /// The token does not verify (signature, expiry, shape).
    #[error("the bearer token is not valid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The `district` claim is not a district id.
    #[error("the token's district claim is not a district id: {0}")]
    BadDistrict(#[source] IdError),
    /// `iat` is later than now (beyond the clock skew allowed): a token from the
    /// future was not issued by a clock this deployment trusts.
    #[error("the bearer token claims to be issued in the future (iat {iat})")]
    IssuedInTheFuture {
        /// The claimed issue time, in seconds since the Unix epoch.
        iat: u64,
    },
    /// `sub` is not a person id and the token has no `system` scope.
    #[error("the token's sub {sub:?} must be a person id (UUID) unless its scope is system")]
    BadSubject {
        /// The subject claimed.
        sub: String,
    },
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("could not sign the token: {0}")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

/// Why the instance's key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold at least 32 bytes as hex.
    #[error("key file {path} must hold at least {KEY_BYTES} bytes as hex digits")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// The OS had no randomness to give.
    #[error("no randomness for a new key: {0}")]
    Random(#[source] getrandom::Error),
}

/// The clock skew allowed between the issuer and this server, for `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// The instance's signing key, ready to sign and verify tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a shared secret (HS256).
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token whose `nbf` is still ahead is not valid yet.
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Loads the key at `path`, creating it (32 random bytes as hex, owner-only
    /// permissions) when there is none. Several processes may race to create it: one
    /// wins, the others read what it wrote.
    ///
    /// # Errors
    /// [`KeyFileError`] when the file cannot be read or written, or holds no key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The owner's only, as the key is (it is usually the data directory).
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
            dir.create(parent).map_err(io)?;
        }
        match create_key_file(path) {
            Ok(secret) => return Ok(Self::from_secret(&secret)),
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(other) => return Err(other),
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let secret = hex::decode(text.trim()).map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
        })?;
        if secret.len() < KEY_BYTES {
            return Err(KeyFileError::Malformed {
                path: path.to_owned(),
            });
        }
        warn_if_readable_by_others(path);
        Ok(Self::from_secret(&secret))
    }

    /// Signs `claims`.
    ///
    /// # Errors
    /// [`SignError`] when the claims cannot be encoded (never for [`Claims`] in practice).
    pub fn issue(&self, claims: &Claims) -> Result<String, SignError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(SignError)
    }

    /// The caller a token names, if it verifies.
    ///
    /// # Errors
    /// [`AuthError`] when the signature, expiry or claims are wrong.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(AuthError::Invalid)?;
        if let Some(iat) = data.claims.iat {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if iat > now.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::IssuedInTheFuture { iat });
            }
        }
        Caller::from_claims(&data.claims)
    }
}

fn create_key_file(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut secret = vec![0u8; KEY_BYTES];
    getrandom::fill(&mut secret).map_err(KeyFileError::Random)?;
    file.write_all(format!("{}\n", hex::encode(&secret)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    tracing::info!(path = %path.display(), "created the instance's token signing key");
    Ok(secret)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the token signing key is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
        let value = header.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer.into());
        }
        Ok(state.auth.verify(token.trim())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn district() -> DistrictId {
        DistrictId::parse("north").unwrap()
    }

    #[test]
    fn a_person_token_names_a_person() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let id = Uuid::now_v7();
        let token = keys
            .issue(&Claims::new(
                &district(),
                &id.to_string(),
                false,
                Duration::from_secs(60),
            ))
            .unwrap();
        let caller = keys.verify(&token).unwrap();
        assert_eq!(caller.district, district());
        assert_eq!(caller.actor, Actor::Person(PersonId::new(id)));
    }

    #[test]
    fn a_system_token_names_a_service() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let token = keys
            .issue(&Claims::new(
                &district(),
                "sis-sync",
                true,
                Duration::from_secs(60),
            ))
            .unwrap();
        assert_eq!(
            keys.verify(&token).unwrap().actor,
            Actor::System("sis-sync".into())
        );
    }

    #[test]
    fn a_service_name_without_system_scope_is_refused() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let token = keys
            .issue(&Claims::new(
                &district(),
                "sis-sync",
                false,
                Duration::from_secs(60),
            ))
            .unwrap();
        assert!(matches!(
            keys.verify(&token),
            Err(AuthError::BadSubject { .. })
        ));
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let mut claims = Claims::new(&district(), "sis", true, Duration::ZERO);
        claims.exp -= 3600;
        assert!(matches!(
            keys.verify(&keys.issue(&claims).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        let other = TokenKeys::from_secret(&[8; 32]);
        let token = other
            .issue(&Claims::new(
                &district(),
                "sis",
                true,
                Duration::from_secs(60),
            ))
            .unwrap();
        assert!(matches!(keys.verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn a_token_not_valid_yet_or_issued_in_the_future_is_refused() {
        #[derive(Serialize)]
        struct WithNbf {
            #[serde(flatten)]
            claims: Claims,
            nbf: u64,
        }
        let keys = TokenKeys::from_secret(&[7; 32]);
        let claims = Claims::new(&district(), "sis", true, Duration::from_secs(7200));
        let now = claims.iat.unwrap();
        let early = WithNbf {
            claims: claims.clone(),
            nbf: now + 3000,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &early, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(AuthError::Invalid(_))));
        let due = WithNbf {
            claims: claims.clone(),
            nbf: now,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &due, &keys.encoding).unwrap();
        assert!(keys.verify(&token).is_ok(), "nbf reached");
        let mut future = claims.clone();
        future.iat = Some(now + 3000);
        assert!(matches!(
            keys.verify(&keys.issue(&future).unwrap()),
            Err(AuthError::IssuedInTheFuture { .. })
        ));
        let mut skewed = claims;
        skewed.iat = Some(now + 10);
        assert!(
            keys.verify(&keys.issue(&skewed).unwrap()).is_ok(),
            "within the skew"
        );
    }

    #[test]
    fn the_key_file_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("jwt.key");
        let first = TokenKeys::load_or_create(&path).unwrap();
        let token = first
            .issue(&Claims::new(
                &district(),
                "sis",
                true,
                Duration::from_secs(60),
            ))
            .unwrap();
        let second = TokenKeys::load_or_create(&path).unwrap();
        assert!(second.verify(&token).is_ok(), "the key is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            TokenKeys::load_or_create(&path),
            Err(KeyFileError::Malformed { .. })
        ));
    }
}
