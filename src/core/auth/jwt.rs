//! `--auth-token jwt,…`: tokens signed with a key instead of registered
//! through Raft (etcd's `jwt.go`). Claims `username`, `revision` (the auth
//! revision at login: any change of users or roles makes older tokens fail
//! with "revision of auth store is old", as in etcd) and `exp`. Stateless:
//! any member with the public key verifies them.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::core::errors::EtcdError;

/// etcd's JWT options (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// The public key (PEM), or for HS*, the secret.
    pub pub_key: Option<PathBuf>,
    /// The private key (PEM), or for HS*, the secret; without it the
    /// member only verifies.
    pub priv_key: Option<PathBuf>,
    /// RS256/384/512, PS256/384/512, ES256/384, HS256/384/512.
    pub sign_method: String,
    /// Token lifetime (default 5 minutes).
    pub ttl: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Signs and verifies tokens.
pub struct JwtProvider {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtProvider {
    /// Loads the keys.
    ///
    /// # Errors
    /// One line: an unknown method, a missing or unreadable key.
    pub fn load(o: &JwtOptions) -> Result<Self, String> {
        let algorithm: Algorithm = o
            .sign_method
            .parse()
            .map_err(|_| format!("jwt: unsupported sign-method {:?}", o.sign_method))?;
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| format!("jwt: cannot read {}: {e}", p.display()))
        };
        let key_err = |e: jsonwebtoken::errors::Error| format!("jwt: {e}");
        let (encoding, decoding) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let path = o
                    .priv_key
                    .as_ref()
                    .ok_or("jwt: HS* needs priv-key (the secret)")?;
                let secret = read(path)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let public = o.pub_key.as_ref().ok_or("jwt: pub-key is required")?;
                let encoding = match &o.priv_key {
                    Some(p) => Some(EncodingKey::from_ec_pem(&read(p)?).map_err(key_err)?),
                    None => None,
                };
                (
                    encoding,
                    DecodingKey::from_ec_pem(&read(public)?).map_err(key_err)?,
                )
            }
            _ => {
                let public = o.pub_key.as_ref().ok_or("jwt: pub-key is required")?;
                let encoding = match &o.priv_key {
                    Some(p) => Some(EncodingKey::from_rsa_pem(&read(p)?).map_err(key_err)?),
                    None => None,
                };
                (
                    encoding,
                    DecodingKey::from_rsa_pem(&read(public)?).map_err(key_err)?,
                )
            }
        };
        Ok(Self {
            algorithm,
            encoding,
            decoding,
            ttl: o.ttl,
        })
    }

    /// A token for `user` at auth revision `revision`.
    ///
    /// # Errors
    /// Unknown "auth: token signing attempted with verify-only key" without
    /// a private key (etcd's `ErrVerifyOnly`).
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, EtcdError> {
        let key = self.encoding.as_ref().ok_or(EtcdError::RawAuth(
            "token signing attempted with verify-only key",
        ))?;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + self.ttl.as_secs();
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| EtcdError::Internal(format!("jwt: {e}")))
    }

    /// The user and auth revision of a valid token.
    ///
    /// # Errors
    /// `InvalidAuthToken`: a bad signature or algorithm, expired, claims
    /// missing.
    pub fn verify(&self, token: &str) -> Result<(String, u64), EtcdError> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| EtcdError::InvalidAuthToken)?;
        if data.claims.username.is_empty() {
            return Err(EtcdError::InvalidAuthToken);
        }
        Ok((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_tampered_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let (public, private) = (dir.path().join("pub.pem"), dir.path().join("priv.pem"));
        std::fs::write(&public, key.public_key_pem()).unwrap();
        std::fs::write(&private, key.serialize_pem()).unwrap();
        let mut options = JwtOptions {
            pub_key: Some(public.clone()),
            priv_key: Some(private),
            sign_method: "ES256".into(),
            ttl: Duration::from_secs(60),
        };
        let p = JwtProvider::load(&options).unwrap();
        let token = p.sign("alice", 7).unwrap();
        assert_eq!(token.matches('.').count(), 2);
        assert_eq!(p.verify(&token).unwrap(), ("alice".to_string(), 7));
        let mut tampered = token.clone();
        tampered.insert(token.len() - 3, 'x');
        assert_eq!(p.verify(&tampered), Err(EtcdError::InvalidAuthToken));
        // A verify-only member checks tokens but cannot sign.
        options.priv_key = None;
        let verify_only = JwtProvider::load(&options).unwrap();
        assert!(verify_only.verify(&token).is_ok());
        assert!(verify_only.sign("alice", 7).is_err());
        options.ttl = Duration::ZERO;
        options.priv_key = Some(dir.path().join("priv.pem"));
        let short = JwtProvider::load(&options).unwrap();
        let expired = short.sign("alice", 7).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.verify(&expired), Err(EtcdError::InvalidAuthToken));
        options.sign_method = "XX1".into();
        assert!(JwtProvider::load(&options).is_err());
    }
}
