//! Secrets: random identifiers, digests, password hashes, and the API token format.
//!
//! Passwords are hashed with Argon2id at the `argon2` crate's default cost (19 MiB, two
//! passes: OWASP's recommended minimum); verifying one takes tens of milliseconds, so
//! callers run it on the blocking pool. Session ids and API tokens are 256 random bits,
//! so a plain SHA-256 digest is enough to store them: the store never holds a live
//! secret, and a stolen copy of it signs no one in.
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Why a secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// Argon2 refused (it only does for parameters we never pass).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// `n` random bytes from the system's source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SecretError::Random)?;
    Ok(b)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A random 256-bit secret as 64 hex digits.
pub fn random_token() -> Result<String, SecretError> {
    Ok(hex(&random_bytes::<32>()?))
}

/// The SHA-256 digest of `secret`, as hex: how sessions and tokens are stored.
pub fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// Whether two digests are equal, in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A password readable by people: 20 characters from an alphabet without look-alikes
/// (about 110 bits).
pub fn random_password() -> Result<String, SecretError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<20>()?;
    // 256 is not a multiple of 54: the bias is under 1 %, irrelevant at this length.
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// The Argon2id PHC string of `password`.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for an empty or unreadable
/// hash: an account without a password cannot sign in with one).
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The prefix of every API token, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "vigia_";

/// A new API token: its public id (16 hex digits, what lists and revocation name) and the
/// whole secret the caller keeps (`vigia_<id>_<64 hex>`).
pub fn new_api_token() -> Result<(String, String), SecretError> {
    let id = hex(&random_bytes::<8>()?);
    let secret = format!("{TOKEN_PREFIX}{id}_{}", random_token()?);
    Ok((id, secret))
}

/// The id part of an API token, if `token` has the format.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16
        && secret.len() == 64
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit()))
    .then_some(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("", ""));
        assert!(!verify_password("x", "not a hash"));
        // A new salt every time.
        assert_ne!(h, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn tokens_have_a_recognisable_format_and_a_public_id() {
        let (id, t) = new_api_token().unwrap();
        assert_eq!(token_id(&t), Some(id.as_str()));
        assert_eq!(t.len(), TOKEN_PREFIX.len() + 16 + 1 + 64);
        assert_eq!(token_id("vigia_abc_def"), None);
        assert_eq!(token_id(&t.replace("vigia_", "vigil_")), None);
        assert_ne!(new_api_token().unwrap().1, t);
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same(&digest("x"), &digest("x")));
        assert!(!same(&digest("x"), &digest("y")));
        let p = random_password().unwrap();
        assert_eq!(p.chars().count(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
