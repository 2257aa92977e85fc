//! argon2id hashes computed in working memory the server keeps and reuses. Each hash needs
//! about 19 MiB; allocated afresh for every one, the allocator kept the freed blocks on the
//! blocking threads that ran them, so a burst of registrations left the process hundreds of
//! MiB larger for good. Here each hashing slot's memory is allocated once and handed from one
//! hash to the next: the server holds at most a slot's worth per slot, whatever comes.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::Mutex;

/// Why a hash could not be computed (never a wrong password: that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
#[error("password hashing: {0}")]
pub struct HashError(String);

/// The working memory of the hashes that are not running, ready for the next ones.
#[derive(Default)]
pub struct HashMemory {
    free: Mutex<Vec<Vec<Block>>>,
}

impl HashMemory {
    /// Memory for a hash of `params`: a kept one when there is one.
    fn take(&self, params: &Params) -> Vec<Block> {
        let kept = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut blocks = kept.unwrap_or_default();
        // A kept buffer is only ever the default size; another size (a hash stored with other
        // parameters) resizes it once, then it is not kept.
        blocks.resize(params.block_count(), Block::new());
        blocks
    }

    /// Keeps `blocks` for the next hash, when they are the default size.
    fn give_back(&self, blocks: Vec<Block>) {
        if blocks.len() == Params::DEFAULT.block_count() {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(blocks);
        }
    }

    /// Memory kept now, in bytes.
    pub fn kept_bytes(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.iter().map(|b| b.len() * Block::SIZE).sum()
    }

    /// The hash of `password` with `salt` under `params`, into an output of `len` bytes.
    fn output(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        len: usize,
    ) -> Result<Output, HashError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut blocks = self.take(params);
        let output = Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(password, salt, out, &mut blocks[..])
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .map_err(|e| HashError(e.to_string()));
        self.give_back(blocks);
        output
    }

    /// `password` hashed with argon2id (the crate's default parameters) and `salt`, as the
    /// PHC string that is stored.
    pub fn hash(&self, password: &[u8], salt: &SaltString) -> Result<String, HashError> {
        let params = Params::DEFAULT;
        let salt = salt.as_salt();
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError(e.to_string()))?;
        let output = self.output(&params, password, salt_bytes, Params::DEFAULT_OUTPUT_LEN)?;
        let hash = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: (&params)
                .try_into()
                .map_err(|e: argon2::password_hash::Error| HashError(e.to_string()))?,
            salt: Some(salt),
            hash: Some(output),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches `stored` (a PHC string of argon2id); a string that is not
    /// one matches nothing.
    pub fn verify(&self, password: &[u8], stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let argon2id = parsed.algorithm == argon2::ARGON2ID_IDENT
            && parsed
                .version
                .is_none_or(|v| v == u32::from(Version::V0x13));
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        // `Output`'s comparison takes the same time wherever the outputs differ.
        argon2id
            && self
                .output(&params, password, salt_bytes, expected.len())
                .is_ok_and(|computed| computed == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn salt() -> SaltString {
        SaltString::encode_b64(b"sixteen byte salt").unwrap()
    }

    #[test]
    fn hashes_are_argon2s_own_and_verify_both_ways() {
        let memory = HashMemory::default();
        let ours = memory.hash(b"correct horse", &salt()).unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt())
            .unwrap()
            .to_string();
        assert_eq!(ours, theirs, "the same PHC string as argon2's own hasher");
        assert!(memory.verify(b"correct horse", &theirs));
        assert!(!memory.verify(b"wrong horse", &theirs));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(!memory.verify(b"correct horse", "not a hash"));
    }

    #[test]
    fn the_working_memory_is_kept_and_reused() {
        let memory = HashMemory::default();
        let default_bytes = Params::DEFAULT.block_count() * Block::SIZE;
        memory.hash(b"correct horse", &salt()).unwrap();
        memory.hash(b"correct horse", &salt()).unwrap();
        assert_eq!(memory.kept_bytes(), default_bytes, "one buffer, reused");
        // A hash stored with other parameters is verified in memory of its own, not kept.
        let small = Params::new(1024, 1, 1, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, small)
            .hash_password(b"correct horse", &salt())
            .unwrap()
            .to_string();
        assert!(memory.verify(b"correct horse", &stored));
        assert_eq!(memory.kept_bytes(), 0, "the resized buffer was let go");
    }
}
