//! Self-enrolment: an agent that has only the broker's address and a site's enrolment
//! token asks to join, and gets its device account once an admin (or a rule) approves.
//!
//! The token is `<site>:<secret>`; it is the password of the site's enrolment account on
//! the broker (`vigia-enrol-<site>`), which may only publish
//! `{prefix}/enrol/<site>/+/request` and read `{prefix}/enrol/<site>/+/reply`. Every
//! agent of a site shares that account, so the reply is sealed to the asking agent's
//! X25519 key ([`seal`], std only): the request id is the first 16 bytes of the SHA-256
//! of that key, so nobody can ask again under another agent's id with a key of their
//! own, and only the holder of the private key can read the device password.
use core::fmt;

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::device::DeviceId;
use crate::payload::{Dmi, Millis};

/// Longest site name, in bytes.
pub const MAX_SITE: usize = 32;
/// A request id: 32 lowercase hex digits.
pub const REQUEST_ID_LEN: usize = 32;
/// The enrolment account of a site is this prefix and the site.
pub const ENROL_USER_PREFIX: &str = "vigia-enrol-";

/// Whether `s` is a site name: 1 to 32 lowercase ASCII letters, digits and '-', not
/// starting with '-'. The site is a topic level and part of a broker user name.
pub fn site_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SITE
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a request id (32 lowercase hex digits).
pub fn request_id_ok(s: &str) -> bool {
    s.len() == REQUEST_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a token was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No ':' between the site and the secret.
    Shape,
    /// The site part is not a site name.
    Site,
    /// The secret is shorter than 16 or longer than 64 characters, or not printable ASCII.
    Secret,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shape => "an enrolment token is <site>:<secret>",
            Self::Site => "the token's site is not a site name (lowercase letters, digits, '-')",
            Self::Secret => "the token's secret must be 16 to 64 printable characters",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TokenError {}

/// A site's enrolment token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The site.
    pub site: String<MAX_SITE>,
    /// The secret: the enrolment account's broker password.
    pub secret: String<64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("site", &self.site)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Token {
    /// Reads `<site>:<secret>`.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let (site, secret) = s.trim().split_once(':').ok_or(TokenError::Shape)?;
        if !site_ok(site) {
            return Err(TokenError::Site);
        }
        if secret.len() < 16 || secret.len() > 64 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Secret);
        }
        let mut t = Token {
            site: String::new(),
            secret: String::new(),
        };
        // Both bounded by the checks above.
        let _ = t.site.push_str(site);
        let _ = t.secret.push_str(secret);
        Ok(t)
    }

    /// The site's enrolment account on the broker.
    pub fn username(&self) -> String<{ MAX_SITE + 12 }> {
        enrol_user(&self.site)
    }
}

/// The enrolment account of `site`.
pub fn enrol_user(site: &str) -> String<{ MAX_SITE + 12 }> {
    let mut u = String::new();
    let _ = u.push_str(ENROL_USER_PREFIX);
    let _ = u.push_str(site);
    u
}

/// An agent asking to join (`enrol/<site>/<request>/request`, QoS 1, not retained). It
/// is sent again on every connection until a reply comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// Protocol major version.
    pub v: u8,
    /// The agent's X25519 public key, 64 hex digits; the request id is derived from it.
    pub key: String<64>,
    /// The device id the agent will use (its config's, or its host name's).
    pub device: DeviceId,
    /// When this was sent.
    pub ts: Millis,
    /// `vigia-agent` version.
    pub agent_version: String<32>,
    /// Host name.
    pub hostname: String<64>,
    /// Operating system name and version.
    pub os: String<96>,
    /// CPU architecture.
    pub arch: String<16>,
    /// Vendor, model and serial from DMI, where readable: what an admin checks, and what
    /// a rule approving known serials matches.
    #[serde(default)]
    pub dmi: Dmi,
    /// Tags from the agent config.
    #[serde(default)]
    pub tags: heapless::Vec<String<32>, 8>,
}

/// The collector's answer (`enrol/<site>/<request>/reply`, QoS 1, retained so that an
/// agent that was away when it was decided finds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolReply {
    /// Protocol major version.
    pub v: u8,
    /// When it was decided.
    pub ts: Millis,
    /// The decision.
    #[serde(flatten)]
    pub state: EnrolState,
}

