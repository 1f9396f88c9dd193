//! Test certificates made by the tests (rcgen), never committed: a CA and
//! the server, client and peer certificates it signs, written as PEM files
//! into a test directory. Each certificate can be made wrong in one way
//! (expired, not yet valid, the wrong extended key usage, another CA).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (EKU serverAuth).
    Server,
    /// TLS client (EKU clientAuth).
    Client,
    /// A member's peer certificate: both.
    Peer,
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From a year ago to a year ahead.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts in a year.
    NotYetValid,
}

/// A certificate authority that writes what it signs into `dir`.
pub struct Ca {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub cert: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate in `<dir>/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            issuer,
            cert,
        }
    }

    /// Signs a certificate `<stem>.pem` / `<stem>-key.pem` for 127.0.0.1
    /// and localhost with Common Name `cn` (none when `None`).
    pub fn issue(
        &self,
        stem: &str,
        cn: Option<&str>,
        usage: Usage,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let now = time_now();
        let day = std::time::Duration::from_secs(86_400);
        let (from, to) = match validity {
            Validity::Current => (now - 365 * day, now + 365 * day),
            Validity::Expired => (now - 30 * day, now - day),
            Validity::NotYetValid => (now + 365 * day, now + 730 * day),
        };
        params.not_before = from.into();
        params.not_after = to.into();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn time_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