/// Where a request stands.
// One per reply, decoded and dropped at once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EnrolState {
    /// Seen; waiting for an admin.
    Pending,
    /// Approved: the device's credentials sealed to the agent's key (hex, see [`seal`]).
    Approved {
        /// `seal(key, Credentials as JSON)`.
        sealed: String<1024>,
    },
    /// Refused by an admin, with the reason.
    Refused {
        /// Why.
        reason: String<200>,
    },
    /// The device was enrolled and has since been revoked.
    Revoked,
}

/// What an approval seals for the agent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The device id (and broker user name).
    pub device: DeviceId,
    /// The broker password.
    pub password: String<64>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("device", &self.device)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Sealing to an agent's key: X25519 with a fresh key per message, HKDF-SHA256 over
/// both public keys, ChaCha20-Poly1305 (ring). The output is hex of the sender's public
/// key followed by the ciphertext and its tag.
#[cfg(feature = "std")]
pub mod seal {
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt;

    use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    use ring::rand::{SecureRandom, SystemRandom};
    use x25519_dalek::{PublicKey, StaticSecret};

    const INFO: &[u8] = b"vigia enrol v1";

    /// Why sealing or opening failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SealError {
        /// The system random source failed.
        Random,
        /// Not hex, or too short to be sealed.
        Malformed,
        /// Not sealed to this key, or altered.
        Open,
    }

    impl fmt::Display for SealError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Self::Random => "the system random source failed",
                Self::Malformed => "sealed data is not well formed",
                Self::Open => "sealed data is not for this key or was altered",
            })
        }
    }

    impl std::error::Error for SealError {}

    /// An agent's long-lived key pair.
    pub struct AgentKey(StaticSecret);

    impl fmt::Debug for AgentKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "AgentKey({})", self.public_hex())
        }
    }

    fn random32() -> Result<[u8; 32], SealError> {
        let mut b = [0u8; 32];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| SealError::Random)?;
        Ok(b)
    }

    impl AgentKey {
        /// A new key from the system's random source.
        pub fn generate() -> Result<Self, SealError> {
            Ok(Self(StaticSecret::from(random32()?)))
        }
        /// The key kept in `bytes` (see [`AgentKey::secret_bytes`]).
        pub fn from_bytes(bytes: [u8; 32]) -> Self {
            Self(StaticSecret::from(bytes))
        }
        /// The private key, to keep in a file only the agent reads.
        pub fn secret_bytes(&self) -> [u8; 32] {
            self.0.to_bytes()
        }
        /// The public key as 64 hex digits.
        pub fn public_hex(&self) -> String {
            hex(PublicKey::from(&self.0).as_bytes())
        }
        /// The request id of this key.
        pub fn request_id(&self) -> String {
            request_id_of(PublicKey::from(&self.0).as_bytes())
        }
        /// Opens what [`seal`] sealed to this key.
        pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
            let bytes = unhex(sealed).ok_or(SealError::Malformed)?;
            if bytes.len() < 32 + CHACHA20_POLY1305.tag_len() {
                return Err(SealError::Malformed);
            }
            let (eph, rest) = bytes.split_at(32);
            let mut eph_pub = [0u8; 32];
            eph_pub.copy_from_slice(eph);
            let shared = self.0.diffie_hellman(&PublicKey::from(eph_pub));
            let me = PublicKey::from(&self.0);
            let key = derive(shared.as_bytes(), &eph_pub, me.as_bytes())?;
            let mut buf = rest.to_vec();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key([0; 12]),
                    aead::Aad::empty(),
                    &mut buf,
                )
                .map_err(|_| SealError::Open)?;
            Ok(plain.to_vec())
        }
    }

    /// The request id of a public key: hex of the first 16 bytes of its SHA-256.
    pub fn request_id_of(public: &[u8; 32]) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, public);
        hex(&d.as_ref()[..16])
    }

    /// Reads a public key of 64 hex digits.
    pub fn public_from_hex(s: &str) -> Option<[u8; 32]> {
        let b = unhex(s)?;
        <[u8; 32]>::try_from(b.as_slice()).ok()
    }

    fn derive(shared: &[u8], eph: &[u8; 32], agent: &[u8; 32]) -> Result<LessSafeKey, SealError> {
        // An all-zero shared secret means a low-order public key: refuse it.
        if shared.iter().all(|b| *b == 0) {
            return Err(SealError::Open);
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(eph);
        salt[32..].copy_from_slice(agent);
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &salt).extract(shared);
        let okm = prk
            .expand(&[INFO], &CHACHA20_POLY1305)
            .map_err(|_| SealError::Open)?;
        let key = UnboundKey::from(okm);
        Ok(LessSafeKey::new(key))
    }

    /// Seals `plain` to the agent whose public key is `agent`. A fresh key per message,
    /// so the zero nonce is never reused with one key.
    pub fn seal(agent: &[u8; 32], plain: &[u8]) -> Result<String, SealError> {
        let eph = StaticSecret::from(random32()?);
        let eph_pub = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&PublicKey::from(*agent));
        let key = derive(shared.as_bytes(), eph_pub.as_bytes(), agent)?;
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::empty(),
            &mut buf,
        )
        .map_err(|_| SealError::Random)?;
        let mut out = eph_pub.as_bytes().to_vec();
        out.extend_from_slice(&buf);
        Ok(hex(&out))
    }

    /// Lowercase hex.
    pub fn hex(bytes: &[u8]) -> String {
        const D: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push(char::from(D[usize::from(b >> 4)]));
            s.push(char::from(D[usize::from(b & 15)]));
        }
        s
    }

    fn unhex(s: &str) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        s.as_bytes()
            .chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_the_agent_key_opens_what_was_sealed_to_it() {
            let agent = AgentKey::generate().unwrap_or_else(|e| panic!("{e}"));
            let other = AgentKey::generate().unwrap_or_else(|e| panic!("{e}"));
            let public = public_from_hex(&agent.public_hex()).unwrap_or_else(|| panic!("hex"));
            let sealed = seal(&public, b"secret").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(agent.open(&sealed), Ok(b"secret".to_vec()));
            assert_eq!(other.open(&sealed), Err(SealError::Open));
            // Each seal is fresh: the same text twice gives two different boxes.
            assert_ne!(seal(&public, b"secret").ok(), Some(sealed.clone()));
            // One flipped bit anywhere is refused.
            let mut bytes = unhex(&sealed).unwrap_or_default();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            assert_eq!(agent.open(&hex(&bytes)), Err(SealError::Open));
            assert_eq!(agent.open("zz"), Err(SealError::Malformed));
            assert_eq!(agent.open(&sealed[..40]), Err(SealError::Malformed));
        }

        #[test]
        fn a_kept_key_is_the_same_key_and_ids_follow_keys() {
            let k = AgentKey::generate().unwrap_or_else(|e| panic!("{e}"));
            let again = AgentKey::from_bytes(k.secret_bytes());
            assert_eq!(k.public_hex(), again.public_hex());
            assert_eq!(k.request_id(), again.request_id());
            assert!(crate::enrol::request_id_ok(&k.request_id()));
            let other = AgentKey::generate().unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(k.request_id(), other.request_id());
        }

        #[test]
        fn a_low_order_key_is_refused() {
            assert_eq!(seal(&[0u8; 32], b"x"), Err(SealError::Open));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_site_and_secret() {
        let t = Token::parse("madrid-hq:0123456789abcdefXYZ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.site.as_str(), "madrid-hq");
        assert_eq!(t.username().as_str(), "vigia-enrol-madrid-hq");
        assert!(!alloc::format!("{t:?}").contains("0123456789"));
        assert_eq!(Token::parse("madrid").err(), Some(TokenError::Shape));
        assert_eq!(
            Token::parse("Madrid:0123456789abcdef").err(),
            Some(TokenError::Site)
        );
        assert_eq!(
            Token::parse("m/x:0123456789abcdef").err(),
            Some(TokenError::Site)
        );
        assert_eq!(Token::parse("m:short").err(), Some(TokenError::Secret));
        assert_eq!(
            Token::parse("m:0123456789 abcdef").err(),
            Some(TokenError::Secret)
        );
    }

    #[test]
    fn sites_and_request_ids() {
        assert!(site_ok("a") && site_ok("bcn-2"));
        assert!(!site_ok("") && !site_ok("-a") && !site_ok("a+b") && !site_ok("a/b"));
        assert!(!site_ok(&"a".repeat(33)));
        assert!(request_id_ok(&"0a".repeat(16)));
        assert!(!request_id_ok(&"0A".repeat(16)) && !request_id_ok("00"));
    }

    #[test]
    fn replies_round_trip_with_their_state() {
        let r = EnrolReply {
            v: 1,
            ts: 5,
            state: EnrolState::Refused {
                reason: String::try_from("unknown machine").unwrap_or_default(),
            },
        };
        let bytes = crate::encode(&r).unwrap_or_default();
        assert_eq!(
            core::str::from_utf8(&bytes).unwrap_or(""),
            r#"{"v":1,"ts":5,"state":"refused","reason":"unknown machine"}"#
        );
        assert_eq!(crate::decode::<EnrolReply>(&bytes).ok(), Some(r));
    }
}
